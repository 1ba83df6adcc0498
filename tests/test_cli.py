"""The command line is made from the configs and registries: every command in --help, every documented setting of
training and editing as a flag with its docstring, every export kind and its settings in ``export --help``; and
--help stays fast (no torch)."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import commands
from engine.core.config import field_docs, settable_fields
from engine.export import EXPORTS

ROOT = Path(__file__).resolve().parents[1]


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("argv, names", [((), [*commands(), "portrait"]), (("portrait",), [*commands("portrait")])],
                         ids=["top", "portrait"])
def test_help_lists_every_command_without_loading_torch(argv, names):
    proc = _main("-X", "importtime", "main.py", *argv, "--help")
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in names)
    assert not [line for line in proc.stderr.splitlines() if line.rstrip().endswith("| torch")]


def test_export_help_offers_every_kind_and_its_settings_with_their_docs():
    proc = _main("main.py", "export", "--help")
    text = " ".join(proc.stdout.split())
    for kind in EXPORTS.values():
        assert kind.name in text
        if kind.options is not None:
            docs = field_docs(kind.options)
            for field, _ in settable_fields(kind.options):
                assert f"--{field.name.replace('_', '-')}" in text
                assert " ".join(docs[field.name].split()[:4]) in text


@pytest.mark.parametrize("command, config, skipped", [
    ("train", "engine.scene.trainer:TrainConfig", {"out", "preview_every_s"}),
    ("edit", "engine.editing.idu:EditConfig", {"project"}),
])
def test_training_and_editing_offer_every_setting_of_their_config(command, config, skipped):
    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    text = " ".join(_main("main.py", command, "--help").stdout.split())
    docs = field_docs(cls)
    for field, _ in settable_fields(cls):
        if field.name not in skipped:
            assert f"--{field.name.replace('_', '-')}" in text and " ".join(docs[field.name].split()[:3]) in text


def test_the_demo_refuses_an_instruction_before_it_writes_or_trains_anything(tmp_path, capsys):
    from engine.cli import main

    assert main(["demo", "--headless", "--out", str(tmp_path / "demo"), "--instruction", "asdf qwer"]) == 2
    assert "the offline editor does not understand 'asdf qwer'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
