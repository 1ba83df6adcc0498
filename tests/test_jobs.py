"""The job protocol: events reach the consumer in order, cancellation stops between steps."""

import io

from engine.core.jobs import Artifact, CancelToken, JobWarning, Metrics, Progress, TerminalProgress, run_job


def counting_job(n, cancel):
    for i in range(n):
        if cancel.cancelled:
            yield JobWarning(f"cancelled after {i} steps")
            return
        yield Metrics(i, {"value": float(i)})
        yield Progress(i + 1, n, "counting")
    yield Artifact("out.txt", "result")


def test_run_job_passes_events_in_order_and_collects_artifacts():
    seen = []
    artifacts = run_job(counting_job(3, CancelToken()), seen.append)
    assert [type(e).__name__ for e in seen] == ["Metrics", "Progress"] * 3 + ["Artifact"]
    assert [a.kind for a in artifacts] == ["result"]


def test_cancel_from_the_consumer_stops_at_the_next_step():
    token = CancelToken()
    seen = []

    def consumer(ev):
        seen.append(ev)
        if isinstance(ev, Progress) and ev.step == 2:
            token.cancel()

    artifacts = run_job(counting_job(10, token), consumer)
    assert artifacts == [] and seen[-1] == JobWarning("cancelled after 2 steps")


def test_terminal_progress_prints_bar_eta_warnings_and_files():
    out = io.StringIO()
    show = TerminalProgress(out, min_interval=0)
    show(Metrics(1, {"loss": 0.5}))
    show(Progress(5, 10, "training"))
    show(JobWarning("image was grayscale"))
    show(Artifact("x/report.json", "report"))
    text = out.getvalue()
    assert "50.0%" in text and "ETA" in text and "loss=0.5" in text
    assert "warning: image was grayscale" in text and "wrote report: x/report.json" in text
