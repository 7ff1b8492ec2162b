"""The oracle teacher: an honest test double of a perfect teacher, behind the OpenAI chat API.

It is a real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, ``GET /v1/models`` and ``POST
/v1/chat/completions``) that the unchanged teacher client talks to, in either JSON dialect. It is not a
model: it reads the world's ground truth, never the image or the student's answer.

- Naming a skill-map cluster (schema ``SkillName``): the majority world skill of the shown samples'
  questions (`demo.targets.skill_of_question`: the pool's phrasings and the targets' own), as a
  kebab-case name, with a description and category.
- A grounded diagnosis (schema ``GroundedDiagnosis``): the failed question's world skill and the pool
  skills that teach it (``Skill.taught_by``: its ``parts``, or itself), each chosen from the request's
  enum when the map has it (equal weights), else "none-of-these" with the skill's name as free text.
- A free diagnosis (schema ``Diagnosis``): the same skill in its own words and the parts' phrasings as
  queries.

It is the upper bound of diagnosis — what the method does with a teacher that is never wrong — and is
labelled "oracle (upper bound)" wherever a benchmark reports it; it is never the product's result.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from tutorloop.demo.openai_http import ChatHandler, ChatServer, serve, shut
from tutorloop.demo.targets import skill_of_question
from tutorloop.demo.world import SKILLS, render_all

LABEL = "oracle (upper bound)"
NONE_OF_THESE = "none-of-these"  # agents/teacher.py's enum way out (demo does not import agents)
CATEGORY = {"count": "counting", "compare": "comparison", "side": "spatial", "vertical": "spatial",
            "side_colour": "spatial", "side_shape": "spatial", "vertical_colour": "spatial",
            "corner_colour": "spatial"}
UNKNOWN = "off-topic-questions"  # what the oracle calls samples no world skill asks (the pool's noise)


def kebab(skill: str) -> str:
    return skill.replace("_", "-")


def data_blocks(text: str) -> dict[str, str]:
    """The DATA blocks of a rendered tutorloop prompt (prompts/*.txt), by name."""
    blocks: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("<<<DATA ") and line.endswith(">>>"):
            name, tag = line[len("<<<DATA "):-3].rsplit(" ", 1)
            end = lines.index(f"<<<END {tag}>>>", i + 1)
            blocks[name] = "\n".join(lines[i + 1 : end])
            i = end
        i += 1
    return blocks


def world_skill(question: str) -> str | None:
    text = question.replace("<image>", " ").strip()
    return skill_of_question(" ".join(text.split()))


def name_cluster(samples_block: str) -> dict:
    questions = [line[len("question: "):] for line in samples_block.splitlines() if line.startswith("question: ")]
    votes = Counter(world_skill(q) for q in questions)
    known = [(n, s) for s, n in votes.items() if s is not None]
    if not known:
        return {"name": UNKNOWN, "description": "questions no skill of the world asks (text-only or ignoring the "
                "image)", "category": "other"}
    _, skill = max(known, key=lambda t: (t[0], t[1]))
    example = render_all(SKILLS[skill].templates[0])[0]
    return {"name": kebab(skill), "description": f"{skill.replace('_', ' ')} questions, such as '{example}'",
            "category": CATEGORY.get(skill, "perception")}


def _enum(schema: dict) -> list[str]:
    """The skill enum of a grounded diagnosis schema (pydantic puts the item model in $defs)."""
    items = schema["properties"]["missing_skills"]["items"]
    if "$ref" in items:
        items = schema["$defs"][items["$ref"].rsplit("/", 1)[1]]
    return list(items["properties"]["skill"]["enum"])


def _queries(parts: tuple[str, ...], question: str) -> list[str]:
    return list(dict.fromkeys([question, *(render_all(SKILLS[p].templates[0])[0] for p in parts)]))[:3]


def diagnose(question: str, schema: dict, grounded: bool) -> dict:
    skill = world_skill(question)
    parts = SKILLS[skill].taught_by if skill else ()
    base = {"erroneous_step": None, "error_type": "perception",
            "explanation": (f"ground truth: a {skill} question, taught by {', '.join(parts)}" if skill
                            else "ground truth: no skill of the world asks this question")}
    if not grounded:
        return {**base, "missing_skill": kebab(parts[0] if len(parts) == 1 else skill) if skill else "unknown",
                "queries": _queries(parts, question) if skill else [question]}
    options = set(_enum(schema))
    chosen = [kebab(p) for p in parts if kebab(p) in options]
    missing = [kebab(p) for p in parts if kebab(p) not in options] or ([] if skill else ["unknown"])
    weights = [{"skill": c, "weight": round(1 / len(parts), 4)} for c in chosen]
    if missing:
        weights.append({"skill": NONE_OF_THESE, "weight": round(len(missing) / max(1, len(parts)), 4)})
    return {**base, "missing_skills": weights[:3], "other_skill": missing[0] if missing else None,
            "queries": _queries(parts, question) if skill else [question]}


def reply_for(request: dict) -> str:
    """The oracle's reply text for a chat completion request of the tutorloop teacher client."""
    fmt = request.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    text = "\n".join(_texts(request))
    blocks = data_blocks(text)
    title = schema.get("title")
    if title == "SkillName":
        return json.dumps(name_cluster(blocks.get("samples", "")))
    return json.dumps(diagnose(blocks.get("question", ""), schema, grounded=title == "GroundedDiagnosis"))


def _texts(request: dict) -> list[str]:
    out = []
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        out += [content] if isinstance(content, str) else [p.get("text", "") for p in content if p.get("type") == "text"]
    return out


class OracleTeacher:
    """``with OracleTeacher() as oracle: TeacherConfig(base_url=oracle.base_url, ...)``."""

    def __init__(self, model: str = "oracle") -> None:
        self.model = model
        self.requests = 0
        self.kinds: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ChatServer | None = None

    def __enter__(self) -> OracleTeacher:
        self._server = serve(type("Handler", (_Handler,), {"oracle": self}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        shut(self._server)
        self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use OracleTeacher as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer(self, request: dict) -> tuple[int, dict]:
        try:
            content = reply_for(request)
        except (KeyError, ValueError, TypeError) as error:
            return 400, {"error": {"message": f"oracle: cannot read the request ({error!r})"}}
        with self._lock:
            self.requests += 1
            self.kinds[(request.get("response_format") or {}).get("type", "none")] += 1
        words = len(content.split())
        return 200, {"id": "chatcmpl-oracle", "object": "chat.completion", "created": int(time.time()),
                     "model": request.get("model", self.model),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words}}


class _Handler(ChatHandler):
    oracle: OracleTeacher

    def model_name(self) -> str:
        return self.oracle.model

    def chat(self, request: dict) -> tuple[int, dict]:
        return self.oracle.answer(request)
