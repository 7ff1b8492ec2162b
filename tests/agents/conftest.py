"""Shared fixtures of the agents tests: the scripted OpenAI-compatible server, failed eval records, images."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

from tutorloop.training.records import EvalRecord


def _load_scripted_openai():
    # pytest runs in importlib mode: sibling modules of a test are not importable by name.
    name = "tutorloop_tests_scripted_openai"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("scripted_openai.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


scripted_openai = _load_scripted_openai()


@pytest.fixture
def scripted():
    """Start ``ScriptedOpenAI(**options)`` servers; all are stopped at the end of the test."""
    servers = []

    def start(**options):
        server = scripted_openai.ScriptedOpenAI(**options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "img").mkdir()
    for i, colour in enumerate(["red", "green", "blue", "yellow"]):
        Image.new("RGB", (16, 16), colour).save(root / "img" / f"{i}.png")
    return root


def failure(i: int, *, question: str | None = None, steps: list[str] | None = None,
            image: str | None = "img/0.png", source: str = "counting") -> EvalRecord:
    return EvalRecord(id=f"val-{i:03d}", source=source, image=image,
                      question=question or f"<image>\nHow many circles are there? (case {i})",
                      reference="3", prediction="2", steps=steps if steps is not None else [], correct=False)


@pytest.fixture
def make_failure():
    """A failed eval record of the student (``make_failure(i, question=..., steps=..., image=...)``)."""
    return failure
