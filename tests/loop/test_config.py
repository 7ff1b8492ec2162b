"""Every shipped config loads and validates; flags override a config file; bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tutorloop.agents.config import IndexConfig, RunConfig, build_config, load_config_file

SHIPPED = sorted((Path(__file__).parents[2] / "agents" / "configs").glob("*.yaml"))
KIND = {"run.yaml": RunConfig, "index.yaml": IndexConfig}  # one config per entry point


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_states_the_defaults(path):
    kind = KIND[path.name]
    config = build_config(path, {}, kind)
    # "every other value here is the default": the file must not drift from the code
    for key, value in load_config_file(path).items():
        field = kind.model_fields[key]
        if field.is_required() or field.default is None or isinstance(value, dict):
            continue  # the user's paths and nested sections
        assert value == field.get_default(call_default_factory=True), f"{path.name}: {key}"
    assert config is not None


def test_a_config_ships_for_every_entry_point():
    assert {p.name for p in SHIPPED} == set(KIND)


def test_index_config_defaults_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("QDRANT_URL", raising=False)
    config = build_config(None, {"pool": "p.jsonl", "clusters": "7"}, IndexConfig)
    assert config.clusters == 7 and config.store is not None and config.quarantine.parent == config.store
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    assert build_config(None, {"pool": "p.jsonl"}, IndexConfig).qdrant_url == "http://qdrant:6333"
    with pytest.raises(ValidationError, match="clusters"):
        build_config(None, {"pool": "p.jsonl", "clusters": "0"}, IndexConfig)


def test_selector_names_come_from_the_registry():
    from tutorloop.agents.selectors import SELECTORS

    base = {"student": "s", "val": "v", "store": "i", "out": "o", "budget": 3}
    assert all(build_config(None, {**base, "selector": name}).selector == name for name in SELECTORS)
    with pytest.raises(ValidationError, match="known: teacher, failures, random"):
        build_config(None, {**base, "selector": "oracle"})


def test_flags_override_the_file_and_nested_sections_merge(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('student = "s"\nval = "v.jsonl"\nstore = "idx"\nout = "o"\nbudget = 10\n'
                    '[rerank]\nperturbation_weight = 0.25\n')
    config = build_config(path, {"budget": 20, "rerank": {"use_clusters": False, "use_perturbation": None}})
    assert config.budget == 20
    assert config.rerank.perturbation_weight == 0.25 and config.rerank.use_clusters is False
    assert config.rerank.use_perturbation is True  # a flag not given (None) leaves the default


def test_rounds_stop_on_the_held_out_loss_and_anchor_unless_the_flags_say_otherwise():
    import importlib

    from tutorloop.agents.cli import COMMANDS, build_parser

    overrides_from = importlib.import_module(COMMANDS["run"]).overrides_from  # only the CLI imports cmd_* by name
    base = ["run", "--student", "s", "--val", "v.jsonl", "--store", "idx", "--budget", "10", "--out", "o"]

    def lora(*flags: str):
        return build_config(None, overrides_from(build_parser("run").parse_args([*base, *flags]))).lora

    assert (lora().early_stop, lora().epochs) == (True, 20)
    assert (lora("--epochs", "6").early_stop, lora("--epochs", "6").epochs) == (True, 6)
    assert (lora("--fixed-epochs").early_stop, lora("--fixed-epochs").epochs) == (False, 3)
    assert lora("--fixed-epochs", "--epochs", "5").epochs == 5
    assert (lora().anchor_weight, lora("--anchor-weight", "1").anchor_weight) == (0.0, 1.0)
    # a file's lora section keeps the loop's defaults for the keys it does not name
    assert build_config(None, {"student": "s", "val": "v", "store": "i", "out": "o", "budget": 1,
                               "lora": {"lr": 1e-3}}).lora.early_stop is True


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
