"""``python main.py portrait import-eg3d``: converts a checkpoint once, refuses unsafe or unfitting ones."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from eg3d_pickles import write_live3d_pth, write_official_pickle
from tiny_portrait import frontal_label, tiny_kwargs

from engine.cli import main
from engine.portrait.checkpoints import GENERATOR_FILE, META_FILE
from engine.portrait.eg3d import build_generator, load_generator


def _tiny_generator(seed: int = 0):
    """A tiny random generator trained on to render at 16²."""
    torch.manual_seed(seed)
    generator = build_generator(tiny_kwargs()).eval()
    generator.neural_rendering_resolution = 16
    return generator


def _import(source, out, *extra: str) -> int:
    return main(["portrait", "import-eg3d", "--from", str(source), "--to", str(out), *extra])


@pytest.mark.parametrize("writer, name", [(write_official_pickle, "network-snapshot.pkl"),
                                          (write_live3d_pth, "ffhqrebalanced.pth")], ids=["pkl", "pth"])
def test_import_converts_once_and_the_result_renders_the_same(tmp_path, capsys, writer, name):
    generator = _tiny_generator()
    assert _import(writer(tmp_path / name, generator, tiny_kwargs()), tmp_path / "out") == 0
    printed = capsys.readouterr().out
    count = sum(p.numel() for p in generator.parameters())
    assert f"{count:,} parameters, 128² images via SuperresolutionHybrid2X, neural rendering at 16²" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [GENERATOR_FILE, META_FILE]
    assert json.loads((tmp_path / "out" / META_FILE).read_text()) == {"generator_kwargs": tiny_kwargs(),
                                                                       "neural_rendering_resolution": 16}
    converted = load_generator(tmp_path / "out")
    assert converted.neural_rendering_resolution == 16
    z, c = torch.randn(1, 16), frontal_label()
    with torch.no_grad():
        expected = generator(z, c, noise_mode="const", deterministic_sampling=True)
        got = converted(z, c, noise_mode="const", deterministic_sampling=True)
    for key in ("image", "image_raw", "image_depth"):
        assert torch.equal(got[key], expected[key]), key


def test_a_checkpoint_that_does_not_fit_its_arguments_is_refused_before_writing(tmp_path, capsys):
    source = write_official_pickle(tmp_path / "snapshot.pkl", _tiny_generator(), tiny_kwargs())
    (tmp_path / "kwargs.json").write_text(json.dumps({"channel_max": 32}))
    assert _import(source, tmp_path / "out", "--generator-kwargs", str(tmp_path / "kwargs.json")) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {source}: its parameters do not fit") and "wrong shape" in error
    assert not (tmp_path / "out").exists()


def test_unreadable_generator_arguments_are_a_one_line_error(tmp_path, capsys):
    source = write_live3d_pth(tmp_path / "g.pth", _tiny_generator(), tiny_kwargs())
    (tmp_path / "kwargs.json").write_text("[1, 2]")
    assert _import(source, tmp_path / "out", "--generator-kwargs", str(tmp_path / "kwargs.json")) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'kwargs.json'}: the generator arguments must be a JSON " \
                                      "object, not a list\n"
    assert not (tmp_path / "out").exists()


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_asks_to_run_code_is_refused_and_nothing_is_written(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _RunsACommand(marker)}))
    assert _import(tmp_path / "evil.pkl", tmp_path / "out") == 2
    assert capsys.readouterr().err == f"error: refusing to load {tmp_path / 'evil.pkl'}: it asks to run posix.system\n"
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert _import(tmp_path / "none.pkl", tmp_path / "out") == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.pkl'}: file not found\n"
    assert not (tmp_path / "out").exists()
