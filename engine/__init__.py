"""Retouch3D engine: torch + numpy only. Never imports Qt or the app package."""

from engine.core.threads import prefer_passive_waiting

prefer_passive_waiting()  # before anything imports torch

from engine.core.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()
