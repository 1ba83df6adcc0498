"""Retouch3D engine: torch + numpy only. Never imports Qt or the app package."""

from engine.allocator import keep_freed_memory

keep_freed_memory()
