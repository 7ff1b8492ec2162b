"""A person in the loop: a run with approve stops after the plan with nothing selected or trained; an approval
with a dropped gap selects without that gap; a decided round is never asked again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tutorloop.agents.api import run
from tutorloop.agents.cli import main
from tutorloop.agents.run_dir import APPROVAL, PLAN, PREVIEW, SCORED, SELECTED, RunDir


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
    would_buy = run_dir.read(1, PREVIEW)
    assert [r.sample.id for r in would_buy] == [c.sample_id for c in run_dir.read(1, SCORED) if c.selected]
    gaps = [g.skill for g in run_dir.read(1, PLAN).gaps]
    assert len(gaps) >= 2, "the tiny world's failures make several gaps"
    _waiting_round_renders(config.out)

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

    run_dir = RunDir(config.out)
    plan_file = run_dir.path(1, PLAN)
    written = plan_file.read_text()
    plan_file.write_text(written.replace('"budget": ', '"budget": "lots", "was": ', 1))  # a hand edit gone wrong
    assert main(["approve", str(config.out), "--no-resume"]) == 2
    err = capsys.readouterr().err
    assert str(plan_file) in err and "budget" in err and len(err.strip().splitlines()) == 1
    plan_file.write_text(written)
    gap = run_dir.read(1, PLAN).gaps[0].skill
    assert main(["approve", str(config.out), "--add-query", f"{gap}=what colour is the left one?", "--no-resume"]) == 0
    assert run_dir.read(1, PLAN).gaps[0].queries[-1] == "what colour is the left one?"
    assert run_dir.read(1, APPROVAL).added_queries == {gap: ["what colour is the left one?"]}


def _waiting_round_renders(out: Path) -> None:
    """The report of a waiting round: each gap's preview (what it would buy, with thumbnails) and the commands
    that decide it; rendered in a real browser when there is one."""
    page_path = out / "waiting.html"
    assert main(["review", str(out), "--html", str(page_path)]) == 0
    text = page_path.read_text()
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S)[1])
    gaps = data["runs"][0]["rounds"][0]["gaps"]
    assert all(g["preview"] for g in gaps if g["budget"]) and any(g["selected"] for g in gaps)
    assert all(any("tutorloop approve" in c and "--drop" in c for c in g["approve"]) for g in gaps if g["budget"])
    chromium = Path("/usr/bin/chromium")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    if not chromium.exists():
        return
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_selector(".selected-card")
        assert "would buy" in page.locator(".cols h3").all_inner_texts()[1]
        assert page.locator("code.approve").count() >= 2 and not errors
        browser.close()


def test_a_plan_approved_as_planned_buys_what_it_previewed(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="failures", rounds=1, approve=True)
    run(config, run_id="test-approve-as-planned")
    run_dir = RunDir(config.out)
    previewed = [r.sample.id for r in run_dir.read(1, PREVIEW)]
    assert main(["approve", str(config.out), "--no-resume"]) == 0
    assert run_dir.read(1, APPROVAL).status == "approved"
    run(config, run_id="test-approve-as-planned")
    assert [r.sample.id for r in run_dir.read(1, SELECTED) if r.why.gap != "known"] == previewed
