"""`tutorloop` used wrongly, as a new user would: for each mistake the exit code, the first line printed and
the seconds until the command returned, measured through the installed CLI as a subprocess.

The world is the demo's (its shipped student, a small pool indexed here); nothing is downloaded.

    .venv/bin/python benchmarks/misuse.py --out /tmp/misuse   # writes benchmarks/results/misuse.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tutorloop.agents.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "OPENAI_BASE_URL": ""}


def call(*args: str, timeout: float = 900, show: str = "tutorloop") -> dict:
    start = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    return _row(done.returncode, done.stdout, done.stderr, time.perf_counter() - start, show)


def _row(rc: int, stdout: str, stderr: str, seconds: float, show: str = "tutorloop") -> dict:
    """``show``: the line worth reading starts with (or holds) this; else the first line said."""
    said = [line for line in (stderr + "\n" + stdout).splitlines()
            if line.strip() and not line.startswith(("INFO ", "WARNING ")) and "/s]" not in line]
    first = next((line for line in said if line.startswith(show) or show in line), said[0] if said else "")
    return {"rc": rc, "first_line": first.strip()[:300], "seconds": round(seconds, 2),
            "traceback": "Traceback" in stderr}


def interrupted(args: list[str], sig: int, run_dir: Path) -> dict:
    """Start a run, send ``sig`` once round 1 has selected (it is training then), time until it returns."""
    from tutorloop.agents.run_dir import SELECTED, RunDir

    process = subprocess.Popen([*CLI, "run", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 900
    while not RunDir(run_dir).has(1, SELECTED):
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    start = time.perf_counter()
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    return _row(process.returncode, stdout, stderr, time.perf_counter() - start, show="tutorloop run: interrupted")


def world(out: Path) -> dict[str, Path]:
    from tutorloop.agents import api
    from tutorloop.demo.build import build_world

    paths = build_world(out / "world", pool_size=400, n_val=40, n_test=40, n_generic_per_skill=5,
                        targets=["side-colour"], progress=False)
    store = api.ensure_index(api.IndexConfig(pool=paths.pool, image_root=paths.image_root, store=out / "index",
                                             clusters=4, progress=False), rebuild=True)
    val, _ = paths.targets["side-colour"]
    return {"student": paths.student, "val": val, "store": store, "pool": paths.pool, "image_root": paths.image_root}


def cases(w: dict[str, Path], out: Path) -> list[tuple[str, dict]]:
    base = ["--student", str(w["student"]), "--val", str(w["val"]), "--store", str(w["store"]), "--rounds", "1"]
    fast = ["--epochs", "1", "--fixed-epochs", "--probe-size", "20"]
    slow = ["--epochs", "60", "--fixed-epochs", "--probe-size", "20"]  # training outlasts the signal's poll
    rows: list[tuple[str, dict]] = []
    rows.append(("no teacher at the default URL (`--selector teacher`)",
                 call("run", *base, "--budget", "12", "--out", str(out / "r-noteacher"))))
    rows.append(("`--teacher http://127.0.0.1:9/v1`",
                 call("run", *base, "--budget", "12", "--teacher", "http://127.0.0.1:9/v1", "--out", str(out / "r-9"))))
    rows.append(("wrong `--student` path", call("run", *[a if a != str(w["student"]) else "/nope/student" for a in base],
                                                "--budget", "12", "--selector", "failures", "--out", str(out / "r-s"))))
    rows.append(("wrong `--val` path", call("run", *[a if a != str(w["val"]) else "/nope/val.jsonl" for a in base],
                                            "--budget", "12", "--selector", "failures", "--out", str(out / "r-v"))))
    rows.append(("`--budget 0`", call("run", *base, "--budget", "0", "--out", str(out / "r-b0"))))
    rows.append(("`--rounds 0`", call("run", *base, "--budget", "12", "--rounds", "0", "--out", str(out / "r-r0"))))
    rows.append(("missing required flags", call("run", "--out", str(out / "r-missing"))))

    run = out / "r-ctrl-c"
    args = [*base, *slow, "--budget", "12", "--selector", "failures", "--out", str(run)]
    rows.append(("Ctrl-C mid-round (SIGINT once round 1 has selected)",
                 interrupted(args, signal.SIGINT, run)))
    rows.append(("resume after Ctrl-C", call("run", "--out", str(run), show="resuming")))
    rows.append(("SIGTERM mid-round", interrupted([*base, *slow, "--budget", "12", "--selector", "failures", "--out",
                                                   str(out / "r-term")], signal.SIGTERM, out / "r-term")))

    both = [subprocess.Popen([*CLI, "run", *base, *fast, "--budget", "12", "--selector", "failures", "--out",
                              str(out / f"r-shared-{i}")], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]
    start = time.perf_counter()
    results = [p.communicate(timeout=900) for p in both]
    seconds = time.perf_counter() - start
    rows.append(("two `run`s on one `--store` at once",
                 {"rc": max(p.returncode for p in both), "seconds": round(seconds, 2),
                  "first_line": f"both finished: rc {[p.returncode for p in both]}",
                  "traceback": any("Traceback" in err for _, err in results)}))
    rows.append(("a finished run re-run with `--selector random --budget 50`",
                 call("run", "--out", str(run), "--selector", "random", "--budget", "50")))
    rows.append(("pool smaller than the budget (`--budget 2000`, 400 samples)",
                 call("run", *base, *fast, "--budget", "2000", "--selector", "random", "--out", str(out / "r-short"),
                      show="left unspent")))
    rows.append(("`tutorloop export` of a run", call("export", str(run), "--out", str(out / "export"), show="exported")))
    exported = [json.loads(line) for line in (out / "export" / "selected.jsonl").read_text().splitlines()]
    doubled = sum("images/images/" in json.dumps(r.get("image")) for r in exported)
    rows[-1][1]["first_line"] += f" · doubled image paths: {doubled} of {len(exported)}"

    rows += pools(w, out)
    rows.append(("`api.ensure_index` on a store built from another pool", ensure_other(w, out)))
    return rows


def pools(w: dict[str, Path], out: Path) -> list[tuple[str, dict]]:
    folder = w["pool"].parent  # beside the pool: its image paths stay relative to the same folder
    records = [r for r in map(json.loads, w["pool"].read_text().splitlines()) if r.get("image")][:60]
    sharegpt = [{"conversations": r["conversations"], "images": [r["image"]]} for r in records]
    (folder / "sharegpt.json").write_text(json.dumps(sharegpt))
    big = [dict(r) for r in records[:59]] + [{**records[59], "conversations": [
        {"from": "human", "value": "<image>\n" + "word " * 4_000_000}, {"from": "gpt", "value": "yes"}]}]
    (folder / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in big))
    with (folder / "latin1.jsonl").open("wb") as f:
        for r in records[:10]:
            f.write(json.dumps(r).encode() + b"\n")
        f.write('{"id": "caf\xe9", "conversations": []}\n'.encode("latin-1"))
    rows = []
    for name, label in (("sharegpt.json", "LLaMA-Factory sharegpt records without `id`"),
                        ("big.jsonl", "one record with a 20 MB text field"),
                        ("latin1.jsonl", "a non-UTF-8 line")):
        rows.append((label, call("index", "--pool", str(folder / name), "--store", str(folder / f"store-{name}"),
                                 "--clusters", "2", "--no-progress", show="accepted")))
        rows[-1][1]["first_line"] = _index_summary(rows[-1][1], folder / f"store-{name}")
    junk = folder / "other-form.jsonl"
    junk.write_text("".join(json.dumps({"prompt": "q", "completion": "a"}) + "\n" for _ in range(100)))
    rows.append(("a pool with no valid record (another form)",
                 call("index", "--pool", str(junk), "--store", str(folder / "store-junk"), "--no-progress")))
    return rows


def _index_summary(row: dict, store: Path) -> str:
    quarantine = store / "quarantine-pool.jsonl"
    reasons = [json.loads(line)["reason"] for line in quarantine.read_text().splitlines()] if quarantine.is_file() else []
    counts = {r: reasons.count(r) for r in sorted(set(reasons))}
    return f"rc {row['rc']}; indexed {row['first_line']}; quarantined: {counts or 'none'}"


def ensure_other(w: dict[str, Path], out: Path) -> dict:
    code = ("from tutorloop.agents import api\n"
            f"config = api.IndexConfig(pool={str(w['pool'].parent / 'sharegpt.json')!r}, store={str(w['store'])!r})\n"
            "try:\n    api.ensure_index(config)\nexcept ValueError as error:\n    print(error); raise SystemExit(2)\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    return _row(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (the world, runs, pools)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "misuse")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows = cases(world(args.out), args.out)
    machine = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine()) + f", {os.cpu_count()} cores, loaded"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(
        {"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": [{"case": c, **r} for c, r in rows]},
        indent=1) + "\n")
    lines = [f"Machine: {machine}; {time.strftime('%Y-%m-%d')}", "",
             "| case | rc | seconds | traceback | first line |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {r['rc']} | {r['seconds']} | {'yes' if r['traceback'] else 'no'} | "
              f"{r['first_line'].replace('|', '/')} |" for c, r in rows]
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
