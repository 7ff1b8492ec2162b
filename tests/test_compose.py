"""compose.yaml cannot run here (no Docker engine); check its structure and that it agrees with the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tutorloop.retrieval.defaults import DEFAULT_QDRANT_PORT, DEFAULT_QDRANT_URL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def _container_ports(service: dict) -> set[int]:
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}


def _gpu_reserved(service: dict) -> bool:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    return any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)


def test_services_exist(services):
    assert {"teacher", "qdrant", "tutorloop"} <= set(services)


def test_teacher_is_vllm_on_a_gpu(services):
    teacher = services["teacher"]
    assert teacher["image"].startswith("vllm/vllm-openai")
    command = [str(a) for a in teacher["command"]]
    assert command[command.index("--served-model-name") + 1] == "teacher"
    assert command[command.index("--port") + 1] == "8000"
    assert "--limit-mm-per-prompt" in command and "--max-model-len" in command
    assert 8000 in _container_ports(teacher)
    assert _gpu_reserved(teacher)
    assert "8000/health" in " ".join(teacher["healthcheck"]["test"])


def test_qdrant_storage_health_and_key(services):
    qdrant = services["qdrant"]
    assert qdrant["image"].startswith("qdrant/qdrant")
    assert DEFAULT_QDRANT_PORT in _container_ports(qdrant)
    assert any(str(v).endswith(":/qdrant/storage") for v in qdrant["volumes"])
    check = " ".join(qdrant["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/6333" in check and "curl" not in check  # the image has no curl
    assert "QDRANT__SERVICE__API_KEY" in qdrant["environment"]


def test_loop_waits_for_both_and_points_at_them(services):
    loop = services["tutorloop"]
    assert loop["build"] in (".", {"context": "."})
    assert (ROOT / "Dockerfile").is_file()
    assert {name: dep["condition"] for name, dep in loop["depends_on"].items()} == {
        "teacher": "service_healthy", "qdrant": "service_healthy"}
    env = loop["environment"]
    qdrant_url = urlparse(env["QDRANT_URL"])
    assert (qdrant_url.hostname, qdrant_url.port) == ("qdrant", DEFAULT_QDRANT_PORT)
    assert urlparse(DEFAULT_QDRANT_URL).port == DEFAULT_QDRANT_PORT
    teacher_url = urlparse(env["OPENAI_BASE_URL"])
    assert (teacher_url.hostname, teacher_url.port, teacher_url.path) == ("teacher", 8000, "/v1")
    assert "QDRANT__SERVICE__API_KEY" in env["QDRANT_API_KEY"]


def test_teacher_port_matches_the_client_default(services):
    if importlib.util.find_spec("tutorloop.agents.teacher") is None:
        pytest.skip("agents/teacher.py (DEFAULT_TEACHER_URL) is not written yet")
    from tutorloop.agents.teacher_config import DEFAULT_TEACHER_URL

    default = urlparse(DEFAULT_TEACHER_URL)
    compose = urlparse(services["tutorloop"]["environment"]["OPENAI_BASE_URL"])
    assert default.port == compose.port == 8000 and default.path == compose.path
