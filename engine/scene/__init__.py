"""Captured scenes: datasets, radiance-field models, trainer and renderers."""
