"""A scripted OpenAI-compatible HTTP server for tests and the teacher throughput benchmark.

It stands in for vLLM / llama.cpp on 127.0.0.1: a real HTTP server (stdlib ``ThreadingHTTPServer``,
one thread per request) serving ``GET /v1/models`` and ``POST /v1/chat/completions``. It is not a
model: replies come from a ``reply`` function of the request (by default a valid diagnosis built from
the question). What it checks is the request *shape* (model, messages, content parts, image data URLs,
``response_format`` in either dialect); a malformed request gets HTTP 400 and is recorded in
``shape_errors``.

Faults are injected per request by a marker: ``faults={"MARKER": ["http500", "ok"]}`` makes the first
request whose user message contains MARKER fail with HTTP 500 and the second succeed (deterministic
under concurrency, unlike a global script). Fault kinds: ``ok``, ``http500``, ``http400``, ``delay``
(sleep ``delay_s`` before answering: a client timeout), ``invalid_json``, ``truncated`` (half the
reply, ``finish_reason: "length"``), ``bad_schema`` (valid JSON, not a Diagnosis).
``reject_json_schema=True`` answers every ``json_schema`` request with HTTP 500, as llama.cpp does.
``latency_s`` delays every answer (the benchmark's stand-in for model time).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tutorloop.demo.openai_http import ChatHandler, ChatServer, serve, shut

FAULT_KINDS = {"ok", "http500", "http400", "delay", "invalid_json", "truncated", "bad_schema"}


def user_text(request: dict) -> str:
    """All text of the user messages of a chat request."""
    parts: list[str] = []
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(parts)


def quoted_block(text: str, name: str) -> str:
    """The content of the DATA block ``name`` of a rendered teacher prompt ("" if absent)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"<<<DATA {name} "):
            tag = line.rsplit(" ", 1)[1].rstrip(">")
            end = lines.index(f"<<<END {tag}>>>", i + 1)
            return "\n".join(lines[i + 1 : end])
    return ""


def default_reply(request: dict) -> str:
    """A valid Diagnosis naming a skill from the question's words (stable for the same question)."""
    question = quoted_block(user_text(request), "question") or "unknown question"
    words = [w.strip("?.,!").lower() for w in question.split()]
    skill = next((w for w in words if w in {"count", "many", "color", "colour", "shape", "left", "right"}), "other")
    return json.dumps({
        "erroneous_step": None, "error_type": "perception", "missing_skill": f"{skill}-questions",
        "explanation": f"The student misread the image for: {question[:80]}",
        "queries": [question[:120], f"{skill} questions about simple shapes"],
    })


def shape_problems(request: Any) -> list[str]:
    """What a vLLM/OpenAI server would refuse in a chat completion request."""
    if not isinstance(request, dict):
        return ["body is not a JSON object"]
    problems = []
    if not isinstance(request.get("model"), str) or not request["model"]:
        problems.append("model missing")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages missing or empty"]
    for i, message in enumerate(messages):
        if message.get("role") not in {"system", "user", "assistant"}:
            problems.append(f"messages[{i}].role invalid")
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    if not str(part.get("image_url", {}).get("url", "")).startswith("data:image/png;base64,"):
                        problems.append(f"messages[{i}]: image_url is not a PNG data URL")
                elif part.get("type") != "text" or not isinstance(part.get("text"), str):
                    problems.append(f"messages[{i}]: unknown content part")
        elif not isinstance(content, str):
            problems.append(f"messages[{i}].content must be a string or a list of parts")
    fmt = request.get("response_format")
    if fmt is not None:
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            if not spec.get("name") or not isinstance(spec.get("schema"), dict):
                problems.append("response_format.json_schema needs name and schema")
        elif fmt.get("type") == "json_object":
            if "schema" in fmt and not isinstance(fmt["schema"], dict):
                problems.append("response_format.schema must be an object")
        else:
            problems.append(f"response_format.type {fmt.get('type')!r} unknown")
    return problems


class ScriptedOpenAI:
    def __init__(
        self,
        *,
        reply: Callable[[dict], str] = default_reply,
        faults: dict[str, list[str]] | None = None,
        reject_json_schema: bool = False,
        latency_s: float = 0.0,
        delay_s: float = 5.0,
        api_key: str | None = None,
        model: str = "teacher",
    ) -> None:
        for kinds in (faults or {}).values():
            unknown = set(kinds) - FAULT_KINDS
            if unknown:
                raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {sorted(FAULT_KINDS)}")
        self.reply = reply
        self.faults = {marker: list(kinds) for marker, kinds in (faults or {}).items()}
        self.reject_json_schema = reject_json_schema
        self.latency_s = latency_s
        self.delay_s = delay_s
        self.api_key = api_key
        self.model = model
        self.requests: list[dict] = []  # every chat completion body received
        self.shape_errors: list[str] = []
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ChatServer | None = None

    # --- lifecycle
    def __enter__(self) -> ScriptedOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, port: int = 0) -> None:
        """Serve on ``port`` (0: a free one); a stopped server restarts on its old port with ``start(port)``."""
        self._server = serve(type("Handler", (_Handler,), {"scripted": self}), port)

    def stop(self) -> None:
        shut(self._server)
        self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    # --- behaviour
    def next_fault(self, text: str) -> str:
        with self._lock:
            for marker, kinds in self.faults.items():
                if marker in text and kinds:
                    return kinds.pop(0)
        return "ok"

    def answer(self, request: dict, auth: str) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(request)
            self.auth_headers.append(auth)
        problems = shape_problems(request)
        if problems:
            with self._lock:
                self.shape_errors.extend(problems)
            return 400, {"error": {"message": "; ".join(problems), "type": "invalid_request_error"}}
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key", "type": "authentication_error"}}
        if self.reject_json_schema and (request.get("response_format") or {}).get("type") == "json_schema":
            # What llama-cpp-python's server does with the OpenAI dialect.
            return 500, {"error": {"message": "response_format type json_schema is not supported", "type": "server_error"}}
        fault = self.next_fault(user_text(request))
        if fault == "delay":
            time.sleep(self.delay_s)
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault == "http500":
            return 500, {"error": {"message": "scripted internal error", "type": "server_error"}}
        if fault == "http400":
            return 400, {"error": {"message": "scripted bad request", "type": "invalid_request_error"}}
        content, finish = self.reply(request), "stop"
        if fault == "invalid_json":
            content = "Sure! Here is my diagnosis: {erroneous_step: one,"
        elif fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "bad_schema":
            content = json.dumps({"error_type": "mystery", "queries": []})
        return 200, completion(request.get("model", self.model), content, finish)


def completion(model: str, content: str, finish: str) -> dict:
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        # Word counts, not a tokenizer's: enough to check that the client adds up what servers report.
        "usage": {"prompt_tokens": 10, "completion_tokens": len(content.split()), "total_tokens": 10 + len(content.split())},
    }


class _Handler(ChatHandler):
    scripted: ScriptedOpenAI

    def model_name(self) -> str:
        return self.scripted.model

    def serving(self) -> bool:
        return self.server is self.scripted._server  # stopped, or restarted since this connection was opened

    def chat(self, request: dict) -> tuple[int, dict]:
        scripted = self.scripted
        with scripted._lock:
            scripted.in_flight += 1
            scripted.max_in_flight = max(scripted.max_in_flight, scripted.in_flight)
        try:
            return scripted.answer(request, self.headers.get("Authorization", ""))
        finally:
            with scripted._lock:
                scripted.in_flight -= 1
