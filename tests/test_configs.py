"""Every method's settings are documented where they are declared: the CLI's flags and the window's forms
are made from the field docstrings."""

import argparse
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from engine.core.config import INTERNAL, add_config_arguments, config_from_args, field_docs, undocumented_fields

ENGINE = Path(__file__).resolve().parents[1] / "engine"


def _engine_configs():
    for path in sorted(ENGINE.rglob("*.py")):
        name = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == name \
                    and obj.__name__.endswith("Config"):
                yield obj


def test_every_config_field_has_a_docstring():
    configs = list(_engine_configs())
    assert len(configs) >= 10
    missing = {c.__qualname__: undocumented_fields(c) for c in configs if undocumented_fields(c)}
    assert not missing, missing


def test_field_docs_reads_the_string_under_each_field_and_collapses_whitespace():
    @dataclasses.dataclass
    class Example:
        plain: int = 1
        """one line"""
        wrapped: float = 2.0
        """first line
        second line"""
        bare: str = "x"

    docs = field_docs(Example)
    assert docs == {"plain": "one line", "wrapped": "first line second line"}
    assert undocumented_fields(Example) == ["bare"]


@dataclasses.dataclass
class _Settings:
    """A config as a method declares one."""

    target: str
    """where the result goes"""
    steps: int = 100
    """optimisation steps"""
    scale: float | None = None
    """size of the thing, 50% by default"""
    mirror: bool = False
    """whether to mirror it"""
    chunk: int = dataclasses.field(default=1024, metadata=INTERNAL)
    """batch size"""


def test_config_flags_come_from_the_fields_and_their_docstrings():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _Settings)
    help_text = " ".join(parser.format_help().split())
    assert "--steps STEPS optimisation steps (default 100)" in help_text
    assert "--scale SCALE size of the thing, 50% by default" in help_text  # a literal % survives argparse
    assert "--mirror, --no-mirror" in help_text and "--chunk" not in help_text  # internal knobs are not offered
    with pytest.raises(SystemExit):
        parser.parse_args([])  # the field without a default is required
    cfg = config_from_args(_Settings, parser.parse_args(["--target", "out", "--scale", "0.5", "--mirror"]))
    assert cfg == _Settings(target="out", steps=100, scale=0.5, mirror=True, chunk=1024)
    assert config_from_args(_Settings, parser.parse_args(["--target", "x"]), steps=7).steps == 7
