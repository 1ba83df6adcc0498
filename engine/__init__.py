"""Retouch3D engine: torch + numpy only. Never imports Qt or the app package."""

from engine.core.threads import prefer_short_spinning

prefer_short_spinning()  # before anything imports torch

from engine.core.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()
