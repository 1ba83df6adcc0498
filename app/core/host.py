"""What a workspace may ask of the window that hosts it (napari's habit: a layer's controls talk to the viewer
through a small interface, not to the whole window).  A workspace runs its jobs, marks the project changed and
reports errors through this, and knows nothing else of the window or of the other workspaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from engine.core.jobs import CancelToken, Job, Preview


class WorkspaceHost(Protocol):
    """The window, as a workspace sees it."""

    def run_job(self, kind: str, title: str, make_job: Callable[["CancelToken"], "Job"], lanes: frozenset[str],
                on_done: Callable[[bool], None] | None = None,
                on_preview: Callable[["Preview"], None] | None = None) -> Any:
        """Start ``make_job`` on a worker thread with its own row in the Jobs panel; the JobRunner, or None (and
        the user told why) while another job holds one of ``lanes`` (app.core.jobs)."""

    def holding(self, lane: str) -> str:
        """The kind of the job holding ``lane`` ("" when none)."""

    def jobs_running(self) -> int:
        """How many jobs run now (a workspace renders smaller frames while the CPU is shared)."""

    def cancel(self, lane: str) -> None:
        """Cancel the job holding ``lane``, if any (it saves its work and stops)."""

    def save_project(self) -> bool:
        """Write the open project's state now (False: it could not be written, and the user was told)."""

    def engine_ready(self) -> bool:
        """The engine's modules are imported (after the window's background warm-up); before, importing one on
        the UI thread would stall it."""

    def mark_dirty(self) -> None:
        """The open project changed (its title shows it; Save and autosave write it)."""

    def show_error(self, message: str, details: str = "") -> None:
        """Tell the user something went wrong (``details``: a traceback, shown on request)."""

    def show_status(self, message: str, timeout_ms: int = 0) -> None:
        """A line in the status bar (``timeout_ms`` 0: until replaced)."""
