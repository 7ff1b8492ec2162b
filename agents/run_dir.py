"""The run directory: the one module that knows its layout; everything else reads and writes through it.

    RUNDIR/run.json                 RunInfo: run id + validated config
    RUNDIR/summary.json             RunSummary (design.md's contract)
    RUNDIR/checkpoints.sqlite       LangGraph's checkpoints (thread id = run id)
    RUNDIR/teacher_cache/           the teacher's valid replies, by request hash
    RUNDIR/round_NN/                round 0: the student as given; round N >= 1: what round N did
        diagnoses.jsonl   DiagnosisLog per failure      gaps.json        GapPlan
        candidates.jsonl  Candidate per retrieved hit   scored.jsonl     ScoredCandidate (selected or why not)
        selected.jsonl    SelectedSample (pool format + "selection")    adapter/  the LoRA adapter
        eval.jsonl / eval_test.jsonl / eval_generic.jsonl   EvalRecord per sample, after the round
        eval_probe.jsonl  the probe's EvalRecords       front.json       RoundFront: operating points, the kept one
        approval.json     Approval (with approve: who decided the plan, what changed)
        seconds.json      seconds per stage             metrics.json     RoundMetrics (written last)
    RUNDIR/round_00/probe.jsonl     the forgetting probe (pool samples; no --generic), drawn before round 1

Every file is written atomically (retrieval/files.py), so "does the artefact exist" is how a resumed node
knows its work is done. A node writes its "done" artefact last.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tutorloop.agents.approval import Approval
from tutorloop.agents.planning import GapPlan
from tutorloop.agents.records import (
    DiagnosisLog,
    RoundFront,
    RoundMetrics,
    RunInfo,
    RunSummary,
    SelectedSample,
)
from tutorloop.retrieval.files import read_json, read_jsonl, write_json, write_jsonl
from tutorloop.retrieval.records import Sample
from tutorloop.retrieval.rerank import Candidate, ScoredCandidate
from tutorloop.training.records import EvalRecord


@dataclass(frozen=True)
class Artefact:
    """A file of one round: its name and the record it holds (one, or one per line)."""

    name: str
    record: type[BaseModel]
    rows: bool


DIAGNOSES = Artefact("diagnoses.jsonl", DiagnosisLog, rows=True)
PLAN = Artefact("gaps.json", GapPlan, rows=False)
CANDIDATES = Artefact("candidates.jsonl", Candidate, rows=True)
SCORED = Artefact("scored.jsonl", ScoredCandidate, rows=True)
SELECTED = Artefact("selected.jsonl", SelectedSample, rows=True)
METRICS = Artefact("metrics.json", RoundMetrics, rows=False)
FRONT = Artefact("front.json", RoundFront, rows=False)
APPROVAL = Artefact("approval.json", Approval, rows=False)  # with approve: a person's decision on the plan
PREVIEW = Artefact("preview.jsonl", SelectedSample, rows=True)  # with approve: what the plan would buy
PROBE = Artefact("probe.jsonl", Sample, rows=True)  # round 0's: drawn once, before any training
EVALS = {"val": Artefact("eval.jsonl", EvalRecord, rows=True),
         "test": Artefact("eval_test.jsonl", EvalRecord, rows=True),
         "generic": Artefact("eval_generic.jsonl", EvalRecord, rows=True),
         "probe": Artefact("eval_probe.jsonl", EvalRecord, rows=True)}
SECONDS = "seconds.json"
ADAPTER = "adapter"
TRAINED = "training.json"  # written by training/lora.py last: a finished adapter


def _to_json(record: BaseModel) -> dict:
    """A record's on-disk form: its own ``to_record()`` where it has one (the pool's form for a sample)."""
    return record.to_record() if hasattr(record, "to_record") else record.model_dump(mode="json")


def _from_json(record: type[BaseModel], row: dict) -> Any:
    return record.from_record(row) if hasattr(record, "from_record") else record.model_validate(row)


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- the run's own files --------------------------------------------------------------------

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints.sqlite"

    @property
    def teacher_cache(self) -> Path:
        return self.root / "teacher_cache"

    def exists(self) -> bool:
        return (self.root / "run.json").exists()

    def read_info(self) -> RunInfo:
        return RunInfo.model_validate(read_json(self.root / "run.json"))

    def write_info(self, info: RunInfo) -> None:
        write_json(self.root / "run.json", info)

    def has_summary(self) -> bool:
        return (self.root / "summary.json").exists()

    def read_summary(self) -> RunSummary:
        return RunSummary.model_validate(read_json(self.root / "summary.json"))

    def write_summary(self, summary: RunSummary) -> None:
        write_json(self.root / "summary.json", summary)

    # --- rounds -----------------------------------------------------------------------------------

    def folder(self, number: int) -> Path:
        return self.root / f"round_{number:02d}"

    def path(self, number: int, artefact: Artefact) -> Path:
        return self.folder(number) / artefact.name

    def has(self, number: int, artefact: Artefact) -> bool:
        return self.path(number, artefact).exists()

    def read(self, number: int, artefact: Artefact) -> Any:
        """The artefact's records: a list for a JSONL artefact (empty when absent), else one record."""
        path = self.path(number, artefact)
        if artefact.rows:
            return [_from_json(artefact.record, row) for row in read_jsonl(path)]
        return _from_json(artefact.record, read_json(path))

    def write(self, number: int, artefact: Artefact, value: Any) -> None:
        path = self.path(number, artefact)
        if artefact.rows:
            # a record without its own form is written compact by write_jsonl (model_dump_json), as before
            write_jsonl(path, [r.to_record() if hasattr(r, "to_record") else r for r in value])
        else:
            write_json(path, _to_json(value))

    def rounds(self) -> list[int]:
        """Every round folder there is, 0 included, in order."""
        return sorted(int(p.name[6:]) for p in self.root.glob("round_[0-9][0-9]*") if p.name[6:].isdigit())

    def rounds_done(self) -> list[int]:
        """Rounds (0 = before any training) whose evaluation is complete."""
        return [n for n in self.rounds() if self.has(n, METRICS)]

    def metrics_history(self) -> list[RoundMetrics]:
        return [self.read(n, METRICS) for n in self.rounds_done()]

    def selected_ids(self, upto: int) -> list[str]:
        """Ids trained on in rounds 1..upto, in selection order."""
        return [row.sample.id for n in range(1, upto + 1) for row in self.read(n, SELECTED)]

    def adapter(self, number: int) -> Path | None:
        """The adapter the student carries after ``number`` rounds (None before the first)."""
        return None if number == 0 else self.folder(number) / ADAPTER

    def has_adapter(self, number: int) -> bool:
        return number > 0 and (self.folder(number) / ADAPTER / TRAINED).exists()

    def training(self, number: int) -> dict[str, Any]:
        """The round's ``training.json`` (training/lora.py's TrainReport) as written; empty before round 1."""
        return read_json(self.folder(number) / ADAPTER / TRAINED) if self.has_adapter(number) else {}

    def position(self) -> tuple[int, str]:
        """(round, stage) where the run stands: the first artefact of the latest round still missing."""
        rounds = self.rounds() or [0]
        number = rounds[-1]
        if self.has(number, METRICS):
            return number + 1, "plan"
        if number == 0:
            return 0, "evaluate (the student as given)"
        for artefact, stage in ((PLAN, "plan"), (SELECTED, "select")):
            if not self.has(number, artefact):
                return number, stage
        return number, "evaluate" if self.has_adapter(number) else "train"

    def waiting_for_approval(self) -> int | None:
        """The round whose plan waits for a person's decision (previewed, not approved), if any."""
        number = (self.rounds() or [0])[-1]
        waiting = number > 0 and self.has(number, PLAN) and not self.has(number, SELECTED) \
            and not self.has(number, APPROVAL) and self.has(number, SCORED)
        return number if waiting else None

    def probe_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.read(0, PROBE))

    def seconds(self, number: int) -> dict[str, float]:
        path = self.folder(number) / SECONDS
        return read_json(path) if path.exists() else {}

    def add_seconds(self, number: int, stage: str, seconds: float) -> None:
        write_json(self.folder(number) / SECONDS, {**self.seconds(number), stage: round(seconds, 3)})

    def copy_round(self, number: int, target: RunDir, *, without: tuple[Artefact, ...] = ()) -> None:
        """Copy a complete round into another run directory (it appears whole: staged, then renamed)."""
        staging = target.folder(number).with_name(target.folder(number).name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.folder(number), staging, ignore=shutil.ignore_patterns(*(a.name for a in without)))
        staging.rename(target.folder(number))
