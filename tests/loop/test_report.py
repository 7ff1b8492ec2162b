"""The HTML review report of a tiny real run (scripted teacher on 127.0.0.1): its content, its safety with
hostile text, and — in headless Chromium when installed — that it renders, filters and asks for nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tutorloop.agents.api import run
from tutorloop.agents.cli import main
from tutorloop.agents.records import Diagnosis
from tutorloop.agents.run_dir import DIAGNOSES, SELECTED, RunDir

HOSTILE = ['<script>alert("x")</script>', '<img src=x onerror=alert(1)>', 'javascript:alert(1)']
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def teacher_run(tiny_world, loop_config, scripted_openai, tmp_path_factory) -> Path:
    with scripted_openai.ScriptedOpenAI() as server:
        config = loop_config(tiny_world, tmp_path_factory.mktemp("report") / "run", selector="teacher",
                             teacher={"base_url": server.base_url, "dialect": "json_schema", "progress": False})
        run(config, run_id="report")
    return config.out


@pytest.fixture(scope="module")
def hostile_run(teacher_run, tmp_path_factory) -> Path:
    """The same run with hostile text in a diagnosis, a rejected reply and a selected pool sample."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(teacher_run, out)
    run_dir = RunDir(out)
    rows = run_dir.read(1, DIAGNOSES)
    rows[0].question = " ".join(HOSTILE)
    rows[0].diagnosis = Diagnosis(erroneous_step=None, error_type="perception", missing_skill="x",
                                  explanation=HOSTILE[0], queries=[HOSTILE[1]])
    rows[1].diagnosis, rows[1].error, rows[1].raw = None, "bad_schema: not a Diagnosis", HOSTILE[1] + HOSTILE[2]
    run_dir.write(1, DIAGNOSES, rows)
    selected = run_dir.read(1, SELECTED)
    selected[0].sample.conversations[0].value = HOSTILE[0]
    selected[0].why.reason = HOSTILE[2]
    run_dir.write(1, SELECTED, selected)
    return out


def _data(page: str) -> dict:
    block = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def test_report_holds_every_failure_and_selection_with_images(teacher_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["review", str(teacher_run), "--html", str(out)]) == 0
    page = out.read_text()
    data = _data(page)["runs"][0]
    run_dir = RunDir(teacher_run)
    for round_data in data["rounds"]:
        n = round_data["round"]
        failures = [f["id"] for g in round_data["gaps"] for f in g["failures"]]
        assert sorted(failures) == sorted(r.sample_id for r in run_dir.read(n, DIAGNOSES))
        picked = [s["id"] for g in round_data["gaps"] for s in g["selected"]]
        assert sorted(picked) == sorted(r.sample.id for r in run_dir.read(n, SELECTED))
        assert all(f["status"] in {"fixed", "still failing"} and f["fate"] for g in round_data["gaps"]
                   for f in g["failures"])
    assert [p["round"] for p in data["accuracy"]] == [0, 1, 2]
    thumbs = [f["image"] for r in data["rounds"] for g in r["gaps"] for f in g["failures"] + g["selected"]]
    assert all(t and (tmp_path / t[0]).is_file() and (tmp_path / t[1]).is_file() for t in thumbs)
    assert not re.search(r"https?:|//[a-z]", page.replace("</", "")), "the page names no URL"
    assert all("tied" in s for r in data["rounds"] for g in r["gaps"] for s in g["selected"])
    assert "not the pool's file order" in page, "the tie-break rule is stated"
    legend = re.findall(r'<line [^>]*stroke="(#[0-9a-f]{6})" stroke-width="3"/><text [^>]*fill="\1"', page)
    assert len(legend) >= 2, "each accuracy series has a colour swatch beside its name"
    assert out.stat().st_mode & 0o777 == 0o644


def test_hostile_text_stays_text(hostile_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["review", str(hostile_run), "--html", str(out)]) == 0
    page = out.read_text()
    for text in ("<script>alert", "<img src=x", "onerror=alert(1)>"):
        assert text not in page
    data = json.dumps(_data(page))
    assert all(json.dumps(h)[1:-1] in data for h in HOSTILE), "the hostile text survives as data, escaped"


def test_two_runs_side_by_side_and_the_default_path(teacher_run, hostile_run):
    assert main(["review", str(teacher_run), str(hostile_run), "--html"]) == 0
    page = (teacher_run / f"report-vs-{hostile_run.name}.html").read_text()
    assert [r["name"] for r in _data(page)["runs"]] == [f"A: {teacher_run.name}", f"B: {hostile_run.name}"]
    assert main(["review", str(teacher_run), str(hostile_run)]) == 2  # two runs need --html


@pytest.mark.integration
def test_the_report_renders_filters_and_requests_nothing_in_chromium(hostile_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian's chromium package; .ci/run installs it with apt)")
    out = tmp_path / "report.html"
    assert main(["review", str(hostile_run), "--html", str(out)]) == 0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, dialogs, requests = [], [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri(), wait_until="load")
        page.wait_for_selector(".failure-card")
        all_cards = page.locator(".failure-card").count()
        expected = sum(len(g["failures"]) for r in _data(out.read_text())["runs"][0]["rounds"] for g in r["gaps"])
        assert all_cards == min(expected, all_cards) and all_cards > 0
        assert page.locator("#count").inner_text().endswith(f"{expected} failure(s) match")
        page.select_option("#f-round", "2")
        assert page.locator(".group-head h3").all_inner_texts() and all(
            "round 2" in t for t in page.locator(".group-head h3").all_inner_texts())
        page.select_option("#f-round", "")
        page.select_option("#f-error", "rejected")
        assert page.locator(".failure-card").count() == 1
        assert HOSTILE[1] + HOSTILE[2] in page.locator(".rejected").inner_text()
        page.select_option("#f-error", "")
        first_id = page.locator(".selected-card .sid").first.inner_text()
        page.locator(".selected-card .sid").first.click()
        assert page.locator(".card.hit").count() >= 1 and page.input_value("#f-text") == f"id:{first_id}"
        assert page.locator("text=" + HOSTILE[0]).count() >= 1, "hostile text is shown as text"
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert not errors and not dialogs
    assert all(url.startswith("file://") for url in requests), [u for u in requests if not u.startswith("file://")]
