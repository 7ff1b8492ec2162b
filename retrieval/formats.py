"""The forms pools come in, read into one canonical record and written back in their own form.

Canonical (what `Sample` holds): LLaVA's ``conversations`` of ``{"from": human|gpt|system, "value"}``
turns with one ``<image>`` tag per image, and ``image`` (one path) or ``images`` (several). Read:

- ``llava``: ``{"id", "image": str | [str] | absent, "conversations": [...]}`` (LLaVA-1.5/665K,
  LLaVA-OneVision, ShareGPT4V); ``system`` turns and extra keys in turns are kept.
- ``sharegpt``: LLaMA-Factory's form: ``conversations`` with ``from`` tags (``human``/``user``,
  ``gpt``/``assistant``/``model``, ``system``), an ``images`` list and an optional top-level ``system``.
- ``messages``: the OpenAI/TRL form: ``{"messages": [{"role", "content": str | [{"type": "image"},
  {"type": "text", "text"}]}], "images": [...]}``; LLaMA-Factory's ``messages`` with string content and
  ``<image>`` tags is the same form.

Rules every form shares: an integer id becomes its decimal string (a clash is then a duplicate); the
``<image>`` tags (or image parts) must match the images one to one — none at all are added in front of
the first user turn, as LLaVA does; any other count is rejected (``image_tag_mismatch``).
"""

from __future__ import annotations

import copy
import re

IMAGE_TAG = "<image>"
_TAG = re.compile(r"<image>")
HUMAN = {"human", "user"}
GPT = {"gpt", "assistant", "model", "bot"}
SYSTEM = {"system"}
FORMS = ("llava", "sharegpt", "messages")


class FormatError(ValueError):
    """A record that is JSON but not a pool record of any supported form; ``reason`` is its REASONS code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def detect(record: dict) -> str:
    if "messages" in record and "conversations" not in record:
        return "messages"
    turns = record.get("conversations")
    if "images" in record or "system" in record or (
            isinstance(turns, list) and any(isinstance(t, dict) and t.get("from") in {"user", "assistant"} for t in turns)):
        return "sharegpt"
    return "llava"


def to_canonical(record: dict) -> dict:
    """Any supported form -> the canonical LLaVA dict with ``form`` set; raises FormatError."""
    if not isinstance(record, dict):
        raise FormatError("invalid_record", f"a record must be a JSON object, got {type(record).__name__}")
    if record.get("form") in FORMS and "conversations" in record and "messages" not in record:
        return record  # already canonical (read back from the index or a run directory)
    form = detect(record)
    out = {k: v for k, v in record.items() if k not in {"messages", "conversations", "images", "image", "system"}}
    sample_id = out.get("id")
    if isinstance(sample_id, int) and not isinstance(sample_id, bool):
        out["id"] = str(sample_id)
    elif sample_id is not None and not isinstance(sample_id, str):
        raise FormatError("invalid_record", f"id must be a string or an integer, got {type(sample_id).__name__}")
    images = _images(record)
    if form == "messages":
        turns = _from_messages(record.get("messages"), len(images))
    else:
        turns = _from_conversations(record.get("conversations"), record.get("system"))
        turns = _match_tags(turns, len(images))
    out["conversations"] = turns
    if images:
        out["image"] = images[0] if len(images) == 1 and form == "llava" and isinstance(record.get("image"), str) \
            else images
    out["form"] = form
    return out


def _images(record: dict) -> list[str]:
    value = record.get("images", record.get("image"))
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise FormatError("invalid_record", "image/images must be a path or a list of paths")
    return list(values)


def _speaker(tag: object) -> str:
    if tag in HUMAN:
        return "human"
    if tag in GPT:
        return "gpt"
    if tag in SYSTEM:
        return "system"
    raise FormatError("invalid_record", f"unknown speaker {tag!r} in 'from'/'role' (human/user, gpt/assistant, system)")


def _from_conversations(turns: object, system: object) -> list[dict]:
    if not isinstance(turns, list):
        raise FormatError("invalid_record", "conversations must be a list of turns")
    out = [{"from": "system", "value": system}] if isinstance(system, str) and system else []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise FormatError("invalid_record", "every turn needs a 'from' and a text 'value'")
        out.append({**turn, "from": _speaker(turn.get("from"))})
    return out


def _from_messages(messages: object, n_images: int) -> list[dict]:
    if not isinstance(messages, list):
        raise FormatError("invalid_record", "messages must be a list")
    out, parts_seen = [], 0
    for message in messages:
        if not isinstance(message, dict):
            raise FormatError("invalid_record", "every message must be an object with role and content")
        content = message.get("content")
        if isinstance(content, str):
            text = content
            parts_seen += len(_TAG.findall(content))
        elif isinstance(content, list):
            pieces = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in {"image", "image_url"}:
                    pieces.append(IMAGE_TAG)
                    parts_seen += 1
                elif kind == "text" and isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                else:
                    raise FormatError("invalid_record", f"unsupported content part {part!r:.80}")
            text = "\n".join(pieces)
        else:
            raise FormatError("invalid_record", "message content must be text or a list of parts")
        out.append({"from": _speaker(message.get("role")), "value": text})
    return _match_tags(out, n_images)


def _match_tags(turns: list[dict], n_images: int) -> list[dict]:
    tags = sum(len(_TAG.findall(t["value"])) for t in turns)
    if tags == n_images:
        return turns
    if tags == 0:  # LLaVA's rule: the images go in front of the first user turn
        first = next((i for i, t in enumerate(turns) if t["from"] == "human"), None)
        if first is None:
            raise FormatError("invalid_record", "no human turn to put the image tags in")
        turns = copy.deepcopy(turns)
        turns[first]["value"] = (IMAGE_TAG + "\n") * n_images + turns[first]["value"]
        return turns
    raise FormatError("image_tag_mismatch", f"{tags} {IMAGE_TAG} tag(s) for {n_images} image(s)")


# --- back to a form ---------------------------------------------------------------------------------


def export(canonical: dict, form: str) -> dict:
    """The canonical record in ``form`` (llava, sharegpt or messages); metadata keys are kept."""
    record = {k: v for k, v in canonical.items() if k not in {"form", "conversations", "image"}}
    turns = canonical["conversations"]
    image = canonical.get("image")
    images = [] if image is None else [image] if isinstance(image, str) else list(image)
    if form == "llava":
        out = {**record, "conversations": turns}
        if image is not None:
            out["image"] = image
        return out
    if form == "sharegpt":
        tags = {"human": "human", "gpt": "gpt", "system": "system"}
        system = [t["value"] for t in turns if t["from"] == "system"]
        out = {**record, "conversations": [{**t, "from": tags[t["from"]]} for t in turns if t["from"] != "system"]}
        if system:
            out["system"] = "\n".join(system)
        if images:
            out["images"] = images
        return out
    if form == "messages":
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        messages = []
        for turn in turns:
            pieces = [p for p in re.split(r"(<image>)", turn["value"]) if p.strip()]
            content = [{"type": "image"} if p == IMAGE_TAG else {"type": "text", "text": p.strip()} for p in pieces]
            messages.append({"role": roles[turn["from"]], "content": content})
        out = {**record, "messages": messages}
        if images:
            out["images"] = images
        return out
    raise ValueError(f"unknown form {form!r}; known: {', '.join(FORMS)}")

