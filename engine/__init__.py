"""Retouch3D engine: torch + numpy only. Never imports Qt or the app package."""
