"""The learning-forgetting front of a round: a probe that is never trained on, operating points chosen under the
forgetting bound, a round that never ends worse than it began."""

from __future__ import annotations

import json

from tutorloop.agents.api import run
from tutorloop.agents.operating_point import choose_point, make_point
from tutorloop.agents.probe import clustered_order
from tutorloop.agents.records import OperatingPoint, RoundFront
from tutorloop.agents.run_dir import DIAGNOSES, EVALS, FRONT, METRICS, PLAN, PROBE, SELECTED, RunDir
from tutorloop.retrieval.index import PoolIndex


def _points(*rows: tuple[float, float, float]) -> list[OperatingPoint]:
    """(alpha, val, retention) rows, the student as given at retention 0.90, a bound of 1 point."""
    return [make_point(a, v, r, 0.90, 1.0) for a, v, r in rows]


def test_the_bound_is_honoured_when_only_a_quarter_meets_it():
    points = _points((0, 0.10, 0.90), (0.25, 0.30, 0.895), (0.5, 0.50, 0.85), (1.0, 0.70, 0.60))
    best, why = choose_point(points)
    assert best.alpha == 0.25 and "2 of 4 points over the forgetting bound" in why
    assert [p.within_bound for p in points] == [True, True, False, False]


def test_no_point_within_the_bound_keeps_the_start():
    best, why = choose_point(_points((0, 0.10, 0.90), (0.5, 0.50, 0.80), (1.0, 0.70, 0.60)))
    assert best.alpha == 0 and "keeps the weights it started from" in why


def test_a_tie_on_val_goes_to_less_forgetting_then_the_stronger_change():
    assert choose_point(_points((0, 0.5, 0.90), (0.5, 0.5, 0.895), (1.0, 0.5, 0.895)))[0].alpha == 0
    assert choose_point(_points((0, 0.4, 0.90), (0.5, 0.5, 0.90), (1.0, 0.5, 0.90)))[0].alpha == 1.0


def test_without_a_retention_split_the_best_val_wins():
    points = [make_point(a, v, None, None, 1.0) for a, v in ((0, 0.1), (0.5, 0.6), (1.0, 0.4))]
    assert choose_point(points)[0].alpha == 0.5 and all(p.forgetting is None for p in points)


def test_the_front_round_trips_through_the_run_directory(tmp_path):
    front = RoundFront(round=2, retention_split="probe", max_forgetting=1.0, chosen=0.25, reason="r", seconds=1.5,
                       points=_points((0, 0.1, 0.9), (0.25, 0.3, 0.895), (1.0, 0.7, 0.6)))
    run = RunDir(tmp_path)
    run.write(2, FRONT, front)
    assert run.read(2, FRONT) == front and run.read(2, FRONT).point(0.25).val_accuracy == 0.3


def test_the_probe_is_spread_over_clusters(tiny_world):
    index = PoolIndex.open(store=tiny_world.store)
    try:
        cluster_of = {p["sample_id"]: p["cluster"] for p in index.payloads(["sample_id", "cluster"])}
        order = list(clustered_order(index, seed=0))
        assert sorted(order) == index.all_ids()
    finally:
        index.close()
    clusters = len(set(cluster_of.values()))
    assert clusters > 1 and len({cluster_of[i] for i in order[:clusters]}) == clusters
    assert order == cluster_order_again(tiny_world), "seeded"


def cluster_order_again(tiny_world) -> list[str]:
    index = PoolIndex.open(store=tiny_world.store)
    try:
        return list(clustered_order(index, seed=0))
    finally:
        index.close()


def test_the_probe_never_enters_a_selection_a_replay_or_an_anchor_draw(tiny_world, loop_config, tmp_path):
    """Half the pool is the probe (written as if drawn, so the random student need not answer it right); every
    draw of the run — the random selector's, known replay's, the anchors' — must go around it."""
    config = loop_config(tiny_world, tmp_path / "run", selector="random", generic=None, budget=40, known_share=0.5,
                         lora={"epochs": 1, "batch_size": 8, "anchor_weight": 1.0, "anchor_samples": 200})
    index = PoolIndex.open(store=tiny_world.store)
    try:
        ids = index.all_ids()
        probe = index.fetch(ids[::2])
    finally:
        index.close()
    run_dir = RunDir(config.out)
    run_dir.write(0, PROBE, probe)
    run(config, run_id="test-probe")
    probe_ids = {s.id for s in probe}
    for n in (1, 2):
        trained = {row.sample.id for row in run_dir.read(n, SELECTED)}
        assert trained and not trained & probe_ids
        assert run_dir.read(n, PLAN).known_ids and not set(run_dir.read(n, PLAN).known_ids) & probe_ids
        anchors = set(json.loads((run_dir.adapter(n) / "training.json").read_text())["anchor_ids"])
        assert anchors and not anchors & probe_ids
        assert len(run_dir.read(n, EVALS["probe"])) == len(probe)
        assert run_dir.read(n, METRICS).probe_accuracy is not None


def test_every_round_keeps_a_point_no_worse_than_its_start(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="random", max_forgetting=0.0,
                         lora={"epochs": 2, "batch_size": 8, "lr": 5e-3})
    summary = run(config, run_id="test-front")
    run_dir = RunDir(config.out)
    for n in (1, 2):
        front, metrics = run_dir.read(n, FRONT), run_dir.read(n, METRICS)
        assert [p.alpha for p in front.points][0] == 0 and front.retention_split == "generic"
        assert metrics.alpha == front.chosen
        assert metrics.val_accuracy == front.point(front.chosen).val_accuracy, "the point kept is the one measured"
        assert metrics.val_accuracy >= run_dir.read(n - 1, METRICS).val_accuracy
        assert metrics.forgetting <= 0.0 + 1e-9
        assert run_dir.seconds(n)["operating_point"] == front.seconds
    assert summary.rounds[-1].forgetting is not None


def test_known_replay_on_top_of_the_budget_leaves_the_gaps_their_whole_share(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="random", known_share=0.5, known_on_top=True)
    summary = run(config, run_id="test-on-top")
    run_dir = RunDir(config.out)
    for n in (1, 2):
        plan, selected = run_dir.read(n, PLAN), run_dir.read(n, SELECTED)
        assert plan.budget == 6 and plan.known == 3
        assert sum(row.why.gap != "known" for row in selected) == 6 and len(selected) == 9
    assert summary.stop_reason == "rounds spent (2)"


def test_a_share_of_the_whole_budget_needs_replay_on_top(tiny_world, loop_config, tmp_path):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="known_on_top"):
        loop_config(tiny_world, tmp_path / "run", known_share=1.0)
    assert loop_config(tiny_world, tmp_path / "run", known_share=1.0, known_on_top=True).known_share == 1.0


def test_a_round_the_teacher_outage_emptied_stops_before_selecting_and_resumes(tiny_world, loop_config,
                                                                                scripted_openai, tmp_path):
    import pytest

    from tutorloop.agents.selectors.teacher import TeacherFailed

    server = scripted_openai.ScriptedOpenAI()
    server.start()
    url, port = server.base_url, int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    server.stop()  # down for good, as far as this round can wait
    config = loop_config(tiny_world, tmp_path / "run", selector="teacher", rounds=1,
                         teacher={"base_url": url, "dialect": "json_schema", "progress": False, "outage_wait_s": 0.5,
                                  "backoff_s": 0.1})
    with pytest.raises(TeacherFailed, match=r"diagnosed 0 of the \d+ failures sent \(\d+ unanswered"):
        run(config, run_id="test-outage")
    run_dir = RunDir(config.out)
    assert not run_dir.has(1, PLAN) and not run_dir.has(1, SELECTED), "nothing selected on an emptied plan"
    server.start(port)
    try:
        summary = run(config, run_id="test-outage")
    finally:
        server.stop()
    assert summary.stop_reason == "rounds spent (1)" and run_dir.read(1, SELECTED)
    assert all(row.diagnosis for row in run_dir.read(1, DIAGNOSES)), "every failure asked again and diagnosed"


def test_a_pool_smaller_than_the_budget_is_said(tiny_world, loop_config, tmp_path):
    config = loop_config(tiny_world, tmp_path / "run", selector="random", rounds=1, budget=1000)
    summary = run(config, run_id="test-short")
    row = summary.rounds[0]
    assert row.short and row.selected + row.short == 1000


def test_a_lucky_guess_is_not_probed():
    """A right answer in a cluster the student mostly gets wrong would flip with any training and read as
    forgetting: only the right answers of clusters it mostly answers right make the probe."""
    from tutorloop.agents.probe import _known_right
    from tutorloop.retrieval.records import Sample

    def sample(i: int) -> Sample:
        return Sample.model_validate({"id": f"s{i}", "conversations": [{"from": "human", "value": "q"},
                                                                       {"from": "gpt", "value": "a"}]})

    answered = [(sample(i), i != 3) for i in range(4)] + [(sample(i), i == 4) for i in range(4, 8)]
    clusters = {f"s{i}": 0 if i < 4 else 1 for i in range(8)}
    assert [s.id for s in _known_right(answered, clusters)] == ["s0", "s1", "s2"]
