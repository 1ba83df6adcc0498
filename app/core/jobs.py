"""Which jobs may run side by side: each job holds lanes (the scene's field, its exports, the portrait
generator); a job waits for no one, it is refused while another job holds one of its lanes.

A training and an export of the same project share nothing a lane guards (the export reads the last
checkpoint, written atomically), so they run together; two jobs that write the scene's field do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCENE, EXPORT, PORTRAIT = "scene", "export", "portrait"
"""the lanes: the open project's field and edits; exports of it; the portrait workspace's generator"""


@dataclass
class RunningJob:
    """A job the window started: what the user calls it, the lanes it holds, its runner."""

    kind: str
    title: str
    lanes: frozenset[str]
    runner: Any  # app.worker.JobRunner (Qt), kept opaque here


class JobLanes:
    """The jobs running now and the lanes they hold."""

    def __init__(self) -> None:
        self.jobs: list[RunningJob] = []

    def blocker(self, lanes: frozenset[str]) -> RunningJob | None:
        """The running job that holds one of ``lanes`` (None: a job needing them may start)."""
        return next((job for job in self.jobs if job.lanes & lanes), None)

    def add(self, job: RunningJob) -> None:
        blocker = self.blocker(job.lanes)
        if blocker is not None:
            raise RuntimeError(f"{job.kind} needs {sorted(job.lanes & blocker.lanes)}, held by {blocker.kind}")
        self.jobs.append(job)

    def remove(self, runner: Any) -> RunningJob | None:
        """Forget the job of ``runner`` (when it ended); the job, or None when it was not here."""
        job = self.of(runner)
        if job is not None:
            self.jobs.remove(job)
        return job

    def of(self, runner: Any) -> RunningJob | None:
        return next((job for job in self.jobs if job.runner is runner), None)

    def holding(self, lane: str) -> RunningJob | None:
        """The job holding ``lane``, if any."""
        return next((job for job in self.jobs if lane in job.lanes), None)

    def kinds(self) -> list[str]:
        return [job.kind for job in self.jobs]

    def __bool__(self) -> bool:
        return bool(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


def refusal(kind: str, blocker: RunningJob) -> str:
    """What the user is told when a ``kind`` job cannot start beside ``blocker``."""
    return (f"Cannot start the {kind} job while the {blocker.kind} job ({blocker.title}) runs; "
            "wait for it or cancel it first.")
