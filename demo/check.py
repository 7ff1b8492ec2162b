"""Does the demo show something? Build the student, then LoRA-tune it on pool samples of one target's skill.

    python -m tutorloop.demo.check --out runs/check [--target side-colour] [--n-train 1500] [--seed 0]

Prints (and writes ``<out>/check-<target>.json``) the target's test accuracy and the generic skills'
accuracy before and after a LoRA + projector run on ``--n-train`` pool samples of the target's skill(s)
(with as many generic replay samples as ``--replay`` says). This is the learnability check of the demo
world: the gap must be closable by the kind of data the loop retrieves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tutorloop.demo.build import build_world
from tutorloop.demo.targets import TARGETS
from tutorloop.demo.world import SKILLS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorloop.demo.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/check"), help="world and results folder")
    parser.add_argument("--target", default=next(iter(TARGETS)), choices=sorted(TARGETS))
    parser.add_argument("--pool-size", type=int, default=30000, help="pool to draw the target's skill from")
    parser.add_argument("--n-train", type=int, default=1200, help="pool samples of the target's skill")
    parser.add_argument("--replay", type=float, default=0.5, help="generic replay samples per selected sample")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student-cache", type=Path, default=None, help="where built students are cached")
    args = parser.parse_args(argv)
    result = check(args.out, args.target, pool_size=args.pool_size, n_train=args.n_train, replay=args.replay,
                   epochs=args.epochs, lr=args.lr, seed=args.seed, student_cache=args.student_cache)
    print(json.dumps(result, indent=2))
    return 0


def check(out: Path, target: str, *, pool_size: int, n_train: int, replay: float, epochs: int, lr: float,
          seed: int, student_cache: Path | None = None, student_settings=None) -> dict:
    from tutorloop.retrieval.ingest import load_samples
    from tutorloop.training.configs import LoraTrainConfig
    from tutorloop.training.evaluate import evaluate
    from tutorloop.training.lora import train_lora
    from tutorloop.training.student import load_student

    world = build_world(out / "world", pool_size=pool_size, seed=seed, targets=[target], student_cache=student_cache,
                        student_settings=student_settings)
    sources = {SKILLS[s].source for s in TARGETS[target].skills}
    pool = load_samples(world.pool, world.image_root)
    chosen = [s for s in pool if s.source in sources][:n_train]
    generic = load_samples(world.generic)
    # Replay: generic-skill pool samples (the loop replays what the student already knows the same way).
    replay_pool = [s for s in pool if s.source in {SKILLS[g].source for g in _generic()}]
    _, test = world.targets[target]
    test_samples = load_samples(test)

    def measure(student) -> dict:
        t = evaluate(student, test_samples, test.parent, progress=False).summary
        g = evaluate(student, generic, world.generic.parent, progress=False).summary
        return {"target": round(t["accuracy"], 3), "generic": round(g["accuracy"], 3),
                "generic_by_source": {k: round(v["accuracy"], 3) for k, v in g["by_source"].items()}}

    student = load_student(world.student, device="cpu")
    before = measure(student)
    config = LoraTrainConfig(lr=lr, epochs=epochs, train_projector=True, replay_ratio=replay, seed=seed)
    started = time.perf_counter()
    report = train_lora(student, chosen, world.image_root, config, out / f"adapter-{target}", replay=replay_pool,
                        progress=True)
    seconds = time.perf_counter() - started
    after = measure(student)
    result = {"target": target, "n_selected": len(chosen), "n_replay": report.n_replay,
              "noisy_selected": sum(1 for s in chosen if getattr(s, "noise", None)),
              "train_seconds": round(seconds, 1), "config": config.model_dump(exclude={"target"}),
              "before": before, "after": after}
    (out / f"check-{target}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _generic() -> tuple[str, ...]:
    from tutorloop.demo.world import GENERIC_SKILLS

    return GENERIC_SKILLS


if __name__ == "__main__":
    raise SystemExit(main())
