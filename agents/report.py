"""`tutorloop review RUNDIR [RUNDIR_B] --html`: one static page to review a run (or two side by side).

What a person judges a diagnosis by is visual: the image the student failed on, what the teacher said, and
the pool samples that diagnosis pulled in. The page shows, per run: the overview (config, stop reason,
accuracy per round, samples per gap and replay, seconds per stage, teacher cost, rejected replies); per
round and gap the failures with the student's steps (the erroneous one marked) and the diagnosis, beside
the samples selected and the best ones not picked with why; and each gap's trajectory (did its failures
get fixed in later rounds).

Choices, and why:
- **Images live in a sibling folder** (``<report>_files/``, relative links), re-encoded from the run's own
  image roots as PNG thumbnails (96 px) and capped full-size copies. Embedding 10,000 thumbnails would
  make a page of tens of MB that every open pays for; a folder keeps the HTML small, and the browser
  loads only the images of the page shown. The folder travels with the file; nothing points outside it.
- **The data is JSON inside the page and the cards are built by a small script**, one page of cards at a
  time (pagination), so 1,000 failures and 10,000 selected samples per round stay fast.
- **Everything from data or a model is text**: the script only ever sets ``textContent``; the JSON is
  embedded with ``<``, ``>`` and ``&`` escaped; server-side HTML goes through ``html.escape``. No URL of
  any kind is written except the relative image paths.

The run is read only through agents/run_dir.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shlex
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from tutorloop.agents.run_dir import (
    APPROVAL,
    DIAGNOSES,
    EVALS,
    FRONT,
    METRICS,
    PLAN,
    PREVIEW,
    SCORED,
    SELECTED,
    RunDir,
)
from tutorloop.retrieval.files import atomic_write_text
from tutorloop.retrieval.images import open_image

THUMBNAIL_PX = 96
FULL_PX = 768
NOT_PICKED_SHOWN = 5  # best candidates not selected, per gap
REPLAY_GAPS = {"known": "known-skill replay", "random": "uniform draw"}


class ImageStore:
    """Re-encoded copies of the images a report shows, in one folder next to it (never a link outside)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[tuple[Path, str], tuple[str, str] | None] = {}

    def add(self, root: Path | None, relative: str | None) -> tuple[str, str] | None:
        """(thumbnail, full) paths relative to the report, or None when there is no readable image."""
        if root is None or not relative:
            return None
        path = (root.resolve(), relative)
        if path in self.made:
            return self.made[path]
        self.made[path] = None
        key = hashlib.sha1(f"{path[0]}\0{relative}".encode()).hexdigest()[:16]
        try:  # open_image refuses a path leaving its root (the data may be hostile)
            with open_image(root, relative) as image:
                image = image.convert("RGB")
                self.folder.mkdir(parents=True, exist_ok=True)
                full = image.copy()
                full.thumbnail((FULL_PX, FULL_PX))
                full.save(self.folder / f"{key}.png")
                # a tiny demo image is upscaled without smoothing, so its shapes stay legible
                small = image.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.NEAREST) \
                    if max(image.size) < THUMBNAIL_PX else image.copy()
                small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                small.save(self.folder / f"{key}-t.png")
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
        self.made[path] = (f"{self.folder.name}/{key}-t.png", f"{self.folder.name}/{key}.png")
        return self.made[path]


def _text_of(record: dict) -> tuple[str, str]:
    """(question, answer) of a pool sample in its record form."""
    turns = record.get("conversations") or []
    human = [t.get("value", "") for t in turns if t.get("from") == "human"]
    answer = next((t.get("value", "") for t in reversed(turns) if t.get("from") == "gpt"), "")
    return " ".join(h.replace("<image>", " ").strip() for h in human).strip(), answer


def run_data(run: RunDir, images: ImageStore, name: str) -> dict[str, Any]:
    """Everything the page shows of one run, as plain JSON-able data."""
    info = run.read_info()
    config = info.config
    val_root = Path(config.get("image_root") or Path(config["val"]).parent)
    pool_root = _pool_image_root(info.pool_image_root, config.get("store"))
    done = run.rounds_done()
    evals = {n: {r.id: r for r in run.read(n, EVALS["val"])} for n in done}
    summary = run.read_summary() if run.has_summary() else None
    rounds = []
    for number in [n for n in run.rounds() if n > 0 and run.has(n, PLAN)]:
        rounds.append(_round_data(run, number, evals, val_root, pool_root, images, done))
    teacher = config.get("teacher") or {}
    return {
        "name": name, "path": str(run.root),
        "config": {"selector": config.get("selector"), "budget": config.get("budget"),
                   "rounds": config.get("rounds"), "seed": config.get("seed"),
                   "known_share": config.get("known_share"),
                   "teacher_model": teacher.get("model") if config.get("selector") == "teacher" else None,
                   "student": config.get("student")},
        "stop_reason": summary.stop_reason if summary else None,
        "accuracy": [{"round": m.round, **{s: m.accuracy(s) for s in ("val", "test", "generic", "probe")}}
                     for m in (run.read(n, METRICS) for n in done)],
        "rounds": rounds,
    }


def _pool_image_root(recorded: str | None, store: str | None) -> Path | None:
    """Where the pool's images are: recorded in run.json; for a run made before that, the index's manifest."""
    if recorded:
        return Path(recorded)
    if not store or not Path(store).is_dir():
        return None
    from tutorloop.retrieval.index import PoolIndex

    try:
        index = PoolIndex.open(store=Path(store))
    except Exception:  # a locked or moved store only costs the pool's thumbnails
        return None
    try:
        return Path(index.manifest.image_root)
    finally:
        index.close()


def _round_data(run: RunDir, number: int, evals: dict, val_root: Path, pool_root: Path | None,
                images: ImageStore, done: list[int]) -> dict[str, Any]:
    plan = run.read(number, PLAN)
    diagnoses = {row.sample_id: row for row in run.read(number, DIAGNOSES)}
    before = evals.get(number - 1, {})
    later = [n for n in done if n >= number]
    waiting = run.waiting_for_approval() == number
    selected = run.read(number, PREVIEW if waiting else SELECTED)
    not_picked: dict[str, list] = {}
    for c in run.read(number, SCORED):
        if not c.selected:
            not_picked.setdefault(c.gap, []).append(c)

    def failure(sample_id: str) -> dict[str, Any]:
        record, row = before.get(sample_id), diagnoses.get(sample_id)
        d = row.diagnosis if row else None
        fate = [{"round": n, "correct": evals[n][sample_id].correct} for n in later if sample_id in evals[n]]
        return {
            "id": sample_id, "source": (row.source if row else None) or (record.source if record else None),
            "question": row.question if row else (record.question if record else ""),
            "reference": row.reference if row else (record.reference if record else ""),
            "prediction": row.prediction if row else (record.prediction if record else ""),
            "steps": list(row.steps if row else (record.steps if record else [])),
            "erroneous_step": d.erroneous_step if d else None, "error_type": d.error_type if d else None,
            "missing_skill": _skill_label(d) if d else None, "explanation": d.explanation if d else None,
            "queries": list(d.queries) if d else [], "rejected": row.error if row else None,
            "raw": row.raw if row and row.error else None,
            "image": images.add(val_root, record.image if record else None),
            "status": "fixed" if fate and fate[-1]["correct"] else "still failing", "fate": fate,
        }

    def picked(row) -> dict[str, Any]:
        record = row.sample.to_record()
        question, answer = _text_of(record)
        return {"id": row.sample.id, "question": question, "answer": answer, "source": row.sample.source,
                "relevance": row.why.relevance, "perturbation": row.why.perturbation, "cluster": row.why.cluster,
                "scorer": row.why.scorer, "scores": row.why.scores,
                "score": row.why.score, "reason": row.why.reason, "tied": row.why.tied,
                "image": images.add(pool_root, row.sample.images[0] if row.sample.images else None)}

    def passed_over(c) -> dict[str, Any]:
        return {"id": c.sample_id, "relevance": c.relevance, "perturbation": c.perturbation, "scorer": c.scorer,
                "cluster": c.cluster, "score": c.score, "reason": c.reason, "tied": c.tied}

    by_gap: dict[str, list] = {}
    for row in selected:
        by_gap.setdefault(row.why.gap, []).append(row)
    in_gaps = {sid for gap in plan.gaps for sid in gap.sample_ids}
    gaps = [{"skill": gap.skill, "aliases": gap.aliases, "budget": gap.budget, "n_errors": gap.n_errors,
             "queries": gap.queries, "failures": [failure(sid) for sid in gap.sample_ids], "preview": waiting,
             "approve": _approve_commands(run, gap.skill) if waiting else [],
             "selected": [picked(r) for r in by_gap.get(gap.skill, [])],
             "not_picked": [passed_over(c) for c in not_picked.get(gap.skill, [])[:NOT_PICKED_SHOWN]]}
            for gap in plan.gaps]
    for pseudo, label in REPLAY_GAPS.items():  # selections that no gap made
        if by_gap.get(pseudo):
            gaps.append({"skill": label, "aliases": [], "budget": len(by_gap[pseudo]), "n_errors": 0, "queries": [],
                         "failures": [], "selected": [picked(r) for r in by_gap[pseudo]], "not_picked": []})
    orphans = [sid for sid in diagnoses if sid not in in_gaps]
    if orphans:  # failures the teacher looked at but that formed no gap (rejected replies)
        gaps.append({"skill": "no gap (reply rejected)", "aliases": [], "budget": 0, "n_errors": len(orphans),
                     "queries": [], "failures": [failure(s) for s in orphans], "selected": [], "not_picked": []})
    metrics = run.read(number, METRICS) if run.has(number, METRICS) else None
    training = run.training(number)
    return {
        "front": run.read(number, FRONT).model_dump() if run.has(number, FRONT) else None,
        "approval": (run.read(number, APPROVAL).model_dump() if run.has(number, APPROVAL)
                     else "waiting" if run.waiting_for_approval() == number else None),
        "forgetting": metrics.forgetting if metrics else None,
        "kept": None if not metrics else ("start" if metrics.kept_start else metrics.alpha),
        "training": {k: training.get(k) for k in ("epochs_run", "best_epoch", "held_out_losses", "n_train")},
        "round": number, "budget": plan.budget, "known": plan.known, "teacher": plan.teacher,
        "seconds": run.seconds(number), "selected": len(selected),
        "by_gap": dict(Counter(row.why.gap for row in selected).most_common()),
        "rejected_by_reason": dict(Counter(_reason(r.error) for r in diagnoses.values() if r.error)),
        "val_accuracy": metrics.val_accuracy if metrics else None, "gaps": gaps,
    }


def _approve_commands(run: RunDir, gap: str) -> list[str]:
    """The commands a reviewer runs to drop this gap or double its share (quoted for a shell)."""
    return [f"tutorloop approve {shlex.quote(str(run.root))} --drop {shlex.quote(gap)}",
            f"tutorloop approve {shlex.quote(str(run.root))} --weight {shlex.quote(f'{gap}=2')}"]


def _skill_label(d) -> str:
    """A grounded diagnosis shows its map skills and weights ("side-colour 0.5 + vertical-colour 0.5 (skill
    map)"); a free one its own skill name."""
    if not d.grounded:
        return d.missing_skill
    chosen = " + ".join(f"{s.skill} {s.weight:g}" for s in d.skills)
    other = f"none of the map's: {d.other_skill}" if d.other_skill else ""
    return f"{' + '.join(x for x in (chosen, other) if x)} (skill map)"


def _reason(error: str) -> str:
    """The kind of a rejection ("timeout: ..." -> "timeout"), for counting."""
    return error.split(":", 1)[0].strip()[:60] or "unknown"


# --- the page -------------------------------------------------------------------------------------


def accuracy_svg(points: list[dict], width: int = 360, height: int = 180) -> str:
    """Accuracy per round for val / test / generic as an inline SVG line chart (numbers only: safe)."""
    pad, colours = 30, {"val": "#1f77b4", "test": "#d62728", "generic": "#2ca02c", "probe": "#9467bd"}
    rounds = [p["round"] for p in points] or [0]
    span = max(max(rounds), 1)

    def xy(r: int, v: float) -> str:
        return f"{pad + (width - 2 * pad) * r / span:.1f},{height - pad - (height - 2 * pad) * v:.1f}"

    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>']
    for v in (0, 0.5, 1):
        y = height - pad - (height - 2 * pad) * v
        parts.append(f'<text x="4" y="{y + 4:.1f}" class="tick">{int(v * 100)}%</text>')
    for r in rounds:
        parts.append(f'<text x="{pad + (width - 2 * pad) * r / span - 3:.1f}" y="{height - 10}" class="tick">{r}</text>')
    for i, (split, colour) in enumerate(colours.items()):
        series = [(p["round"], p[split]) for p in points if p.get(split) is not None]
        if not series:
            continue
        line = " ".join(xy(r, v) for r, v in series)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{xy(r, v).split(",")[0]}" cy="{xy(r, v).split(",")[1]}" r="3" fill="{colour}"/>'
                  for r, v in series]
        key_y = pad + 12 * i
        parts.append(f'<line x1="{width - pad - 66}" y1="{key_y - 3}" x2="{width - pad - 54}" y2="{key_y - 3}" '
                     f'stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{width - pad - 50}" y="{key_y}" fill="{colour}" class="tick">{split}</text>')
    parts.append("</svg>")
    return "".join(parts)


def front_svg(front: dict, width: int = 300, height: int = 170) -> str:
    """A round's learning-forgetting front: target val accuracy against forgetting, one point per alpha (the kept
    one filled), the forgetting bound as a dashed line (numbers only: safe)."""
    pad = 30
    points = [p for p in front["points"] if p.get("forgetting") is not None] or front["points"]
    xs = [p.get("forgetting") or 0.0 for p in points] + [front.get("max_forgetting") or 0.0, 0.0]
    lo, hi = min(xs), max(xs)
    hi = hi if hi - lo > 1e-9 else lo + 1.0

    def x(v: float) -> float:
        return pad + (width - 2 * pad) * (v - lo) / (hi - lo)

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * v

    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>',
             f'<text x="{pad}" y="{height - 8}" class="tick">forgetting (points) {lo:.1f} … {hi:.1f}</text>',
             f'<text x="2" y="{pad - 8}" class="tick">val acc</text>']
    if front.get("max_forgetting") is not None:
        bx = x(front["max_forgetting"])
        parts.append(f'<line x1="{bx:.1f}" y1="{pad}" x2="{bx:.1f}" y2="{height - pad}" stroke="#999" '
                     'stroke-dasharray="4 3"/>')
    for p in points:
        px, py = x(p.get("forgetting") or 0.0), y(p["val_accuracy"])
        fill = "#1f77b4" if p["alpha"] == front["chosen"] else "none"
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{fill}" stroke="#1f77b4"/>'
                     f'<text x="{px + 5:.1f}" y="{py - 4:.1f}" class="tick">{p["alpha"]:g}</text>')
    key_x, key_y = width - pad - 96, pad - 12
    parts.append(f'<circle cx="{key_x}" cy="{key_y}" r="4" fill="#1f77b4"/>'
                 f'<text x="{key_x + 7}" y="{key_y + 4}" class="tick">kept</text>'
                 f'<circle cx="{key_x + 38}" cy="{key_y}" r="4" fill="none" stroke="#1f77b4"/>'
                 f'<text x="{key_x + 45}" y="{key_y + 4}" class="tick">alpha</text>'
                 f'<line x1="{key_x + 80}" y1="{key_y - 4}" x2="{key_x + 80}" y2="{key_y + 6}" stroke="#999" '
                 f'stroke-dasharray="3 2"/><text x="{key_x + 84}" y="{key_y + 4}" class="tick">bound</text>')
    parts.append("</svg>")
    return "".join(parts)


def _overview(data: dict) -> str:
    esc = html.escape
    config = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in data["config"].items()
                     if v is not None)
    rows = []
    for r in data["rounds"]:
        teacher = r["teacher"] or {}
        tokens = teacher.get("tokens") or {}
        rows.append("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in (
            r["round"], r["selected"], r["budget"], r["known"],
            ", ".join(f"{g} {n}" for g, n in r["by_gap"].items()) or "—",
            " ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()),
            f"{tokens.get('prompt', 0)} + {tokens.get('completion', 0)} ({teacher.get('http_requests', 0)} requests, {teacher.get('cached', 0)} cached)" if teacher else "—",
            ", ".join(f"{k} {v}" for k, v in r["rejected_by_reason"].items()) or "none",
            "—" if r["forgetting"] is None else f"{-r['forgetting']:+.1f}",
            "—" if r["kept"] is None else str(r["kept"]), _epochs(r["training"]), _approval(r["approval"]))) + "</tr>")
    fronts = "".join(f'<figure>{front_svg(r["front"])}<figcaption>round {r["round"]}: {esc(r["front"]["reason"])}'
                     "</figcaption></figure>" for r in data["rounds"] if r["front"])
    return (f'<section class="overview"><h2>{esc(data["name"])}</h2><p class="path">{esc(data["path"])}</p>'
            f'<p>stop: <b>{esc(str(data["stop_reason"]))}</b></p><div class="row"><table class="kv">{config}</table>'
            f'{accuracy_svg(data["accuracy"])}</div><table class="rounds"><tr><th>round</th><th>selected</th>'
            '<th>budget</th><th>replay share</th><th>samples per gap</th><th>seconds per stage</th>'
            '<th>teacher tokens (prompt + completion)</th><th>rejected replies</th><th>forgetting (points)</th>'
            '<th>operating point kept</th><th>training (epochs; kept epoch; held-out loss per epoch)</th>'
            '<th>plan approval</th></tr>'
            + "".join(rows) + "</table>"
            + (f'<h3>learning–forgetting front per round</h3><div class="row">{fronts}</div>' if fronts else "")
            + "</section>")


def _approval(approval: dict | str | None) -> str:
    if approval is None:
        return "—"
    if approval == "waiting":
        return "waiting: tutorloop approve RUNDIR [--drop GAP] [--weight GAP=W] [--note TEXT]"
    changes = ", ".join(f"{gap} {approval['budgets_before'].get(gap, 0)} → {budget}"
                        for gap, budget in approval["budgets_after"].items()
                        if budget != approval["budgets_before"].get(gap))
    dropped = f"; dropped {', '.join(approval['dropped'])}" if approval["dropped"] else ""
    queries = "".join(f"; query added to {gap}: {', '.join(texts)}"
                      for gap, texts in approval.get("added_queries", {}).items())
    note = f"; “{approval['note']}”" if approval["note"] else ""
    return (f"{approval['status']} by {approval['by']} at {approval['at']}{': ' + changes if changes else ''}"
            f"{dropped}{queries}{note}")


def _epochs(training: dict) -> str:
    if not training or training.get("epochs_run") is None:
        return "—"
    losses = " → ".join(f"{x:.3f}" for x in training.get("held_out_losses") or [])
    kept = training.get("best_epoch")
    return (f"{training['epochs_run']:g} epochs of {training.get('n_train')} samples"
            + ("" if kept is None else f"; kept {'the start' if kept == 0 else f'epoch {kept}'}")
            + (f"; {losses}" if losses else ""))


def _json_for_script(data: Any) -> str:
    """JSON that cannot end its <script> element nor open a comment: <, > and & as unicode escapes."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_report(run_dirs: list[Path], out: Path) -> Path:
    """Write the page for one run (or two side by side) to ``out``; images go to ``<out stem>_files/``."""
    images = ImageStore(out.parent / f"{out.stem}_files")
    names = ["A", "B"][: len(run_dirs)] if len(run_dirs) > 1 else [""]
    runs = [run_data(RunDir(path), images, f"{name + ': ' if name else ''}{Path(path).name}")
            for name, path in zip(names, run_dirs, strict=True)]
    template = resources.files("tutorloop.agents").joinpath("report.html").read_text(encoding="utf-8")
    title = "tutorloop review — " + " vs ".join(r["name"] for r in runs)
    fills = {"__TITLE__": html.escape(title), "__OVERVIEW__": "".join(_overview(r) for r in runs),
             "__DATA__": _json_for_script({"runs": runs})}
    # one pass over the template: a placeholder's text inside the data is never filled in again
    page = re.sub("|".join(fills), lambda m: fills[m.group(0)], template)
    atomic_write_text(out, page)
    return out
