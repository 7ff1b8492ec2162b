"""The teacher: diagnoses of the student's failures from any OpenAI-compatible endpoint.

vLLM in production, llama.cpp's server for the CPU demo, OpenAI itself: the request is the same chat
completion, with the failed sample's image (a base64 PNG data URL), the question, the reference, the
student's answer and its numbered steps, and the reply constrained to the JSON schema of `Diagnosis`.
Two structured-output dialects exist: OpenAI/vLLM ``json_schema`` and llama.cpp ``json_object`` +
``schema``; ``auto`` tries the first once and falls back to the second when the server rejects it.

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
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agents.records import Diagnosis, DiagnosisLog
from prompts.render import data_tag, render
from retrieval.files import atomic_write_text
from retrieval.images import open_image
from training.records import EvalRecord

DEFAULT_TEACHER_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TEACHER_MODEL = "teacher"
Dialect = Literal["json_schema", "json_object"]
DIAGNOSIS_SCHEMA: dict[str, Any] = Diagnosis.model_json_schema()
CACHE_FORMAT = 1

log = logging.getLogger(__name__)

# The dialect "auto" settled on, per (base_url, model): asked once per process, not once per round.
_RESOLVED_DIALECTS: dict[tuple[str, str], Dialect] = {}


def _env_base_url() -> str:
    return os.environ.get("OPENAI_BASE_URL") or DEFAULT_TEACHER_URL


def _env_api_key() -> SecretStr:
    # vLLM and llama.cpp accept any key unless started with one; the client insists on a non-empty one.
    return SecretStr(os.environ.get("OPENAI_API_KEY") or "EMPTY")


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(default_factory=_env_base_url, description="OpenAI-compatible endpoint ($OPENAI_BASE_URL)")
    model: str = Field(DEFAULT_TEACHER_MODEL, description="model name the endpoint serves")
    api_key: SecretStr = Field(default_factory=_env_api_key, exclude=True, repr=False,
                               description="$OPENAI_API_KEY; never stored in run.json nor logged")
    dialect: Literal["json_schema", "json_object", "auto"] = "auto"
    strict: bool = Field(True, description="json_schema 'strict' flag")
    concurrency: int = Field(16, ge=1, description="requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(3, ge=0, description="re-asks after the first attempt")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0)
    retry_temperature: float = Field(0.7, ge=0, description="re-asks after a truncated/invalid reply; "
                                     "at temperature 0 the same request would get the same reply")
    send_images: bool = Field(True, description="False for text-only teachers (the CPU demo teacher)")
    cache_dir: Path | None = Field(None, description="reply cache; None: no cache")
    progress: bool = True

    @field_validator("base_url", mode="before")
    @classmethod
    def _default_url(cls, value: object) -> object:
        return _env_base_url() if value is None else value

    @field_validator("model", mode="before")
    @classmethod
    def _default_model(cls, value: object) -> object:
        return DEFAULT_TEACHER_MODEL if value is None else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _default_key(cls, value: object) -> object:
        return _env_api_key() if value in (None, "") else value


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
    note = ("The image the question is about is attached." if len(image_urls) == 1
            else f"The {len(image_urls)} images the question is about are attached, in order." if image_urls
            else "No image is attached: judge from the text alone.")
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


def response_format(dialect: Dialect, *, strict: bool) -> dict[str, Any]:
    if dialect == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "diagnosis", "schema": DIAGNOSIS_SCHEMA, "strict": strict}}
    return {"type": "json_object", "schema": DIAGNOSIS_SCHEMA}


def request_key(config: TeacherConfig, messages: list[dict], dialect: Dialect) -> str:
    """sha256 of what determines the reply; not the URL (the demo server gets a new port each run)."""
    payload = {"format": CACHE_FORMAT, "model": config.model, "messages": messages, "schema": DIAGNOSIS_SCHEMA,
               "dialect": dialect, "strict": config.strict, "max_tokens": config.max_tokens,
               "temperature": config.temperature}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- the reply ------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_reply(content: str | None) -> Diagnosis:
    if not content or not content.strip():
        raise ReplyError("empty reply")
    match = _FENCE.match(content)  # unconstrained servers like to fence JSON
    text = match.group(1) if match else content
    try:
        data = json.loads(text, strict=False)  # strict=False: a raw newline/tab inside a string is harmless
    except json.JSONDecodeError as error:
        raise ReplyError(f"invalid JSON: {error}") from error
    try:
        return Diagnosis.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors())
        raise ReplyError(f"not a Diagnosis: {problems}") from error


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

    async def diagnose(self, record: EvalRecord, image_root: Path) -> DiagnosisLog:
        """Never raises: whatever goes wrong ends as a rejected row with its reason."""
        row = DiagnosisLog.from_failure(record)
        async with self._slots:
            try:
                messages, row.warnings = build_messages(record, image_root, send_images=self.config.send_images)
                if self._from_cache(row, messages):
                    return row
                await self._ask(row, messages)
            except Exception as error:  # a bug or an odd record must not end the round
                log.exception("teacher: unexpected error on %s", record.id)
                row.error = f"unexpected error: {error!r}"
        return row

    def _from_cache(self, row: DiagnosisLog, messages: list[dict]) -> bool:
        if self.cache is None:
            return False
        dialects: list[Dialect] = [self.dialect] if self.dialect else ["json_schema", "json_object"]
        for dialect in dialects:
            content = self.cache.get(request_key(self.config, messages, dialect))
            if content is not None:
                try:
                    row.diagnosis = _check_step(parse_reply(content), row.steps, row.warnings)
                except ReplyError:
                    continue
                row.cached = True
                return True
        return False

    async def _ask(self, row: DiagnosisLog, messages: list[dict]) -> None:
        config = self.config
        vary = False  # set once a reply came back unusable: re-asking it verbatim would repeat it
        for attempt in range(1, config.max_retries + 2):
            row.attempts = attempt
            sampling = {"temperature": max(config.temperature, config.retry_temperature), "seed": attempt} if vary else {}
            try:
                content, finish, dialect = await self._complete(messages, sampling)
            except (openai.APITimeoutError, openai.APIConnectionError) as error:
                row.error = f"{type(error).__name__}: {error}"
            except openai.APIStatusError as error:
                row.error = _status_text(error)
                if not _retryable_status(error.status_code):
                    break
            else:
                row.raw = content
                try:
                    if finish == "length":
                        raise ReplyError(f"truncated: finish_reason 'length' at max_tokens={config.max_tokens}")
                    diagnosis = parse_reply(content)
                except ReplyError as error:
                    row.error = str(error)
                    vary = True
                else:
                    row.diagnosis = _check_step(diagnosis, row.steps, row.warnings)
                    row.error = row.raw = None
                    if self.cache is not None:
                        self.cache.put(request_key(config, messages, dialect), content, config.model, dialect)
                    return
            if attempt <= config.max_retries:
                log.info("teacher: %s attempt %d failed (%s); retrying", row.sample_id, attempt, row.error)
                await asyncio.sleep(config.backoff_s * 2 ** (attempt - 1))
        log.warning("teacher: rejected %s after %d attempt(s): %s", row.sample_id, row.attempts, row.error)

    async def _complete(self, messages: list[dict], sampling: dict) -> tuple[str, str | None, Dialect]:
        dialect = self.dialect
        if dialect is None:
            async with self._dialect_lock:  # one request finds the dialect out; the others wait for it
                if self.dialect is None:
                    return await self._probe_dialect(messages, sampling)
                dialect = self.dialect
        return await self._send(messages, dialect, sampling)

    async def _probe_dialect(self, messages: list[dict], sampling: dict) -> tuple[str, str | None, Dialect]:
        """Send in ``json_schema``; fall back to ``json_object`` only when the server refuses the format.

        A refusal that names the format (llama.cpp: HTTP 500 "response_format ... json_object") switches
        at once; an error that does not could be transient, so ``json_schema`` is asked once more first.
        """
        try:
            reply = await self._send(messages, "json_schema", sampling)
        except openai.APIStatusError as error:
            if not _names_format(error):
                try:
                    reply = await self._send(messages, "json_schema", sampling)
                except openai.APIStatusError as again:
                    error = again
                else:
                    _RESOLVED_DIALECTS[self._endpoint] = "json_schema"
                    return reply
            log.info("teacher: %s refused response_format json_schema (%s); trying json_object",
                     self.config.base_url, _status_text(error))
            reply = await self._send(messages, "json_object", sampling)
        _RESOLVED_DIALECTS[self._endpoint] = reply[2]
        log.info("teacher: %s speaks the %s dialect", self.config.base_url, reply[2])
        return reply

    async def _send(self, messages: list[dict], dialect: Dialect, sampling: dict) -> tuple[str, str | None, Dialect]:
        assert self._client is not None, "use TeacherClient as an async context manager"
        self.http_requests += 1
        response = await self._client.chat.completions.create(
            model=self.config.model, messages=messages, max_tokens=self.config.max_tokens,
            response_format=response_format(dialect, strict=self.config.strict),  # type: ignore[arg-type]
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


async def diagnose_failures_async(records: list[EvalRecord], image_root: Path, config: TeacherConfig) -> DiagnoseResult:
    from tqdm.auto import tqdm

    start = time.perf_counter()
    async with TeacherClient(config) as client:
        tasks = [asyncio.create_task(client.diagnose(record, Path(image_root))) for record in records]
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


def diagnose_failures(records: list[EvalRecord], image_root: Path, config: TeacherConfig) -> DiagnoseResult:
    """Diagnose every failure; rows come back in the order of ``records`` (sync, for the graph)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop in this thread
        return asyncio.run(diagnose_failures_async(records, image_root, config))
    # Called from inside an event loop (a notebook, an async caller): run ours in a thread of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, diagnose_failures_async(records, image_root, config)).result()
