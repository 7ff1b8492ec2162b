"""How big the HTML review report is and how fast it opens, for a real run and a synthetic large one.

A synthetic run directory is written through agents/run_dir.py: one round with 1,000 failures in 10 gaps
and 10,000 selected samples (20 distinct images), so the page's size and its load time in headless
Chromium (navigation start → the first page of cards rendered) can be measured at the size the review
must stay fast for. A real run directory (``--run``, e.g. the demo's) is measured beside it.

    .venv/bin/python benchmarks/report_load.py --run runs/demo/run-side-colour-teacher
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def synthetic_run(root: Path, *, failures: int = 1000, selected: int = 10000, gaps: int = 10) -> Path:
    """A complete one-round run directory of the given size, written through the run-directory module."""
    from PIL import Image

    from tutorloop.agents.planning import Gap, GapPlan
    from tutorloop.agents.records import (
        Diagnosis,
        DiagnosisLog,
        RoundMetrics,
        RunInfo,
        RunSummary,
        SelectedSample,
    )
    from tutorloop.agents.run_dir import DIAGNOSES, EVALS, METRICS, PLAN, SCORED, SELECTED, RunDir
    from tutorloop.retrieval.records import Sample
    from tutorloop.retrieval.rerank import ScoredCandidate, SelectionWhy
    from tutorloop.training.records import EvalRecord

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(20):
        Image.new("RGB", (64, 64), (12 * i, 255 - 12 * i, 90)).save(images / f"{i}.png")
    run = RunDir(root / "run")
    run.write_info(RunInfo(run_id="synthetic", pool_image_root=str(root), config={
        "selector": "teacher", "budget": selected, "rounds": 1, "seed": 0, "val": str(root / "val.jsonl"),
        "teacher": {"model": "teacher"}, "known_share": 0.0, "student": "synthetic"}))
    val = [EvalRecord(id=f"val-{i:05d}", source=f"skill-{i % gaps}", image=f"images/{i % 20}.png",
                      question=f"question {i} about skill {i % gaps}?", reference="left", prediction="right",
                      steps=["look at the image", "find the shape", "answer"], correct=False) for i in range(failures)]
    run.write(0, EVALS["val"], val)
    run.write(1, EVALS["val"], [r.model_copy(update={"correct": i % 3 == 0}) for i, r in enumerate(val)])
    share = selected // gaps
    plan = GapPlan(budget=selected, gaps=[Gap(skill=f"skill-{g}", n_errors=failures // gaps, budget=share,
                                              queries=[f"query for skill {g}"],
                                              sample_ids=[r.id for r in val if r.source == f"skill-{g}"])
                                          for g in range(gaps)])
    run.write(1, DIAGNOSES, [DiagnosisLog(sample_id=r.id, source=r.source, question=r.question, reference=r.reference,
                                          prediction=r.prediction, steps=r.steps, diagnosis=Diagnosis(
                                              erroneous_step=2, error_type="perception", missing_skill=r.source,
                                              explanation="the student misread the side of the shape",
                                              queries=[f"which side is the shape on ({r.source})"]))
                             for r in val])
    run.write(1, PLAN, plan)
    rows, scored = [], []
    for i in range(selected):
        why = SelectionWhy(gap=f"skill-{i % gaps}", query="q", relevance=0.9, perturbation=1.2, cluster=i % 8,
                           score=1.1, reason=f"gap 'skill-{i % gaps}' via 'q': rank {i // gaps + 1}")
        sample = Sample.model_validate({"id": f"pool-{i:06d}", "image": f"images/{i % 20}.png", "source": "pool",
                                        "conversations": [{"from": "human", "value": f"<image>\npool question {i}"},
                                                          {"from": "gpt", "value": "answer"}]})
        rows.append(SelectedSample(sample=sample, why=why))
        scored.append(ScoredCandidate(sample_id=sample.id, selected=True, **why.model_dump()))
    run.write(1, SCORED, scored)
    run.write(1, SELECTED, rows)
    history = [RoundMetrics(round=0, val_accuracy=0.0), RoundMetrics(round=1, val_accuracy=0.334, selected=selected)]
    for m in history:
        run.write(m.round, METRICS, m)
    run.write_summary(RunSummary.from_history(history, "rounds spent (1)", "teacher", selected))
    return run.root


def load_seconds(page_file: Path, repeats: int = 3) -> list[float]:
    """Seconds from navigation start until the first page of cards is in the DOM, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            page = browser.new_page()
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_selector(".failure-card, .selected-card")
            times.append(page.evaluate("performance.now()") / 1000)
            page.close()
        browser.close()
    return times


def measure(run_dir: Path, out: Path) -> dict:
    from tutorloop.agents.report import build_report

    start = time.perf_counter()
    build_report([run_dir], out)
    build_s = time.perf_counter() - start
    folder = out.parent / f"{out.stem}_files"
    times = load_seconds(out)
    return {"run": str(run_dir), "html_bytes": out.stat().st_size,
            "images_bytes": sum(p.stat().st_size for p in folder.glob("*")) if folder.exists() else 0,
            "build_s": round(build_s, 2), "load_s_median": round(statistics.median(times), 3),
            "load_s_all": [round(t, 3) for t in times]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", default=[], help="a real run directory to measure too")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/report_load.json"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append({"what": "synthetic: 1,000 failures, 10,000 selected, 1 round",
                     **measure(synthetic_run(Path(tmp)), Path(tmp) / "report.html")})
        for run in args.run:
            rows.append({"what": f"real run {run.name}", **measure(run, Path(tmp) / f"{run.name}.html")})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"command": "benchmarks/report_load.py " + " ".join(argv or sys.argv[1:]),
                                        "rows": rows}, indent=2) + "\n")
    for row in rows:
        print(f"{row['what']}: html {row['html_bytes'] / 1e6:.2f} MB + images {row['images_bytes'] / 1e6:.2f} MB, "
              f"built in {row['build_s']} s, loads in {row['load_s_median']} s (median of {len(row['load_s_all'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
