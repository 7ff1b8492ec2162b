"""A person in the loop, measured: the demo's run with ``approve: true``, each waiting round decided twice — as
planned, and with the gaps dropped whose preview a reviewer would see is off target — then finished.

The demo world and its CPU teacher (SmolLM2 on llama.cpp, the skill map named by the pool's tags), as
``tutorloop demo`` runs them; the selection seed varies (the world and the student stay the shipped ones).
The reviewer is simulated from what the report shows a person: a gap is dropped when fewer than
``--on-target`` of the samples its preview would buy come from a skill that teaches the target (the demo
world's tags). Every later round is approved as planned. Each seed's run is made once up to round 1's plan
and copied, so both arms share round 0 and the teacher's diagnoses.

    .venv/bin/python benchmarks/approval.py --seeds 0,1,2     # writes benchmarks/results/approval.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.front import machine  # noqa: E402

TARGET = "side-colour"


def config_for(world, store: Path, out: Path, seed: int, teacher_url: str):
    from tutorloop.agents import api

    val, test = world.targets[TARGET]
    teacher = {"send_images": False, "dialect": "json_object", "concurrency": 2, "max_tokens": 192,
               "skill_map": "auto", "map_skills_shown": 3, "base_url": teacher_url, "progress": False}
    return api.RunConfig(student=world.student, val=val, test=test, generic=world.generic, store=store, budget=300,
                         rounds=2, selector="teacher", seed=seed, out=out, teacher=teacher, max_diagnoses=8,
                         approve=True)


def off_target_gaps(run_dir, number: int, sources: dict[str, str], wanted: set[str], threshold: float) -> list[str]:
    """The gaps whose preview buys fewer than ``threshold`` on-target samples (never every gap)."""
    from tutorloop.agents.run_dir import PLAN, SCORED

    shares = {}
    for gap in run_dir.read(number, PLAN).gaps:
        bought = [r.sample_id for r in run_dir.read(number, SCORED) if r.gap == gap.skill and r.selected]
        shares[gap.skill] = sum(sources.get(i) in wanted for i in bought) / len(bought) if bought else 0.0
    off = [gap for gap, share in shares.items() if share < threshold]
    return off if len(off) < len(shares) else [gap for gap in off if gap != max(shares, key=shares.get)]


def finish(config, run_id: str, decide) -> None:
    """Resume the run; decide every round that waits (``decide(number)`` → the gaps to drop), until it ends."""
    from tutorloop.agents import api
    from tutorloop.agents.cli import main
    from tutorloop.agents.run_dir import RunDir

    run_dir = RunDir(config.out)
    while (number := run_dir.waiting_for_approval()) is not None:
        drop = decide(number)
        args = ["approve", str(config.out), "--no-resume", "--note", "benchmark reviewer"]
        assert main([*args, *(a for gap in drop for a in ("--drop", gap))]) == 0
        api.run(config, run_id=run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--on-target", type=float, default=0.2, help="a gap whose preview buys less is dropped")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "approval")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "approval")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from tutorloop.agents import api
    from tutorloop.agents.cpu_teacher import serve_cpu_teacher
    from tutorloop.agents.run_dir import APPROVAL, METRICS, RunDir
    from tutorloop.demo.build import build_world
    from tutorloop.demo.world import SKILLS

    world = build_world(args.out / "world", targets=[TARGET], progress=False)
    store = api.ensure_index(api.IndexConfig(pool=world.pool, image_root=world.image_root, store=args.out / "index"),
                             rebuild=True)
    api.ensure_skill_map(store, names_from="source")
    sources = {json.loads(line)["id"]: json.loads(line).get("source") for line in world.pool.read_text().splitlines()}
    wanted = {SKILLS[p].source for p in SKILLS["side_colour"].taught_by}
    rows = []
    with serve_cpu_teacher() as url:
        for seed in (int(s) for s in args.seeds.split(",")):
            base = args.out / f"seed{seed}"
            began = time.perf_counter()
            waiting = config_for(world, store, base / "waiting", seed, url)
            api.run(waiting, run_id=f"approval-{seed}")  # stops at round 1's plan
            assert RunDir(waiting.out).waiting_for_approval() == 1, "the run waits at round 1's plan"
            for arm in ("as-planned", "edited"):
                out = base / arm
                if not (out / "summary.json").exists():
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.copytree(waiting.out, out)
                config = config_for(world, store, out, seed, url)
                run_dir = RunDir(out)
                finish(config, f"approval-{seed}", lambda n, arm=arm, run_dir=run_dir: off_target_gaps(
                    run_dir, n, sources, wanted, args.on_target) if arm == "edited" and n == 1 else [])
                history = [run_dir.read(n, METRICS) for n in run_dir.rounds_done()]
                approvals = [run_dir.read(n, APPROVAL).model_dump(mode="json") for n in run_dir.rounds_done()[1:]
                             if run_dir.has(n, APPROVAL)]
                rows.append({"seed": seed, "arm": arm, "test": [m.test_accuracy for m in history],
                             "generic": [m.generic_accuracy for m in history], "approvals": approvals,
                             "wall_s": round(time.perf_counter() - began, 1)})
                print(json.dumps(rows[-1]), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    lines = [f"# Plan approval on the demo world ({time.strftime('%Y-%m-%d')})", "",
             f"Target {TARGET}, budget 300 over 2 rounds, CPU teacher (SmolLM2) on a tag-named skill map; round 1 "
             f"decided as planned or with the gaps dropped whose preview buys < {args.on_target:.0%} on-target "
             f"samples. Machine: {machine()}.", "",
             "| seed | arm | dropped in round 1 | target test (round 0 → end) | generic (round 0 → end) |",
             "|---|---|---|---|---|"]
    for r in rows:
        dropped = [g for a in r["approvals"][:1] for g in a.get("dropped", [])]
        lines.append(f"| {r['seed']} | {r['arm']} | {', '.join(dropped) or '—'} | {100 * r['test'][0]:.1f} → "
                     f"{100 * r['test'][-1]:.1f} | {100 * r['generic'][0]:.1f} → {100 * r['generic'][-1]:.1f} |")
    for arm in ("as-planned", "edited"):
        final = [100 * r["test"][-1] for r in rows if r["arm"] == arm]
        if final:
            sd = statistics.stdev(final) if len(final) > 1 else 0.0
            lines.append(f"\n{arm}: target test {statistics.fmean(final):.1f} ± {sd:.1f} (n = {len(final)})")
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
