"""Every shipped config loads and validates; flags override a config file; bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.config import build_config, load_config_file

SHIPPED = sorted((Path(__file__).parents[2] / "agents" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = build_config(path, {})
    assert config.budget > 0 and config.rounds > 0


def test_shipped_configs_exist():
    assert SHIPPED, "agents/configs/ ships at least one example config"


def test_flags_override_the_file_and_nested_sections_merge(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('student = "s"\nval = "v.jsonl"\nstore = "idx"\nout = "o"\nbudget = 10\n'
                    '[rerank]\nperturbation_weight = 0.25\n')
    config = build_config(path, {"budget": 20, "rerank": {"use_clusters": False, "use_perturbation": None}})
    assert config.budget == 20
    assert config.rerank.perturbation_weight == 0.25 and config.rerank.use_clusters is False
    assert config.rerank.use_perturbation is True  # a flag not given (None) leaves the default


def test_budget_is_split_evenly_over_rounds():
    config = build_config(None, {"student": "s", "val": "v", "store": "i", "out": "o", "budget": 10, "rounds": 3})
    assert [config.per_round_budget(n) for n in (1, 2, 3)] == [3, 3, 4]


def test_unknown_keys_and_bad_files_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="budgett"):
        build_config(None, {"student": "s", "val": "v", "store": "i", "out": "o", "budgett": 3})
    bad = tmp_path / "c.ini"
    bad.write_text("x")
    with pytest.raises(ValueError, match="c.ini"):
        load_config_file(bad)
