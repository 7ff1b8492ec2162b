"""A person in the loop: a run with approve stops after the plan with nothing selected or trained; an approval
with a dropped gap selects without that gap; a decided round is never asked again."""

from __future__ import annotations

from tutorloop.agents.api import run
from tutorloop.agents.cli import main
from tutorloop.agents.run_dir import APPROVAL, PLAN, SCORED, SELECTED, RunDir


def test_approve_stops_after_the_plan_then_an_edited_plan_is_bought(tiny_world, loop_config, scripted_openai,
                                                                     tmp_path, capsys):
    server = scripted_openai.ScriptedOpenAI()
    server.start()
    config = loop_config(tiny_world, tmp_path / "run", selector="teacher", rounds=1, approve=True,
                         teacher={"base_url": server.base_url, "dialect": "json_schema", "progress": False})
    try:
        _approve_then_buy(config, capsys)
    finally:
        server.stop()


def _approve_then_buy(config, capsys) -> None:
    run(config, run_id="test-approve")
    run_dir = RunDir(config.out)
    assert run_dir.waiting_for_approval() == 1
    assert run_dir.has(1, SCORED) and not run_dir.has(1, SELECTED) and not run_dir.has_adapter(1)
    gaps = [g.skill for g in run_dir.read(1, PLAN).gaps]
    assert len(gaps) >= 2, "the tiny world's failures make several gaps"

    assert main(["approve", str(config.out), "--drop", gaps[0], "--note", "not this one", "--no-resume"]) == 0
    approval = run_dir.read(1, APPROVAL)
    assert approval.status == "edited" and approval.dropped == [gaps[0]] and approval.note == "not this one"
    assert sum(approval.budgets_after.values()) == sum(approval.budgets_before.values())
    assert main(["approve", str(config.out)]) == 2 and "decided already" in capsys.readouterr().err

    summary = run(config, run_id="test-approve")  # the resume goes on without asking again
    assert summary.stop_reason == "rounds spent (1)"
    picked = run_dir.read(1, SELECTED)
    assert picked and all(row.why.gap != gaps[0] for row in picked)
    assert run_dir.waiting_for_approval() is None


def test_an_unknown_gap_is_refused_with_the_plan_s_gaps(tiny_world, loop_config, tmp_path, capsys):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", rounds=1, approve=True)
    run(config, run_id="test-approve-unknown")
    assert main(["approve", str(config.out), "--drop", "no-such-gap", "--no-resume"]) == 2
    assert "no gap named no-such-gap" in capsys.readouterr().err
    assert not RunDir(config.out).has(1, APPROVAL)
