"""The coalescing worker behind the scene viewport and the portrait workspace: the newest request
of each kind runs, kinds in priority order, failures reported without stopping it, stop is final."""

from __future__ import annotations

import threading

import pytest

from app.coalescing import LatestRequestWorker


def test_newest_request_wins_and_priority_kinds_go_first():
    started, gate, done = threading.Event(), threading.Event(), threading.Event()
    handled: list[tuple[str, object]] = []

    def handle(kind: str, request: object) -> None:
        if request == "first":
            started.set()
            gate.wait(5)  # hold the worker while more requests arrive
        handled.append((kind, request))
        if request == "last":
            done.set()

    worker = LatestRequestWorker("test", handle, lambda kind, exc: None, kinds=("load", "frame"))
    worker.submit("frame", "first")
    assert started.wait(5)
    for i in range(5):
        worker.submit("frame", f"frame {i}")
    worker.submit("frame", "last")
    worker.submit("load", "model")
    gate.set()
    assert done.wait(5)
    assert handled == [("frame", "first"), ("load", "model"), ("frame", "last")]
    worker.stop()


def test_failures_are_reported_and_stop_is_final():
    errors: list[tuple[str, str]] = []
    failed, handled = threading.Event(), threading.Event()

    def handle(kind: str, request: object) -> None:
        if request == "bad":
            raise RuntimeError("boom")
        handled.set()

    worker = LatestRequestWorker("test", handle, lambda kind, exc: (errors.append((kind, str(exc))), failed.set()))
    worker.submit("request", "bad")
    assert failed.wait(5) and errors == [("request", "boom")]
    worker.submit("request", "good")  # the worker goes on after a failure
    assert handled.wait(5)
    worker.stop()
    worker.stop()  # idempotent
    assert worker.stopped
    handled.clear()
    worker.submit("request", "good")  # ignored after stop
    assert not handled.wait(0.2)
    with pytest.raises(ValueError, match="unknown request kind"):
        worker.submit("pick", None)
