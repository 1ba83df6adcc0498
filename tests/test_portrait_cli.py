"""``python main.py portrait``: its methods come from the registry (``train-prior`` trains a prior from its flags
and says where it wrote it, and its recipe's command gives the same settings back); ``import-eg3d`` converts a
checkpoint once, refuses unsafe or unfitting ones."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from eg3d_pickles import write_live3d_pth, write_official_pickle
from tiny_portrait import frontal_label, tiny_kwargs

from engine.cli import build_parser, main
from engine.core.config import config_from_args, field_docs, recipe_command, settable_fields
from engine.methods import METHODS
from engine.portrait.checkpoints import GENERATOR_FILE, META_FILE
from engine.portrait.eg3d import build_generator, load_generator
from engine.portrait.prior import PriorConfig, load_prior


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_portrait_lists_its_registered_methods_then_its_tools_and_the_top_level_only_the_scene(capsys):
    portraits = [name for name, m in METHODS.items() if m.workspace == "portrait"]
    assert "train-prior" in portraits
    text = _help("portrait", capsys=capsys)
    from engine.portrait.cli import TOOLS

    assert f"{{{','.join([*portraits, *TOOLS])}}}" in text
    assert f"train-prior {METHODS['train-prior'].summary}" in text
    top = _help(capsys=capsys)
    assert "portrait" in top and not any(name in top for name in portraits)


def test_train_prior_offers_its_config_settings_with_their_docs_but_not_the_internal_ones(capsys):
    text = _help("portrait", "train-prior", capsys=capsys)
    docs = field_docs(PriorConfig)
    for field, _ in settable_fields(PriorConfig):
        assert f"--{field.name.replace('_', '-')}" in text and " ".join(docs[field.name].split()[:4]) in text
    assert "--out OUT folder for the prior (generator.safetensors, meta.json, recipe.json)" in text
    assert "--minutes MINUTES training time budget (default 60.0)" in text and "--seed SEED seeds" in text
    assert "--generator-kwargs" not in text and "--betas" not in text
    with pytest.raises(SystemExit):
        main(["portrait", "train-prior", "--minutes", "1"])  # --out is required
    assert "the following arguments are required: --out" in capsys.readouterr().err


def _settings(command: str, out) -> PriorConfig:
    """The config a recipe's command line gives, its folder ``out``."""
    argv = command.removeprefix("python main.py ").replace("DIR", str(out)).split()
    return config_from_args(PriorConfig, build_parser("portrait", "train-prior").parse_args(argv))


def test_train_prior_trains_from_its_flags_and_says_where(tmp_path, capsys):
    flags = ["--steps", "2", "--batch", "1", "--pool-heads", "1", "--refresh-per-step", "1", "--rays-per-view", "16",
             "--neural-resolution", "16", "--sr-every", "2", "--seed", "3"]
    assert main(["portrait", "train-prior", "--out", str(tmp_path / "prior"), *flags]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"wrote weights: {tmp_path / 'prior' / GENERATOR_FILE}" in printed
    assert len(printed) == len(set(printed))  # each file once, however often a checkpoint was written
    assert load_prior(tmp_path / "prior").neural_rendering_resolution == 16
    recipe = json.loads((tmp_path / "prior" / "recipe.json").read_text())
    assert recipe["steps"] == 2 and recipe["seed"] == 3
    assert sorted(recipe["command"].split()[6:]) == sorted(flags)
    assert _settings(recipe["command"], tmp_path / "prior") == PriorConfig(str(tmp_path / "prior"), **{
        name: int(value) for name, value in zip((f[2:].replace("-", "_") for f in flags[::2]), flags[1::2])})


def test_the_recipes_command_gives_its_settings_back():
    assert recipe_command(PriorConfig("x", minutes=128), "portrait train-prior") == \
        "python main.py portrait train-prior --out DIR --minutes 128 --seed 0"  # as the shipped prior was made
    cfg = PriorConfig("x", steps=7, lr=0.0012345678, image_weight=0.5, checkpoint_every_s=1e9, seed=4)
    assert recipe_command(cfg, "portrait train-prior") == (
        "python main.py portrait train-prior --out DIR --steps 7 --lr 0.0012345678 --image-weight 0.5 "
        "--checkpoint-every-s 1e+09 --seed 4")
    assert _settings(recipe_command(cfg, "portrait train-prior"), "x") == cfg


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
