"""The loop as a LangGraph graph. This module only wires the nodes of agents/nodes.py.

    evaluate → decide ─┬─► plan → select → train ─► evaluate
                       └─► END

``plan`` asks the selector for the round's gaps (the teacher's diagnoses, or the failures themselves),
``select`` for the samples (retrieval + re-rank, or a uniform draw) plus known-skill replay.

``decide`` follows ``evaluate`` (not ``train``) because every stop rule — target met, no gain — needs
the accuracy after the round's training, and the final round's evaluation is wanted anyway.
A SQLite checkpointer with ``durability="sync"`` and thread id = run id makes a killed run resumable:
the next ``invoke(None, ...)`` re-runs the interrupted node, which skips work already on disk.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from tutorloop.agents import nodes
from tutorloop.agents.runtime import Runtime

# Closes a deserialisation hole of the checkpointer (notes.md); set before any checkpoint is read.
os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")


def build_graph(runtime: Runtime, checkpointer: SqliteSaver | None = None):
    graph = StateGraph(nodes.LoopState)
    for name, node in (("evaluate", nodes.evaluate), ("decide", nodes.decide), ("plan", nodes.plan),
                       ("select", nodes.select), ("train", nodes.train)):
        graph.add_node(name, functools.partial(node, loop=runtime))
    graph.add_edge(START, "evaluate")
    graph.add_edge("evaluate", "decide")
    graph.add_conditional_edges("decide", nodes.route_after_decide, {"plan": "plan", "end": END})
    graph.add_edge("plan", "select")
    graph.add_edge("select", "train")
    graph.add_edge("train", "evaluate")
    return graph.compile(checkpointer=checkpointer)


@contextmanager
def checkpointer_at(path) -> Iterator[SqliteSaver]:
    connection = sqlite3.connect(str(path), check_same_thread=False)
    try:
        yield SqliteSaver(connection)
    finally:
        connection.close()


def run_loop(runtime: Runtime, run_id: str) -> dict:
    """Start the run, or resume it where it stopped when its checkpoint says it is unfinished."""
    with checkpointer_at(runtime.run_dir.checkpoints) as saver:
        graph = build_graph(runtime, saver)
        thread = {"configurable": {"thread_id": run_id}, "recursion_limit": 10 + 6 * runtime.config.rounds}
        snapshot = graph.get_state(thread)
        # Pending tasks mean it stopped mid-step. Not ``snapshot.next``: a task that finished and saved its
        # writes just before the kill, with the next checkpoint not yet written, is left out of ``next``.
        if snapshot.tasks:
            return graph.invoke(None, thread, durability="sync")
        if snapshot.values:
            return snapshot.values  # finished earlier: nothing to do
        return graph.invoke({"round": 0, "stop_reason": None}, thread, durability="sync")
