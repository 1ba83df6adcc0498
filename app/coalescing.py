"""One worker thread that runs only the newest request of each kind.

Interactive views ask for a render on every mouse move, and a render takes longer than the mouse
takes to move.  Queueing every request would show frames ever further behind the mouse; instead
each kind of request keeps one pending slot, a newer request replaces the one waiting there, and
the worker renders whatever is newest when it gets to it.  Kinds are served in priority order (a
click's pick before the next frame; loading a model before frames of it).  Qt-free: the users
(the scene viewport's RenderService, the portrait workspace) turn results into signals.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class LatestRequestWorker:
    """Runs ``handle(kind, request)`` on one daemon thread for the newest pending request of each kind.

    ``kinds`` lists the request kinds in priority order: when several are pending, the first one in
    this order runs next.  An exception from ``handle`` goes to ``on_error(kind, exc)``, called on the
    worker thread inside the ``except`` block (so ``logging.exception`` there logs the traceback);
    the worker keeps serving requests.  The thread starts with the first request.
    """

    def __init__(self, name: str, handle: Callable[[str, Any], None],
                 on_error: Callable[[str, Exception], None], kinds: tuple[str, ...] = ("request",)) -> None:
        self._name = name
        self._handle = handle
        self._on_error = on_error
        self._kinds = kinds
        self._cond = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def stopped(self) -> bool:
        """Whether ``stop`` was called (results still in flight should then be dropped)."""
        with self._cond:
            return self._stopping

    def submit(self, kind: str, request: Any) -> None:
        """Queue ``request``, replacing any request of the same kind not yet started; ignored after ``stop``."""
        if kind not in self._kinds:
            raise ValueError(f"unknown request kind {kind!r}; this worker serves {', '.join(self._kinds)}")
        with self._cond:
            if self._stopping:
                return
            self._pending[kind] = request
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        """Finish the request in progress, drop pending ones and end the thread (idempotent; waits for it)."""
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or bool(self._pending))
                if self._stopping:
                    return
                kind = next(k for k in self._kinds if k in self._pending)
                request = self._pending.pop(kind)
            try:
                self._handle(kind, request)
            except Exception as exc:  # noqa: BLE001 - a failed request is reported, the worker keeps going
                self._on_error(kind, exc)
