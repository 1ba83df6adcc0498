"""Documented configs: a method's settings are a dataclass whose every field carries a docstring, the
string literal under it (nerfstudio's habit).  The command line's flags and the window's forms are made
from these, so a setting is described in one place."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import shlex
import textwrap
import types
import typing
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls`` (its bases' too), whitespace collapsed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # defined where no source is kept (an interactive session)
            continue
        body = ast.parse(source).body[0].body
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def undocumented_fields(cls: type) -> list[str]:
    """Fields of dataclass ``cls`` without a docstring."""
    docs = field_docs(cls)
    return [f.name for f in dataclasses.fields(cls) if f.name not in docs]


INTERNAL = {"internal": True}
"""field metadata of a speed or memory knob that is neither a flag nor a form field (``field(metadata=INTERNAL)``)"""


def _scalar_type(annotation: Any) -> type | None:
    """int, float, str or bool for a field annotated so (or ``X | None``); None for anything else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, str, bool) else None


def settable_fields(cls: type) -> list[tuple[dataclasses.Field, type]]:
    """The fields of ``cls`` a user sets (flags, form fields): scalars that are not ``INTERNAL``, with their type."""
    hints = typing.get_type_hints(cls)
    return [(f, kind) for f in dataclasses.fields(cls)
            if f.init and not f.metadata.get("internal") and (kind := _scalar_type(hints[f.name])) is not None]


def recipe_command(cfg: Any, command: str) -> str:
    """The command that runs ``cfg`` again, ``python main.py {command}`` with its folder as DIR: its budget
    (``steps`` when set, else ``minutes``), each other setting a flag gives that differs from its default, and its
    seed (a training's recipe.json also records the whole config)."""
    budget = "steps" if getattr(cfg, "steps", None) is not None else "minutes"  # steps win over a time budget
    words = [f"python main.py {command} --out DIR"]
    for f, kind in sorted(settable_fields(type(cfg)), key=lambda field_kind: field_kind[0].name == "seed"):
        value = getattr(cfg, f.name)
        if f.name == "out" or value is None or f.name in ("steps", "minutes") and f.name != budget \
                or value == f.default and f.name not in (budget, "seed"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            words.append(flag if value else "--no-" + flag[2:])
        elif kind is float:
            words.append(f"{flag} {value:g}" if float(f"{value:g}") == value else f"{flag} {float(value)!r}")
        else:
            words.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(words)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                         help_prefix: str = "") -> None:
    """A ``--flag`` for each settable field of ``cls``: its docstring (and default) as the help, its type;
    fields without a default are required.  Flags not given stay out of the parsed namespace, so
    ``config_from_args`` leaves the config's own default in place."""
    docs = field_docs(cls)
    for f, kind in settable_fields(cls):
        if f.name in skip:
            continue
        default = _default(f)
        text = help_prefix + docs.get(f.name, "")
        if default not in (dataclasses.MISSING, None, ""):
            text += f" (default {default})"
        options: dict[str, Any] = {"dest": f.name, "help": text.replace("%", "%%"), "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["metavar"] = f.name.upper()
        choices = f.metadata.get("choices")
        if choices is not None:
            options["choices"] = tuple(choices)
            if isinstance(choices, dict) and all(isinstance(v, str) for v in choices.values()):  # what each means
                options["help"] += "; " + "; ".join(f"{k}: {v}" for k, v in choices.items()).replace("%", "%%")
        if default is dataclasses.MISSING:
            options["required"] = True
        parser.add_argument("--" + f.name.replace("_", "-"), **options)


def config_from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls`` with the flags given on the command line, ``values`` on top, its defaults for the rest."""
    given = {f.name: getattr(args, f.name) for f, _ in settable_fields(cls) if hasattr(args, f.name)}
    return cls(**(given | values))


def subcommands(commands: dict[str, tuple[str, Any, Any]], dest: str) -> tuple[Any, Any]:
    """(add, run) of a command made of ``commands`` (name → (summary, function adding its flags, function running
    it)): ``add(parser)`` declares them, ``run(args)`` runs the one given."""
    def add(parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest=dest, required=True)
        for name, (summary, add_flags, _) in commands.items():
            add_flags(sub.add_parser(name, help=summary))

    def run(args: argparse.Namespace) -> int:
        return commands[getattr(args, dest)][2](args)

    return add, run
