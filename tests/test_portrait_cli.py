"""``python main.py portrait import-eg3d``: converts a checkpoint once, refuses unsafe or unfitting ones."""

from __future__ import annotations

import os
import pickle

import torch
from tiny_portrait import frontal_label, tiny_kwargs

from engine.cli import main
from engine.portrait.eg3d import build_generator, load_generator


def live3d_style_pth(path, seed: int = 0):
    """A generator saved as Live3D / 3DPE do: state dict plus init args, kwargs and resolution."""
    torch.manual_seed(seed)
    generator = build_generator(tiny_kwargs())
    kwargs = tiny_kwargs()
    torch.save({"G": generator.state_dict(), "G_init_args": (), "G_init_kwargs": kwargs,
                "G_neural_rendering_resolution": 16, "G_renderinig_kwargs": kwargs["rendering_kwargs"]}, path)
    return generator.eval()


def test_import_converts_once_and_the_result_renders_the_same(tmp_path, capsys):
    generator = live3d_style_pth(tmp_path / "ffhq.pth")
    assert main(["portrait", "import-eg3d", "--from", str(tmp_path / "ffhq.pth"), "--to", str(tmp_path / "out")]) == 0
    assert "neural rendering at 16²" in capsys.readouterr().out
    converted = load_generator(tmp_path / "out")
    assert converted.neural_rendering_resolution == 16
    z, c = torch.randn(1, 16), frontal_label()
    with torch.no_grad():
        expected = generator(z, c, noise_mode="const", deterministic_sampling=True, neural_rendering_resolution=16)
        got = converted(z, c, noise_mode="const", deterministic_sampling=True)
    assert torch.equal(got["image"], expected["image"])


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_asks_to_run_code_is_refused_and_nothing_is_written(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _RunsACommand(marker)}))
    status = main(["portrait", "import-eg3d", "--from", str(tmp_path / "evil.pkl"), "--to", str(tmp_path / "out")])
    assert status == 2
    error = capsys.readouterr().err
    assert "refusing to load" in error and "it asks to run posix.system" in error
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["portrait", "import-eg3d", "--from", str(tmp_path / "none.pkl"), "--to", str(tmp_path / "o")]) == 2
    assert "none.pkl: file not found" in capsys.readouterr().err
