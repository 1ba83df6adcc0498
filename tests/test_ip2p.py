"""InstructPix2Pix editor and loader, end to end on a tiny random pipeline (tests/tiny_ip2p.py)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

from engine.editing import ip2p
from engine.editing.base import Guidance, preview_edit
from engine.editing.ip2p import InstructPix2PixEditor, in2n_timesteps, load_ip2p, working_size
from engine.errors import CheckpointError, UserInputError
from engine.jobs import CancelToken, Cancelled
from tiny_ip2p import write_tiny_ip2p

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
    assert editor.pipe.scheduler.config.clip_sample is False  # DDIM options carried over from the folder's config
    assert editor.pipe.safety_checker is None
    assert editor.dtype == torch.float32 and editor.device == torch.device("cpu")
    assert editor.size_multiple == 8 * 2  # tiny VAE downsamples 8x, tiny UNet 2x
    assert editor.notes == []


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
    assert seen == [(48, 32), (48, 32)]


def test_large_inputs_are_edited_at_most_512_and_resized_back(editor):
    seen = []
    editor.vae.encoder.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    out = preview_edit(editor, image(600, 520, 0), INSTRUCTION, seed=0, guidance=Guidance(steps=2))
    assert out.shape == (600, 520, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert seen[0] == (512, 448)  # 600x520 scaled by 512/600, rounded to multiples of 16


@pytest.mark.parametrize("size, multiple, expected", [((512, 512), 64, (512, 512)), ((1080, 1920), 64, (256, 512)),
                                                      ((20, 900), 64, (64, 512)), ((50, 37), 16, (48, 32))])
def test_working_size(size, multiple, expected):
    assert working_size(*size, multiple) == expected


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


def test_low_memory_on_cpu_is_a_note_and_bad_modes_are_refused(tiny_folder):
    assert load_ip2p(tiny_folder, memory="low").notes == ["low memory changes nothing on the CPU"]
    with pytest.raises(UserInputError, match="memory must be"):
        load_ip2p(tiny_folder, memory="tiny")


class RecordingPipe:
    """Records what ``_place`` asks of a pipeline (no GPU needed to check the choices)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.vae = SimpleNamespace(enable_slicing=lambda: self.calls.append("vae slicing"))

    def enable_attention_slicing(self) -> None:
        self.calls.append("attention slicing")

    def enable_model_cpu_offload(self, device: torch.device) -> None:
        self.calls.append(f"offload to {device}")

    def to(self, device: torch.device) -> None:
        self.calls.append(f"to {device}")


@pytest.mark.parametrize("accelerate, memory, calls, note", [
    (True, "low", ["offload to cuda"], "move to the GPU one at a time"),
    (False, "low", ["attention slicing", "vae slicing", "to cuda"], "pip install accelerate"),
    (True, "default", ["to cuda"], None)])
def test_gpu_memory_modes(monkeypatch, accelerate, memory, calls, note):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        (SimpleNamespace() if accelerate else None) if name == "accelerate" else find_spec(name, *args)))
    pipe = RecordingPipe()
    notes = ip2p._place(pipe, torch.device("cuda"), memory)
    assert pipe.calls == calls
    assert (note in notes[0]) if note else notes == []
