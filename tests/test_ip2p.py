"""InstructPix2Pix editor and loader, end to end on a tiny random pipeline (tests/tiny_ip2p.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline
from tiny_ip2p import write_tiny_ip2p

from engine.cli import main as cli_main
from engine.core.devices import check_device
from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import Cancelled, CancelToken
from engine.editors import ip2p
from engine.editors.base import Guidance, edit_image
from engine.editing.idu import EditConfig
from engine.editors.ip2p import InstructPix2PixEditor, in2n_timesteps, load_ip2p, working_size
from engine.editors.sources import DEFAULT_HUB_ID, OFFLOAD_MISSING

INSTRUCTION = "make it bronze"
TEXT, IMAGE, UNCOND = 0.3, -0.2, 0.1
"""what the stand-in UNet predicts for the text branch, the image-only branch and the unconditional branch"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models gain nothing from threads, and on a shared small machine two spinning OpenMP threads
    competing with another process make every edit many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_ip2p(tmp_path_factory.mktemp("ip2p") / "tiny-ip2p")


@pytest.fixture
def editor(tiny_folder) -> InstructPix2PixEditor:
    return load_ip2p(tiny_folder)


def image(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


def clip_embedding(editor: InstructPix2PixEditor, text: str) -> torch.Tensor:
    ids = editor.tokenizer(text, padding="max_length", max_length=editor.tokenizer.model_max_length,
                           return_tensors="pt").input_ids
    with torch.no_grad():
        return editor.text_encoder(ids)[0][0]


def in2n_scheduler(editor: InstructPix2PixEditor, top: int, steps: int) -> DDIMScheduler:
    """A private DDIM scheduler set up the way Instruct-NeRF2NeRF's code sets up its shared one (its diffusers
    spaced DDIM steps 'leading', the only spacing it had; the folder's Euler config says 'linspace')."""
    scheduler = DDIMScheduler.from_config(editor.pipe.scheduler.config, timestep_spacing="leading")
    scheduler.register_to_config(num_train_timesteps=top)  # IN2N assigns T to the config after construction
    scheduler.set_timesteps(steps)
    return scheduler


class BranchUNet(torch.nn.Module):
    """Stands in for the UNet: a known constant for each guidance branch, told apart by its own inputs
    (the instruction's embedding or not, conditioning-image latents or zeros); records every call."""

    def __init__(self, text_embedding: torch.Tensor) -> None:
        super().__init__()
        self.text_embedding = text_embedding
        self.calls: list[dict] = []

    def forward(self, sample: torch.Tensor, timestep: int, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        self.calls.append(dict(sample=sample.clone(), timestep=int(timestep), text=encoder_hidden_states.clone(),
                               grad=torch.is_grad_enabled()))
        values = []
        for latents, text in zip(sample, encoder_hidden_states):
            has_text = torch.allclose(text, self.text_embedding, atol=1e-6)
            has_image = bool(latents[4:].abs().sum() > 0)
            values.append({(True, True): TEXT, (False, True): IMAGE, (False, False): UNCOND}[(has_text, has_image)])
        return SimpleNamespace(sample=torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 4, *sample.shape[2:]))


@pytest.fixture
def stand_in(editor) -> BranchUNet:
    editor.unet = BranchUNet(clip_embedding(editor, INSTRUCTION))
    return editor.unet


def test_loader_builds_a_float32_ddim_editor_on_cpu(editor):
    assert isinstance(editor.pipe.scheduler, DDIMScheduler)  # the folder ships Euler ancestral, as the real one does
    assert editor.pipe.safety_checker is None
    assert editor.dtype == torch.float32 and editor.device == torch.device("cpu")
    assert editor.size_multiple == 8  # the tiny VAE downsamples 8x, as Stable Diffusion's does
    assert editor.notes == []


def test_ddim_gets_in2n_options_the_folder_config_lacks(tiny_folder, editor):
    shipped = json.loads((tiny_folder / "scheduler" / "scheduler_config.json").read_text())
    assert {"clip_sample", "set_alpha_to_one"}.isdisjoint(shipped) and shipped["steps_offset"] == 0
    config = editor.pipe.scheduler.config
    assert (config.clip_sample, config.set_alpha_to_one, config.steps_offset) == (False, False, 1)
    assert editor.clip_range is None and editor.steps_offset == 1
    assert editor.final_alpha_cumprod == editor.alphas_cumprod[0]  # set_alpha_to_one=False


@pytest.mark.parametrize("t, first, stride, count", [(0.5, 476, 25, 20), (1.0, 951, 50, 20), (0.02, 20, 1, 20),
                                                     (0.0, 1, 1, 1), (0.011, 11, 1, 11)])
def test_timesteps_are_spaced_over_zero_to_t_as_in2n(editor, t, first, stride, count):
    timesteps, got_stride = in2n_timesteps(t, 20, 1000, 1)
    assert (timesteps[0], got_stride, len(timesteps)) == (first, stride, count)
    assert timesteps[-1] == 1 and all(a - b == stride for a, b in zip(timesteps, timesteps[1:]))
    assert timesteps == in2n_scheduler(editor, int(t * 1000) or 1, count).timesteps.tolist()


@pytest.mark.parametrize("text, image_scale", [(7.5, 1.5), (2.0, 0.5)])
def test_guidance_combines_the_three_branches(editor, stand_in, text, image_scale):
    editor.edit(image(64, 64, 0), image(64, 64, 1), INSTRUCTION, 0.5, seed=0,
                guidance=Guidance(text=text, image=image_scale, steps=4))
    expected = UNCOND + text * (TEXT - IMAGE) + image_scale * (IMAGE - UNCOND)
    reference = in2n_scheduler(editor, 500, 4)
    for call, following in zip(stand_in.calls, stand_in.calls[1:]):
        latents = call["sample"][:1, :4]
        stepped = reference.step(torch.full_like(latents, expected), call["timestep"], latents).prev_sample
        torch.testing.assert_close(following["sample"][:1, :4], stepped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"prediction_type": "v_prediction"}, {"clip_sample": True}])
def test_denoising_matches_diffusers_ddim_with_in2n_spacing(editor, stand_in, options):
    editor.pipe.scheduler = DDIMScheduler.from_config(editor.pipe.scheduler.config, **options)
    modified = InstructPix2PixEditor(editor.pipe)
    modified.unet = stand_in
    decoded = []
    modified.vae.post_quant_conv.register_forward_pre_hook(lambda _, args: decoded.append(args[0].clone()))
    modified.edit(image(64, 64, 0), image(64, 64, 1), INSTRUCTION, 0.3, seed=0, guidance=Guidance(steps=5))
    reference = in2n_scheduler(modified, 300, 5)
    eps = UNCOND + 7.5 * (TEXT - IMAGE) + 1.5 * (IMAGE - UNCOND)
    assert [call["timestep"] for call in stand_in.calls] == reference.timesteps.tolist() == [241, 181, 121, 61, 1]
    latents = stand_in.calls[0]["sample"][:1, :4]
    for call in stand_in.calls:
        torch.testing.assert_close(call["sample"][:1, :4], latents, rtol=1e-5, atol=1e-5)
        latents = reference.step(torch.full_like(latents, eps), call["timestep"], latents).prev_sample
    torch.testing.assert_close(decoded[0] * modified.vae.config.scaling_factor, latents, rtol=1e-5, atol=1e-5)
    assert editor.pipe.scheduler.config.num_train_timesteps == 1000  # the shared config is never touched


def test_original_conditions_and_render_is_noised(editor, stand_in):
    render, original = image(64, 64, 0), image(64, 64, 1)
    editor.edit(render, original, INSTRUCTION, 0.5, seed=7, guidance=Guidance(steps=2))
    first = stand_in.calls[0]
    with torch.no_grad():
        generator = torch.Generator().manual_seed(7)
        render_latents = editor.vae.encode(render.permute(2, 0, 1)[None] * 2 - 1).latent_dist.sample(generator)
        noise = torch.randn(render_latents.shape, generator=generator)
        original_mode = editor.vae.encode(original.permute(2, 0, 1)[None] * 2 - 1).latent_dist.mode()
    noised = in2n_scheduler(editor, 500, 2).add_noise(render_latents * editor.vae.config.scaling_factor, noise,
                                                      torch.tensor([first["timestep"]]))
    assert first["timestep"] == 251
    for branch in range(3):
        torch.testing.assert_close(first["sample"][branch, :4], noised[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first["sample"][0, 4:], original_mode[0])  # the VAE mode, unscaled
    torch.testing.assert_close(first["sample"][1, 4:], original_mode[0])
    assert torch.count_nonzero(first["sample"][2, 4:]) == 0
    uncond = clip_embedding(editor, "")
    for got, want in zip(first["text"], (clip_embedding(editor, INSTRUCTION), uncond, uncond)):
        torch.testing.assert_close(got, want)
    assert not any(call["grad"] for call in stand_in.calls)


def test_small_t_keeps_the_render_and_t_one_repaints_it(editor):
    render = image(64, 64, 0)
    with torch.no_grad():  # what the VAE alone makes of the render, with the edit's own latent sample
        latents = editor.vae.encode(render.permute(2, 0, 1)[None] * 2 - 1).latent_dist.sample(
            torch.Generator().manual_seed(3))
        round_trip = (editor.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0)
    change = {t: (editor.edit(render, render, INSTRUCTION, t, seed=3) - round_trip).abs().mean().item()
              for t in (0.0, 1.0)}
    assert change[0.0] < 0.1 * change[1.0]
    assert change[1.0] > 0.05


def test_odd_sizes_come_back_at_their_size_in_range(editor):
    seen = []
    editor.vae.encoder.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    out = editor.edit(image(50, 37, 0), image(50, 37, 1), INSTRUCTION, 0.7, seed=0, guidance=Guidance(steps=3))
    assert out.shape == (50, 37, 3) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0
    assert seen == [(48, 40), (48, 40)]


def test_large_inputs_are_edited_at_most_512_and_resized_back(editor):
    seen = []
    editor.vae.encoder.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    out = edit_image(editor, image(600, 520, 0), INSTRUCTION, seed=0, guidance=Guidance(steps=2))
    assert out.shape == (600, 520, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert seen[0] == (512, 440)  # 600x520 scaled by 512/600, rounded to multiples of 8


def test_16_by_9_footage_keeps_its_aspect_ratio(editor):
    seen = []
    editor.vae.encoder.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    out = editor.edit(image(360, 640, 0), image(360, 640, 1), INSTRUCTION, 0.5, seed=0, guidance=Guidance(steps=2))
    assert out.shape == (360, 640, 3)
    assert seen == [(288, 512), (288, 512)]  # 16:9 exactly, not 2:1


@pytest.mark.parametrize("size, multiple, expected", [((512, 512), 8, (512, 512)), ((1080, 1920), 8, (288, 512)),
                                                      ((720, 1280), 8, (288, 512)), ((1920, 1080), 8, (512, 288)),
                                                      ((20, 900), 8, (8, 512)), ((50, 37), 8, (48, 40)),
                                                      ((1080, 1920), 64, (256, 512))])
def test_working_size(size, multiple, expected):
    assert working_size(*size, multiple) == expected


def test_each_denoising_step_is_reported_with_where_the_edit_heads(editor):
    """diffusers' callback_on_step_end habit: a slow edit reports its steps; the preview is decoded on demand."""
    steps = []
    out = editor.edit(image(40, 48, 0), image(40, 48, 1), INSTRUCTION, 0.7, seed=3, guidance=Guidance(steps=4),
                      on_step=steps.append)
    assert [(s.step, s.total) for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # IN2N: all steps over [0, t]
    heading = steps[1].preview()
    assert heading.shape == (40, 48, 3) and 0 <= heading.min() and heading.max() <= 1
    assert torch.equal(out, editor.edit(image(40, 48, 0), image(40, 48, 1), INSTRUCTION, 0.7, seed=3,
                                        guidance=Guidance(steps=4)))  # listening changes nothing


def test_a_session_loads_the_model_once_per_settings(tiny_folder):
    from engine.editors import EDITORS, forget_loaded_editors

    settings = SimpleNamespace(model=str(tiny_folder), model_config=None, device="cpu", memory="default",
                               precision="full")
    try:
        first = EDITORS["ip2p"].build(settings)
        assert EDITORS["ip2p"].build(settings) is first  # previews and edits reuse the loaded pipeline
        stat = tiny_folder.stat()
        os.utime(tiny_folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert EDITORS["ip2p"].build(settings) is not first  # weights replaced on disk are read again
    finally:
        forget_loaded_editors()


def test_same_seed_same_edit_other_seed_other_edit(editor):
    render, original = image(40, 64, 0), image(40, 64, 1)
    steps = Guidance(steps=4)
    first = editor.edit(render, original, INSTRUCTION, 0.8, seed=11, guidance=steps)
    assert torch.equal(first, editor.edit(render, original, INSTRUCTION, 0.8, seed=11, guidance=steps))
    assert (first - editor.edit(render, original, INSTRUCTION, 0.8, seed=12, guidance=steps)).abs().max() > 1e-3


def test_cancel_stops_between_denoising_steps(editor, stand_in):
    token = CancelToken()
    unet_forward = stand_in.forward

    def cancel_after_two(*args, **kwargs):
        if len(stand_in.calls) == 1:
            token.cancel()
        return unet_forward(*args, **kwargs)

    stand_in.forward = cancel_after_two
    with pytest.raises(Cancelled):
        editor.edit(image(64, 64, 0), image(64, 64, 1), INSTRUCTION, 1.0, seed=0, cancel=token)
    assert len(stand_in.calls) == 2
    with pytest.raises(Cancelled):
        editor.edit(image(64, 64, 0), image(64, 64, 1), INSTRUCTION, 1.0, seed=0, cancel=token)
    assert len(stand_in.calls) == 2  # an already cancelled token runs no step


def test_text_embeddings_are_cached_per_instruction(editor):
    encoded = []
    editor.text_encoder.register_forward_pre_hook(lambda *_: encoded.append(1))
    steps = Guidance(steps=1)
    for instruction in (INSTRUCTION, INSTRUCTION, "turn it into marble", INSTRUCTION):
        editor.edit(image(32, 32, 0), image(32, 32, 0), instruction, 0.5, seed=0, guidance=steps)
    assert len(encoded) == 3  # the instruction, "" and the second instruction, once each


def test_text_cache_forgets_the_oldest_instructions(editor):
    encoded = []
    editor.text_encoder.register_forward_pre_hook(lambda _, args: encoded.append(args[0][0].tolist()))
    steps = Guidance(steps=1)
    for instruction in [INSTRUCTION] + [f"make it shade {i}" for i in range(ip2p.TEXT_CACHE_SIZE)] + [INSTRUCTION]:
        editor.edit(image(16, 16, 0), image(16, 16, 0), instruction, 0.5, seed=0, guidance=steps)
    ids = editor.tokenizer(INSTRUCTION, padding="max_length", max_length=editor.tokenizer.model_max_length).input_ids
    assert encoded.count(ids) == 2


def test_rejects_empty_instruction_and_bad_step_counts(editor):
    with pytest.raises(UserInputError, match="denoising steps"):
        editor.edit(image(32, 32, 0), image(32, 32, 0), INSTRUCTION, 0.5, seed=0, guidance=Guidance(steps=0))
    with pytest.raises(UserInputError, match="instruction is empty"):
        editor.edit(image(32, 32, 0), image(32, 32, 0), "  ", 0.5, seed=0)


def test_each_edit_frees_the_offload_hooks_even_when_cancelled(editor, stand_in, monkeypatch):
    freed = []
    monkeypatch.setattr(editor.pipe, "maybe_free_model_hooks", lambda: freed.append(len(stand_in.calls)))
    editor.edit(image(32, 32, 0), image(32, 32, 0), INSTRUCTION, 0.5, seed=0, guidance=Guidance(steps=2))
    assert freed == [2]  # once, after the denoising steps
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        editor.edit(image(32, 32, 0), image(32, 32, 0), INSTRUCTION, 0.5, seed=0, cancel=token)
    assert freed == [2, 2]


def test_rejects_a_scheduler_it_does_not_implement(editor):
    editor.pipe.scheduler = DDIMScheduler.from_config(editor.pipe.scheduler.config, thresholding=True)
    with pytest.raises(CheckpointError, match="thresholding"):
        InstructPix2PixEditor(editor.pipe)


def test_refuses_a_four_channel_unet(tmp_path):
    folder = write_tiny_ip2p(tmp_path / "sd", in_channels=4)
    with pytest.raises(CheckpointError, match="its UNet takes 4 input channels, InstructPix2Pix needs 8") as err:
        load_ip2p(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("drop", [("vae",), ("model_index.json", "tokenizer")])
def test_names_what_an_incomplete_folder_lacks(tmp_path, drop):
    folder = write_tiny_ip2p(tmp_path / "partial", drop=drop)
    with pytest.raises(CheckpointError, match=f"lacks {', '.join(drop)} ") as err:
        load_ip2p(folder)
    assert str(folder) in str(err.value)


def test_unreadable_weights_are_a_checkpoint_error(tmp_path):
    folder = write_tiny_ip2p(tmp_path / "broken", drop=("unet/diffusion_pytorch_model.safetensors",))
    with pytest.raises(CheckpointError, match="cannot load InstructPix2Pix from") as err:
        load_ip2p(folder)
    assert str(folder) in str(err.value)


def test_missing_local_path(tmp_path):
    with pytest.raises(CheckpointError, match="no InstructPix2Pix model at") as err:
        load_ip2p(tmp_path / "nowhere" / "ip2p")
    assert str(tmp_path / "nowhere" / "ip2p") in str(err.value)


def test_loading_and_the_edit_check_read_a_model_source_with_one_rule(tmp_path):
    """``load_ip2p`` and ``EditConfig.validate`` (through the editor registry) say the same about a source that
    names no model, a file that is no checkpoint and a checkpoint without its configs (``sources.model_kind``)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    checkpoint = tmp_path / "ip2p.safetensors"
    checkpoint.write_bytes(b"")
    for source in (tmp_path / "nowhere" / "ip2p", notes, checkpoint):
        with pytest.raises(CheckpointError) as loading:
            load_ip2p(source)
        with pytest.raises(CheckpointError) as checking:
            EditConfig(project="", instruction=INSTRUCTION, editor="ip2p", model=str(source), steps=1).validate()
        assert str(loading.value) == str(checking.value) and str(source) in str(loading.value)


@pytest.fixture
def no_cache(monkeypatch) -> SimpleNamespace:
    """The hub id is not in the local cache; a download (not local_files_only) returns ``state.folder`` when set.
    ``state.log`` records local_files_only of every lookup."""
    state = SimpleNamespace(log=[], folder=None)

    def download(repo_id, local_files_only=False, **kwargs):
        state.log.append(local_files_only)
        if local_files_only or state.folder is None:
            raise OSError(f"{repo_id} is not cached")
        return state.folder

    monkeypatch.setattr(StableDiffusionInstructPix2PixPipeline, "download", staticmethod(download))
    return state


def test_hub_id_offline_names_the_download_and_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("offline loading must not open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(CheckpointError) as err:
        load_ip2p("retouch3d-tests/not-cached-ip2p")
    message = str(err.value)
    assert "hf download retouch3d-tests/not-cached-ip2p --local-dir DIR" in message
    assert "--model DIR" in message and "HF_HUB_OFFLINE" in message


def test_hub_id_unreachable_names_the_download(monkeypatch, no_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ip2p, "_hub_reachable", lambda: False)
    with pytest.raises(CheckpointError, match="cannot be reached: download it .*hf download timbrooks/instruct-pix2pix"):
        load_ip2p("timbrooks/instruct-pix2pix")
    assert no_cache.log == [True]


def test_hub_id_uses_the_cache_first_and_downloads_only_when_online(monkeypatch, no_cache, tiny_folder):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ip2p, "_hub_reachable", lambda: True)
    no_cache.folder = str(tiny_folder)
    assert isinstance(load_ip2p("timbrooks/instruct-pix2pix"), InstructPix2PixEditor)
    assert no_cache.log == [True, False]


def test_single_checkpoint_file_loads_with_its_local_config(monkeypatch, tmp_path, tiny_folder):
    checkpoint = tmp_path / "ip2p.safetensors"
    checkpoint.write_bytes(b"weights")
    seen = {}

    def from_single_file(path, **kwargs):
        seen.update(kwargs, path=path)
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_folder, local_files_only=True)

    monkeypatch.setattr(StableDiffusionInstructPix2PixPipeline, "from_single_file", staticmethod(from_single_file))
    with pytest.raises(CheckpointError, match="single checkpoint file: also give the diffusers folder"):
        load_ip2p(checkpoint)
    assert isinstance(load_ip2p(checkpoint, config_dir=tiny_folder), InstructPix2PixEditor)
    assert seen["path"] == str(checkpoint) and seen["config"] == str(tiny_folder)
    assert seen["local_files_only"] is True and seen["safety_checker"] is None
    with pytest.raises(CheckpointError, match="lacks"):
        load_ip2p(checkpoint, config_dir=tmp_path)


def test_low_memory_on_cpu_is_a_note_and_bad_options_are_refused(tiny_folder):
    assert load_ip2p(tiny_folder, memory="low").notes == ["low memory changes nothing on the CPU"]
    with pytest.raises(UserInputError, match="memory must be one of default, low"):
        load_ip2p(tiny_folder, memory="tiny")
    with pytest.raises(UserInputError, match="precision must be one of full, half"):
        load_ip2p(tiny_folder, precision="double")
    with pytest.raises(UserInputError, match="half precision .* runs on CUDA only"):
        load_ip2p(tiny_folder, precision="half")


@pytest.fixture
def fake_cuda(monkeypatch) -> None:
    """torch says it sees one CUDA GPU (nothing may actually run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_accelerate(monkeypatch) -> None:
    """accelerate cannot be imported (find_spec answers None for a None entry in sys.modules)."""
    monkeypatch.setitem(sys.modules, "accelerate", None)


@pytest.mark.parametrize("precision, dtype", [("full", torch.float32), ("half", torch.float16)])
def test_precision_on_cuda_loads_weights_in_its_dtype(monkeypatch, fake_cuda, tiny_folder, precision, dtype):
    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise OSError("stop before anything moves to the GPU")

    monkeypatch.setattr(StableDiffusionInstructPix2PixPipeline, "from_pretrained", staticmethod(from_pretrained))
    with pytest.raises(CheckpointError, match="stop before"):
        load_ip2p(tiny_folder, device="cuda", precision=precision)
    assert seen["dtype"] == dtype


def test_low_memory_without_accelerate_is_one_clear_error(fake_cuda, no_accelerate, tiny_folder, tmp_path):
    with pytest.raises(UserInputError) as err:
        load_ip2p(tiny_folder, device="cuda", memory="low")
    assert str(err.value) == OFFLOAD_MISSING
    assert "pip install -e '.[offload]'" in OFFLOAD_MISSING and "default memory preset" in OFFLOAD_MISSING
    config = EditConfig(project=str(tmp_path), instruction=INSTRUCTION, editor="ip2p", model=DEFAULT_HUB_ID,
                        device="cuda", memory="low", steps=5)
    with pytest.raises(UserInputError, match="accelerate"):
        config.validate()  # before any training
    config.editor = "offline"
    config.validate()  # the preset means nothing to the offline editor


def test_cuda_asked_for_without_cuda_is_one_clear_error_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import engine.scene.trainer

    monkeypatch.setattr(engine.scene.trainer, "train_job", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(UserInputError, match="CUDA is not available"):
        EditConfig(project=str(tmp_path), instruction=INSTRUCTION, device="cuda", steps=5).validate()
    assert cli_main(["edit", "--data", str(tmp_path), "--instruction", INSTRUCTION, "--editor", "ip2p", "--model",
                     DEFAULT_HUB_ID, "--device", "cuda", "--steps", "5"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: CUDA is not available (") and "device 'cuda' cannot be used" in message
    assert "--device cpu" in message
    assert "Traceback" not in message
    config = EditConfig(project=str(tmp_path), instruction=INSTRUCTION, device="auto", steps=5)
    config.validate()
    assert config.device == "cpu"  # auto: the CPU where torch sees no GPU
    with pytest.raises(UserInputError, match="unknown device 'gpu'"):
        EditConfig(project=str(tmp_path), instruction=INSTRUCTION, device="gpu", steps=5).validate()


def test_cuda_devices_are_checked_against_the_gpus_torch_sees(fake_cuda):
    assert check_device("auto") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(UserInputError, match="has 1 CUDA GPU"):
        check_device("cuda:1")


def test_cli_offers_the_settings_memory_and_precision(monkeypatch, capsys):
    seen = {}

    def stop(config):
        seen.update(memory=config.memory, precision=config.precision)
        raise UserInputError("stop")

    monkeypatch.setattr(EditConfig, "validate", stop)
    args = ["edit", "--project", "p", "--instruction", INSTRUCTION]
    assert cli_main(args) == 2 and seen == {"memory": "default", "precision": "full"}
    assert cli_main([*args, "--memory", "low", "--precision", "half"]) == 2
    assert seen == {"memory": "low", "precision": "half"}
    with pytest.raises(SystemExit):
        cli_main([*args, "--precision", "double"])
    assert "invalid choice: 'double'" in capsys.readouterr().err


class RecordingPipe:
    """Records what ``_place`` asks of a pipeline (no GPU needed to check the choices)."""

    def __init__(self, offload_error: ImportError | None = None) -> None:
        self.calls: list[str] = []
        self.offload_error = offload_error

    def enable_model_cpu_offload(self, device: torch.device) -> None:
        if self.offload_error is not None:
            raise self.offload_error
        self.calls.append(f"offload to {device}")

    def to(self, device: torch.device) -> None:
        self.calls.append(f"to {device}")


@pytest.mark.parametrize("memory, calls, note", [("low", ["offload to cuda"], "move to the GPU one at a time"),
                                                 ("default", ["to cuda"], None)])
def test_gpu_memory_presets(memory, calls, note):
    pipe = RecordingPipe()
    notes = ip2p._place(pipe, torch.device("cuda"), memory)
    assert pipe.calls == calls
    assert (note in notes[0]) if note else notes == []


def test_too_old_accelerate_is_the_same_clear_error():
    pipe = RecordingPipe(ImportError("`enable_model_cpu_offload` requires `accelerate v0.17.0` or higher."))
    with pytest.raises(UserInputError, match=r"pip install -U accelerate .*requires `accelerate v0\.17\.0`"):
        ip2p._place(pipe, torch.device("cuda"), "low")


def _stylise(editor: InstructPix2PixEditor, view: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return editor.stylise(view, INSTRUCTION, "ugly, bad", noise, 0.9, Guidance(text=20.0, image=1.5, steps=20))


def test_ff3d_stylise_starts_from_the_views_latent_noised_to_tau_with_the_fixed_noise(editor, stand_in):
    view = image(64, 64, 0)
    noise = torch.randn(editor.noise_shape(64, 64), generator=torch.Generator().manual_seed(3))
    _stylise(editor, view, noise)
    timesteps, _ = in2n_timesteps(0.9, 20, 1000, 1)
    assert [call["timestep"] for call in stand_in.calls] == timesteps and timesteps[0] == 856
    with torch.no_grad():
        mode = editor.vae.encode(view.permute(2, 0, 1)[None] * 2 - 1).latent_dist.mode()
    alpha = editor.alphas_cumprod[timesteps[0]]
    start = alpha.sqrt() * mode * editor.vae.config.scaling_factor + (1 - alpha).sqrt() * noise
    first = stand_in.calls[0]["sample"]
    torch.testing.assert_close(first[:1, :4], start, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first[0, 4:], mode[0])  # conditioned on the view itself
    assert first[2, 4:].abs().sum() == 0  # and the unconditional branch on no image
    # the same view and noise start the same; another noise starts elsewhere
    stand_in.calls.clear()
    _stylise(editor, view, noise)
    torch.testing.assert_close(stand_in.calls[0]["sample"], first)
    stand_in.calls.clear()
    _stylise(editor, view, torch.randn(editor.noise_shape(64, 64)))
    assert not torch.allclose(stand_in.calls[0]["sample"][:1, :4], first[:1, :4])


def test_ff3d_stylise_puts_the_negative_prompt_in_both_branches_without_the_instruction(editor, stand_in):
    _stylise(editor, image(64, 64, 0), torch.zeros(editor.noise_shape(64, 64)))
    text = stand_in.calls[0]["text"]
    torch.testing.assert_close(text[0], clip_embedding(editor, INSTRUCTION))
    torch.testing.assert_close(text[1], clip_embedding(editor, "ugly, bad"))
    torch.testing.assert_close(text[2], clip_embedding(editor, "ugly, bad"))


def test_ff3d_stylise_guides_with_s_t_on_text_and_s_i_on_image(editor, stand_in):
    _stylise(editor, image(64, 64, 0), torch.randn(editor.noise_shape(64, 64)))
    expected = UNCOND + 20.0 * (TEXT - IMAGE) + 1.5 * (IMAGE - UNCOND)
    reference = in2n_scheduler(editor, 900, 20)
    for call, following in zip(stand_in.calls, stand_in.calls[1:]):
        latents = call["sample"][:1, :4]
        stepped = reference.step(torch.full_like(latents, expected), call["timestep"], latents).prev_sample
        torch.testing.assert_close(following["sample"][:1, :4], stepped, rtol=1e-5, atol=1e-5)


def test_ff3d_stylise_refuses_noise_of_the_wrong_shape(editor):
    with pytest.raises(UserInputError, match="fixed noise has shape"):
        _stylise(editor, image(64, 64, 0), torch.zeros(1, 4, 4, 4))
