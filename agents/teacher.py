"""The teacher: diagnoses of the student's failures from any OpenAI-compatible endpoint.

vLLM in production, llama.cpp's server for the CPU demo, OpenAI itself: the request is the same chat
completion, with the failed sample's image (a base64 PNG data URL), the question, the reference, the
student's answer and its numbered steps, and the reply constrained to the JSON schema of `Diagnosis`.
Two structured-output dialects exist: OpenAI/vLLM ``json_schema`` and llama.cpp ``json_object`` +
``schema``; ``auto`` tries the first once and falls back to the second when the server rejects it.

With a skill map of the pool (agents/skills.py) the diagnosis is *grounded*: the prompt lists the map's
skills nearest to the failure and the reply's skills are a JSON-schema enum of those names (plus "none of
these" with free text), so constrained decoding can only name a skill the pool has; a reply outside the
enum is rejected like any invalid one, raw text kept. The same client names the map's clusters
(`TeacherClient.ask`: any structured request, with the same retries, dialect probing and cache).

Throughput comes from many requests in flight (`AsyncOpenAI` and a semaphore). Every request has a
timeout and bounded retries with exponential backoff (timeouts, connection errors, 429/5xx, truncated
or invalid replies are re-asked); a reply that still fails is kept in its `DiagnosisLog` with the raw
text and the reason, and the round goes on with the rest. Valid replies are cached on disk under a
sha256 of the request, so a resumed run does not pay for them twice. The API key is a `SecretStr`,
left out of dumps and reprs, and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from tutorloop.agents.records import (
    Diagnosis,
    DiagnosisLog,
    ErrorType,
    FreeDiagnosis,
    WeightedSkill,
    normalise_skill,
)
from tutorloop.agents.teacher_config import TeacherConfig
from tutorloop.prompts.render import data_tag, render
from tutorloop.retrieval.files import atomic_write_text
from tutorloop.retrieval.images import open_image
from tutorloop.training.records import EvalRecord

Dialect = Literal["json_schema", "json_object"]
DIAGNOSIS_SCHEMA: dict[str, Any] = FreeDiagnosis.model_json_schema()  # a teacher without a skill map
CACHE_FORMAT = 1
NONE_OF_THESE = "none-of-these"  # the grounded enum's way out: the skill is not in the map (free text follows)
MAX_CHOSEN_SKILLS = 3

log = logging.getLogger(__name__)

# The dialect "auto" settled on, per (base_url, model): asked once per process, not once per round.
_RESOLVED_DIALECTS: dict[tuple[str, str], Dialect] = {}
DIALECT_WAIT_S = 10.0  # the most a request waits on another's dialect probe before probing itself


class DiagnoseResult(BaseModel):
    logs: list[DiagnosisLog]
    requested: int
    ok: int
    rejected: int
    cached: int
    http_requests: int = Field(description="chat completions actually sent (retries included)")
    tokens: dict[str, int] = Field(default_factory=dict, description="prompt/completion tokens the server reported")
    seconds: float
    dialect: Dialect | None

    @property
    def diagnoses(self) -> list[Diagnosis]:
        return [row.diagnosis for row in self.logs if row.diagnosis is not None]


class ReplyError(ValueError):
    """A reply that arrived but cannot be used (truncated, not JSON, not a `Diagnosis`)."""


@dataclass(frozen=True)
class StructuredRequest:
    """One chat completion whose reply must match ``schema``; ``parse`` turns the text into the value or
    raises ReplyError. A diagnosis is one; so is the naming of a skill-map cluster."""

    messages: list[dict]
    schema: dict[str, Any]
    parse: Callable[[str], Any]
    name: str = "diagnosis"  # the json_schema dialect's name field


@dataclass
class Reply:
    value: Any = None
    raw: str | None = None  # kept when the reply was rejected
    error: str | None = None
    attempts: int = 0
    cached: bool = False
    transport: bool = False  # given up because the endpoint did not answer, not for what it answered


@dataclass(frozen=True)
class SkillChoice:
    """A skill of the map as a grounded prompt lists it."""

    name: str
    description: str
    category: str = ""


# --- the request ----------------------------------------------------------------------------------


def png_data_url(image_root: Path, image: str) -> str:
    """The image (a file under the root, or bytes in a table) re-encoded as a PNG data URL."""
    with open_image(image_root, image) as opened:
        buffer = io.BytesIO()
        opened.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def numbered_steps(steps: list[str]) -> str:
    if not steps:
        return "(none: the student gave only its final answer)"
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def build_messages(record: EvalRecord, image_root: Path, *, send_images: bool) -> tuple[list[dict], list[str]]:
    """The chat messages for one failure, and warnings (e.g. an image that could not be sent)."""
    warnings: list[str] = []
    image_urls: list[str] = []
    if send_images:
        images = record.images or ([record.image] if record.image else [])
        if not images:
            warnings.append("the sample has no image")
        for image in images:  # a multi-image sample sends all of them, in order
            try:
                image_urls.append(png_data_url(image_root, image))
            except (OSError, ValueError) as error:
                warnings.append(f"image not sent: {error}")
    note = image_note(len(image_urls))
    steps = numbered_steps(record.steps)
    texts = (record.question, record.reference, record.prediction, steps)
    user = render("diagnose_user", image_note=note, tag=data_tag(*texts), question=record.question,
                  reference=record.reference, prediction=record.prediction, steps=steps)
    content: str | list[dict] = user
    if image_urls:  # text-only servers (llama.cpp chat templates) want a plain string
        content = [*({"type": "image_url", "image_url": {"url": url}} for url in image_urls),
                   {"type": "text", "text": user}]
    # The fixed system prompt comes first: the prefix every request shares (vLLM's prefix cache).
    return [{"role": "system", "content": render("diagnose_system")}, {"role": "user", "content": content}], warnings


def build_grounded_messages(record: EvalRecord, image_root: Path, choices: Sequence[SkillChoice], *,
                            send_images: bool) -> tuple[list[dict], list[str]]:
    """The messages of a grounded diagnosis: the failure as in `build_messages`, plus the map's skills."""
    messages, warnings = build_messages(record, image_root, send_images=send_images)
    listed = "\n".join(f"- {c.name}: {c.description}" + (f" ({c.category})" if c.category else "") for c in choices)
    steps = numbered_steps(record.steps)
    texts = (record.question, record.reference, record.prediction, steps, listed)
    content = messages[1]["content"]
    n_images = sum(1 for part in content if part.get("type") == "image_url") if isinstance(content, list) else 0
    user = render("diagnose_map_user", image_note=image_note(n_images), tag=data_tag(*texts), question=record.question,
                  reference=record.reference, prediction=record.prediction, steps=steps, skills=listed,
                  none_of_these=NONE_OF_THESE)
    content = [*content[:-1], {"type": "text", "text": user}] if isinstance(content, list) else user
    return [{"role": "system", "content": render("diagnose_map_system", none_of_these=NONE_OF_THESE)},
            {"role": "user", "content": content}], warnings


def image_note(n: int) -> str:
    return ("The image the question is about is attached." if n == 1
            else f"The {n} images the question is about are attached, in order." if n
            else "No image is attached: judge from the text alone.")


@lru_cache(maxsize=4096)
def _grounded_model(names: tuple[str, ...]) -> type[BaseModel]:
    """The reply model of a grounded diagnosis over ``names``: each chosen skill is one of them or
    NONE_OF_THESE (a pydantic Literal, so the JSON schema says ``enum`` and validation enforces it)."""
    choice = Literal[(*names, NONE_OF_THESE)]  # type: ignore[valid-type]
    strict = ConfigDict(extra="forbid")
    item = create_model("MapSkill", __config__=strict,
                        skill=(choice, Field(description="a skill of the list, or " + NONE_OF_THESE)),
                        # no upper bound: weights are normalised to sum 1, and llama.cpp's grammar does not
                        # enforce a maximum (SmolLM2 replied 2 for a part it judged twice as important)
                        weight=(float, Field(description="its share of the error, 0-1", ge=0)))
    free = FreeDiagnosis.model_fields
    return create_model(
        "GroundedDiagnosis", __config__=strict,
        erroneous_step=(int | None, free["erroneous_step"]),
        error_type=(ErrorType, free["error_type"]),
        missing_skills=(list[item], Field(description="1-3 missing skills from the list, heaviest first",
                                          min_length=1, max_length=MAX_CHOSEN_SKILLS)),
        other_skill=(str | None, Field(description=f"only with {NONE_OF_THESE}: the skill in your words, else null",
                                       max_length=80)),
        explanation=(str, free["explanation"]),
        queries=(free["queries"].annotation, free["queries"]),
    )


def grounded_schema(names: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a grounded diagnosis whose skills are an enum of ``names``."""
    return _grounded_model(tuple(names)).model_json_schema()


def parse_grounded_reply(content: str | None, names: Sequence[str]) -> Diagnosis:
    """A grounded reply into a `Diagnosis`: skills merged by name, weights normalised to sum 1 (equal when
    all are 0), heaviest first. A skill outside ``names`` is a ReplyError naming the allowed ones."""
    data = _json_of(content)
    try:
        reply = _grounded_model(tuple(names)).model_validate(data)
    except ValidationError as error:
        raise ReplyError(f"not a Diagnosis: {_problems(error)}") from error
    weights: dict[str, float] = {}
    for chosen in reply.missing_skills:
        if chosen.skill != NONE_OF_THESE:
            weights[chosen.skill] = weights.get(chosen.skill, 0.0) + chosen.weight
    other = normalise_skill(reply.other_skill or "")
    if not weights and not other:
        raise ReplyError(f"not a Diagnosis: {NONE_OF_THESE} needs other_skill (the skill in the teacher's words)")
    total = sum(weights.values())
    shares = {k: (v / total if total > 0 else 1 / len(weights)) for k, v in weights.items()}
    skills = [WeightedSkill(skill=k, weight=round(v, 4)) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])]
    fields = reply.model_dump(include={"erroneous_step", "error_type", "explanation", "queries"})
    try:
        return Diagnosis(**fields, missing_skill=skills[0].skill if skills else other, skills=skills,
                         other_skill=other or None, grounded=True)
    except ValidationError as error:
        raise ReplyError(f"not a Diagnosis: {_problems(error)}") from error


def response_format(dialect: Dialect, *, strict: bool, schema: dict[str, Any] | None = None,
                    name: str = "diagnosis") -> dict[str, Any]:
    schema = DIAGNOSIS_SCHEMA if schema is None else schema
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}
    return {"type": "json_object", "schema": schema}


def request_key(config: TeacherConfig, messages: list[dict], dialect: Dialect,
                schema: dict[str, Any] | None = None) -> str:
    """sha256 of what determines the reply; not the URL (the demo server gets a new port each run)."""
    schema = DIAGNOSIS_SCHEMA if schema is None else schema
    payload = {"format": CACHE_FORMAT, "model": config.model, "messages": messages, "schema": schema,
               "dialect": dialect, "strict": config.strict, "max_tokens": config.max_tokens,
               "temperature": config.temperature}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- the reply ------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _json_of(content: str | None) -> Any:
    if not content or not content.strip():
        raise ReplyError("empty reply")
    match = _FENCE.match(content)  # unconstrained servers like to fence JSON
    text = match.group(1) if match else content
    try:
        return json.loads(text, strict=False)  # strict=False: a raw newline/tab inside a string is harmless
    except json.JSONDecodeError as error:
        raise ReplyError(f"invalid JSON: {error}") from error


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors())


def parse_reply(content: str | None) -> Diagnosis:
    """A free (map-less) reply into a `Diagnosis`."""
    data = _json_of(content)
    try:
        return Diagnosis.model_validate(FreeDiagnosis.model_validate(data).model_dump())
    except ValidationError as error:
        raise ReplyError(f"not a Diagnosis: {_problems(error)}") from error


def parse_model(content: str | None, model: type[BaseModel], what: str) -> BaseModel:
    """Any reply into ``model`` (e.g. a skill-map cluster's name), or ReplyError."""
    data = _json_of(content)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ReplyError(f"not a {what}: {_problems(error)}") from error


def _check_step(diagnosis: Diagnosis, steps: list[str], warnings: list[str]) -> Diagnosis:
    """A step number outside the student's steps is dropped (the skill and queries stay useful)."""
    step = diagnosis.erroneous_step
    if step is not None and step > len(steps):
        warnings.append(f"erroneous_step {step} dropped: the student gave {len(steps)} step(s)")
        return diagnosis.model_copy(update={"erroneous_step": None})
    return diagnosis


# --- the cache ------------------------------------------------------------------------------------


class ReplyCache:
    """One JSON file per valid reply, written atomically (retrieval/files.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self.path(key)
        try:
            return json.loads(path.read_text())["content"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable teacher cache entry %s: %s", path, error)
            return None

    def put(self, key: str, content: str, model: str, dialect: Dialect) -> None:
        atomic_write_text(self.path(key), json.dumps({"model": model, "dialect": dialect, "content": content}))


# --- the client -----------------------------------------------------------------------------------


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _status_text(error: openai.APIStatusError) -> str:
    body = error.body if isinstance(error.body, str | dict) else error.message
    return f"HTTP {error.status_code}: {str(body)[:300]}"


def _names_format(error: openai.APIStatusError) -> bool:
    text = f"{error.body} {error.message}".lower()
    return "response_format" in text or "json_schema" in text


class TeacherClient:
    """Bounded-concurrency diagnoses against one endpoint; use as ``async with TeacherClient(config)``."""

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.cache = ReplyCache(config.cache_dir) if config.cache_dir else None
        self.http_requests = 0
        self.tokens = {"prompt": 0, "completion": 0}  # as the server reports them: the round's teacher cost
        self._endpoint = (config.base_url, config.model)
        self._client: openai.AsyncOpenAI | None = None
        self._down_since: float | None = None  # when the endpoint stopped answering (None: it answers)

    @property
    def dialect(self) -> Dialect | None:
        if self.config.dialect != "auto":
            return self.config.dialect
        return _RESOLVED_DIALECTS.get(self._endpoint)

    async def __aenter__(self) -> TeacherClient:
        # Our own retry loop decides what to re-ask (invalid JSON too), so the SDK's retries are off.
        self._client = openai.AsyncOpenAI(base_url=self.config.base_url,
                                          api_key=self.config.api_key.get_secret_value(),
                                          timeout=self.config.timeout_s, max_retries=0)
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self._dialect_lock = asyncio.Lock()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def diagnose(self, record: EvalRecord, image_root: Path,
                       choices: Sequence[SkillChoice] | None = None) -> DiagnosisLog:
        """Never raises: whatever goes wrong ends as a rejected row with its reason. With ``choices`` (the
        map's skills nearest to this failure) the diagnosis is grounded: its skills must be among them."""
        row = DiagnosisLog.from_failure(record)
        try:
            request, row.warnings = self._diagnosis_request(record, image_root, choices)
        except Exception as error:  # an odd record must not end the round
            log.exception("teacher: could not build the request for %s", record.id)
            row.error = f"unexpected error: {error!r}"
            return row
        reply = await self.ask(request, label=record.id)
        row.attempts, row.cached, row.error, row.raw = reply.attempts, reply.cached, reply.error, reply.raw
        row.transport = reply.transport
        if reply.value is not None:
            row.diagnosis = _check_step(reply.value, row.steps, row.warnings)
        return row

    def _diagnosis_request(self, record: EvalRecord, image_root: Path,
                           choices: Sequence[SkillChoice] | None) -> tuple[StructuredRequest, list[str]]:
        send = self.config.send_images
        if not choices:
            messages, warnings = build_messages(record, image_root, send_images=send)
            return StructuredRequest(messages, DIAGNOSIS_SCHEMA, parse_reply), warnings
        names = tuple(c.name for c in choices)
        messages, warnings = build_grounded_messages(record, image_root, choices, send_images=send)
        return StructuredRequest(messages, grounded_schema(names), lambda text: parse_grounded_reply(text, names),
                                 name="grounded_diagnosis"), warnings

    async def ask(self, request: StructuredRequest, *, label: str = "request") -> Reply:
        """One structured request: from the cache, or asked with retries. Never raises."""
        reply = Reply()
        async with self._slots:
            try:
                if not self._from_cache(request, reply):
                    await self._ask(request, reply, label)
            except Exception as error:  # a bug or an odd request must not end the round
                log.exception("teacher: unexpected error on %s", label)
                reply.value, reply.error = None, f"unexpected error: {error!r}"
        return reply

    def _from_cache(self, request: StructuredRequest, reply: Reply) -> bool:
        if self.cache is None:
            return False
        dialects: list[Dialect] = [self.dialect] if self.dialect else ["json_schema", "json_object"]
        for dialect in dialects:
            content = self.cache.get(request_key(self.config, request.messages, dialect, request.schema))
            if content is not None:
                try:
                    reply.value = request.parse(content)
                except ReplyError:
                    continue
                reply.cached = True
                return True
        return False

    async def _ask(self, request: StructuredRequest, reply: Reply, label: str) -> None:
        """Bad replies (invalid, truncated) are re-asked ``max_retries`` times; transport failures are re-sent
        while the endpoint has been down for less than ``outage_wait_s`` (a request that fails while the endpoint
        answers ``GET /models`` has a trouble of its own: it gets ``max_retries`` re-sends)."""
        config = self.config
        bad, lost = 0, 0
        own = 0  # transport failures while the endpoint was up: an outage's failures are not the request's own
        vary = False  # set once a reply came back unusable: re-asking it verbatim would repeat it
        while True:
            reply.attempts += 1
            sampling = {"temperature": max(config.temperature, config.retry_temperature), "seed": bad + 1} if vary else {}
            sent_at = time.monotonic()
            try:
                content, finish, dialect = await self._complete(request, sampling)
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as error:
                reply.error = _status_text(error) if isinstance(error, openai.APIStatusError) else \
                    f"{type(error).__name__}: {error}"
                if isinstance(error, openai.APIStatusError) and not _retryable_status(error.status_code):
                    break
                lost += 1
                up = await self._endpoint_up()
                own = own + 1 if up else 0
                if own > config.max_retries if up else self._outage_over():
                    reply.transport = True
                    break
                await asyncio.sleep(min(15.0, config.backoff_s * 2 ** min(lost - 1, 8)) * random.uniform(0.5, 1.5))
                continue
            self._answered(sent_at)
            reply.raw = content
            try:
                if finish == "length":
                    raise ReplyError(f"truncated: finish_reason 'length' at max_tokens={config.max_tokens}")
                value = request.parse(content)
            except ReplyError as error:
                reply.error, vary, bad = str(error), True, bad + 1
                if bad > config.max_retries:
                    break
                log.info("teacher: %s reply %d unusable (%s); asking again", label, bad, reply.error)
                await asyncio.sleep(config.backoff_s * 2 ** (bad - 1))
                continue
            reply.value, reply.error, reply.raw = value, None, None
            if self.cache is not None:
                key = request_key(config, request.messages, dialect, request.schema)
                self.cache.put(key, content, config.model, dialect)
            return
        log.warning("teacher: rejected %s after %d attempt(s): %s", label, reply.attempts, reply.error)

    def _answered(self, sent_at: float) -> None:
        """A reply to a request sent at ``sent_at``: the endpoint answers, unless the request went out before the
        outage began (a reply already on its way then says nothing about now)."""
        if self._down_since is not None and sent_at < self._down_since:
            return
        if self._down_since is not None:
            log.warning("teacher: %s answers again after %.0f s", self.config.base_url,
                        time.monotonic() - self._down_since)
        self._down_since = None

    async def _endpoint_up(self) -> bool:
        """After a transport failure: does the endpoint answer ``GET /models``? If so the failure was the
        request's own; if not, an outage begins (said once, with the URL) or goes on."""
        assert self._client is not None
        try:
            await self._client.models.list(timeout=min(10.0, self.config.timeout_s))
        except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError):
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("teacher: %s does not answer; waiting up to %.0f s for it", self.config.base_url,
                            self.config.outage_wait_s)
            return False
        self._answered(time.monotonic())
        return True

    def _outage_over(self) -> bool:
        """The endpoint has been down ``outage_wait_s``: stop re-sending."""
        return self._down_since is not None and time.monotonic() - self._down_since >= self.config.outage_wait_s

    async def _complete(self, request: StructuredRequest, sampling: dict) -> tuple[str, str | None, Dialect]:
        dialect = self.dialect
        if dialect is None:
            # One request finds the dialect out and the others wait for it, but not on a probe that hangs: after
            # DIALECT_WAIT_S a waiting request probes alongside it.
            try:
                await asyncio.wait_for(self._dialect_lock.acquire(), DIALECT_WAIT_S)
            except TimeoutError:
                return await self._probe_dialect(request, sampling)
            try:
                if self.dialect is None:
                    return await self._probe_dialect(request, sampling)
                dialect = self.dialect
            finally:
                self._dialect_lock.release()
        return await self._send(request, dialect, sampling)

    async def _probe_dialect(self, request: StructuredRequest, sampling: dict) -> tuple[str, str | None, Dialect]:
        """Send in ``json_schema``; fall back to ``json_object`` only when the server refuses the format.

        A refusal that names the format (llama.cpp: HTTP 500 "response_format ... json_object") switches
        at once; an error that does not could be transient, so ``json_schema`` is asked once more first.
        """
        try:
            reply = await self._send(request, "json_schema", sampling)
        except openai.APIStatusError as error:
            if not _names_format(error):
                try:
                    reply = await self._send(request, "json_schema", sampling)
                except openai.APIStatusError as again:
                    error = again
                else:
                    _RESOLVED_DIALECTS[self._endpoint] = "json_schema"
                    return reply
            log.info("teacher: %s refused response_format json_schema (%s); trying json_object",
                     self.config.base_url, _status_text(error))
            reply = await self._send(request, "json_object", sampling)
        _RESOLVED_DIALECTS[self._endpoint] = reply[2]
        log.info("teacher: %s speaks the %s dialect", self.config.base_url, reply[2])
        return reply

    async def _send(self, request: StructuredRequest, dialect: Dialect, sampling: dict) -> tuple[str, str | None, Dialect]:
        assert self._client is not None, "use TeacherClient as an async context manager"
        self.http_requests += 1
        fmt = response_format(dialect, strict=self.config.strict, schema=request.schema, name=request.name)
        response = await self._client.chat.completions.create(
            model=self.config.model, messages=request.messages, max_tokens=self.config.max_tokens,
            response_format=fmt,  # type: ignore[arg-type]
            **{"temperature": self.config.temperature, **sampling},
        )
        if response.usage is not None:
            self.tokens["prompt"] += response.usage.prompt_tokens or 0
            self.tokens["completion"] += response.usage.completion_tokens or 0
        if not response.choices:
            return "", None, dialect
        choice = response.choices[0]
        return choice.message.content or "", choice.finish_reason, dialect


# --- entry points ---------------------------------------------------------------------------------


ChoicesFn = Callable[[EvalRecord], Sequence[SkillChoice]]


async def diagnose_failures_async(records: list[EvalRecord], image_root: Path, config: TeacherConfig,
                                  choices: ChoicesFn | None = None) -> DiagnoseResult:
    from tqdm.auto import tqdm

    start = time.perf_counter()
    listed = [choices(record) if choices else None for record in records]  # before the clock of the requests
    async with TeacherClient(config) as client:
        tasks = [asyncio.create_task(client.diagnose(record, Path(image_root), options))
                 for record, options in zip(records, listed, strict=True)]
        with tqdm(total=len(tasks), desc="teacher", unit="diag", disable=not config.progress) as bar:
            for finished in asyncio.as_completed(tasks):
                await finished
                bar.update()
        logs = [task.result() for task in tasks]
        dialect = client.dialect
        http_requests, tokens = client.http_requests, dict(client.tokens)
    ok = sum(row.diagnosis is not None for row in logs)
    result = DiagnoseResult(logs=logs, requested=len(records), ok=ok, rejected=len(logs) - ok,
                            cached=sum(row.cached for row in logs), http_requests=http_requests, tokens=tokens,
                            seconds=round(time.perf_counter() - start, 3), dialect=dialect)
    log.info("teacher: %d diagnosed (%d from cache), %d rejected, %d requests (%d+%d tokens) in %.1f s",
             result.ok, result.cached, result.rejected, result.http_requests, tokens["prompt"],
             tokens["completion"], result.seconds)
    return result


def diagnose_failures(records: list[EvalRecord], image_root: Path, config: TeacherConfig,
                      choices: ChoicesFn | None = None) -> DiagnoseResult:
    """Diagnose every failure; rows come back in the order of ``records`` (sync, for the graph).
    ``choices(record)``: the skill-map skills to ground that failure's diagnosis in (None: free)."""
    return run_sync(diagnose_failures_async(records, image_root, config, choices))


def run_sync(coroutine: Any) -> Any:
    """Run ``coroutine`` to the end from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop in this thread
        return asyncio.run(coroutine)
    # Called from inside an event loop (a notebook, an async caller): run ours in a thread of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
