"""A teacher outage mid-round: is anything diagnosable lost, and what does the wait cost?

An OpenAI-compatible test double on 127.0.0.1 (tests/agents/scripted_openai.py) answers 40 diagnosis requests
with a little latency and a few bad replies (invalid JSON, truncated); it is stopped once a quarter of the
round's requests have arrived and started again on the same port after ``--down`` seconds (or never). Each case
reports: diagnosed, rejected for a bad reply, given up for a transport failure, HTTP requests, wall seconds.

    .venv/bin/python benchmarks/teacher_outage.py --down 10,60,forever --outage-wait 120
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scripted_module():
    spec = importlib.util.spec_from_file_location("scripted_openai", ROOT / "tests" / "agents" / "scripted_openai.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def failures(n: int, folder: Path) -> list:
    from PIL import Image

    from tutorloop.training.records import EvalRecord

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(folder / "a.png")
    marks = {5: "BADJSON", 17: "TRUNCATED"}
    return [EvalRecord(id=f"val-{i:03d}", source="s", image="a.png", question=f"{marks.get(i, '')} how many? {i}",
                       reference="2", prediction="3", correct=False) for i in range(n)]


def one_case(down: float | None, outage_wait: float, n: int, folder: Path) -> dict:
    from tutorloop.agents.teacher import diagnose_failures
    from tutorloop.agents.teacher_config import TeacherConfig

    scripted = scripted_module()
    server = scripted.ScriptedOpenAI(latency_s=0.5, faults={"BADJSON": ["invalid_json"] * 9,
                                                            "TRUNCATED": ["truncated"] * 9})
    server.start()
    url, port = server.base_url, int(server.base_url.rsplit(":", 1)[1].split("/")[0])

    def outage() -> None:
        while server.count < n // 4:
            time.sleep(0.05)
        server.stop()
        if down is not None:
            time.sleep(down)
            server.start(port)

    threading.Thread(target=outage, daemon=True).start()
    config = TeacherConfig(base_url=url, dialect="json_schema", concurrency=4, timeout_s=5.0, backoff_s=0.5,
                           max_retries=2, outage_wait_s=outage_wait, progress=False)
    began = time.perf_counter()
    result = diagnose_failures(failures(n, folder), folder, config)
    wall = time.perf_counter() - began
    server.stop()
    transport = sum(row.transport for row in result.logs)
    return {"down_s": down, "outage_wait_s": outage_wait, "failures": n, "diagnosed": result.ok,
            "rejected_bad_reply": result.rejected - transport, "given_up_transport": transport,
            "http_requests": result.http_requests, "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", default="10,60,forever", help="seconds the teacher is down; 'forever': never back")
    parser.add_argument("--outage-wait", type=float, default=120.0, help="TeacherConfig.outage_wait_s")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "teacher_outage.json")
    args = parser.parse_args(argv)
    rows = []
    for text in args.down.split(","):
        down = None if text == "forever" else float(text)
        rows.append(one_case(down, args.outage_wait, args.n, ROOT / "runs" / "teacher_outage"))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "benchmarks/teacher_outage.py " + " ".join(argv or sys.argv[1:]),
                                    "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
