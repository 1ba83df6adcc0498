"""InstructPix2Pix, the 2D editor Instruct-NeRF2NeRF uses, and where its weights come from.

``InstructPix2PixEditor.edit`` follows Instruct-NeRF2NeRF's official editing step: the render
is encoded to sampled VAE latents, noised to level ``t`` and denoised with DDIM (eta 0),
conditioned on the VAE mode of the ORIGINAL capture and on the instruction through three
batched guidance branches.  IN2N spaces its 20 DDIM steps over [0, T] only (it temporarily
sets the scheduler's ``num_train_timesteps`` to T) while the noise levels stay those of the
full 1000-step schedule; ``in2n_timesteps`` and the DDIM update below reproduce that without
touching any scheduler's config.

``load_ip2p`` resolves a model source (a diffusers folder, a single checkpoint file with a
config folder, or a hub id) and never downloads when offline: it fails with a message that
says what to download and how to point Retouch3D at it.  It checks the device, memory preset and
precision first (engine.core.devices, engine.editors.sources), so a machine that cannot run them gets
one sentence before anything loads.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import huggingface_hub.constants
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline
from diffusers.utils.torch_utils import randn_tensor

from engine.core.devices import check_device
from engine.core.errors import CheckpointError, UserInputError
from engine.core.jobs import CancelToken
from engine.editors.base import EditStep, Guidance, StepCallback, check_edit_inputs, check_instruction
from engine.editors.sources import OFFLOAD_MISSING, check_run_options, model_kind

"""the InstructPix2Pix weights Instruct-NeRF2NeRF uses"""
MAX_SIDE = 512
"""diffusion editors work at most at this side (the resolution InstructPix2Pix was trained at)"""
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
"""the component folders of a diffusers InstructPix2Pix pipeline the editor needs"""
IN2N_DDIM = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
"""the DDIM options of the scheduler Instruct-NeRF2NeRF edits with (Stable Diffusion's), whatever the
model folder's scheduler config says: no clipping of x0, the clean end of the schedule at alphas_cumprod[0],
timesteps offset by 1"""
IP2P_IN_CHANNELS = 8
"""InstructPix2Pix's UNet takes 4 noisy latent channels + 4 conditioning-image channels"""
TEXT_CACHE_SIZE = 16
"""instructions whose text embeddings are kept (an IDU run repeats one instruction thousands of times)"""
HUB_TIMEOUT_S = 2.0
"""how long the reachability check of the hub may take before Retouch3D treats it as offline"""


def in2n_timesteps(t: float, steps: int, num_train_timesteps: int = 1000,
                   steps_offset: int = 1) -> tuple[list[int], int]:
    """DDIM timesteps for noise level ``t`` in [0, 1], spaced as Instruct-NeRF2NeRF spaces them, and their stride.

    T = int(t * num_train_timesteps) (at least 1); ``steps`` steps (at most T) are spaced T // steps
    apart from 0, offset by the scheduler's ``steps_offset`` and run from the noisiest; each step
    goes back by the stride (a negative previous timestep means the clean end of the schedule).
    """
    if not 1 <= steps < num_train_timesteps:
        raise UserInputError(f"the number of denoising steps must lie in [1, {num_train_timesteps - 1}], got {steps}")
    top = max(1, int(t * num_train_timesteps))
    count = min(steps, top)
    stride = top // count
    return [i * stride + steps_offset for i in reversed(range(count))], stride


def working_size(height: int, width: int, multiple: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(height, width) the models run at: the aspect ratio kept (each side rounded), longer side at most
    ``max_side``, both sides multiples of ``multiple``."""
    scale = min(1.0, max_side / max(height, width))
    limit = max(multiple, max_side // multiple * multiple)

    def fit(side: int) -> int:
        return min(limit, max(multiple, round(side * scale / multiple) * multiple))

    return fit(height), fit(width)


def _to_model(image: torch.Tensor, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """HxWx3 in [0, 1] → 1x3xhxw in [-1, 1] at the working size (float32; the caller casts)."""
    x = image.detach().to(device, torch.float32).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x * 2 - 1


class InstructPix2PixEditor:
    """Instruct-NeRF2NeRF's InstructPix2Pix editing step (see the module docstring), no gradients.

    ``pipe`` is a StableDiffusionInstructPix2PixPipeline whose scheduler is a DDIMScheduler, as
    ``load_ip2p`` returns it; ``device`` is where inputs go (the GPU even when the models are
    offloaded to the CPU between uses); ``notes`` are things the user should know about how the
    model was loaded.
    """

    name = "InstructPix2Pix"
    adds_matter = True

    def __init__(self, pipe: StableDiffusionInstructPix2PixPipeline, device: torch.device | str | None = None,
                 notes: Sequence[str] = ()) -> None:
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.device = torch.device(device) if device is not None else pipe.device
        self.dtype = pipe.unet.dtype
        self.notes = list(notes)
        config = pipe.scheduler.config
        if config.prediction_type not in ("epsilon", "v_prediction") or config.thresholding:
            raise CheckpointError(f"the model's scheduler predicts {config.prediction_type!r}"
                                  f"{' with thresholding' if config.thresholding else ''}; the InstructPix2Pix "
                                  "editor supports epsilon or v_prediction without thresholding")
        self.num_train_timesteps = config.num_train_timesteps
        self.steps_offset = config.steps_offset
        self.v_prediction = config.prediction_type == "v_prediction"
        self.clip_range = config.clip_sample_range if config.clip_sample else None
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.to(self.device)
        self.final_alpha_cumprod = torch.as_tensor(pipe.scheduler.final_alpha_cumprod, device=self.device)
        # each VAE level but the last halves the image (8 for Stable Diffusion's); the UNet takes any latent
        # size, so a 16:9 render keeps its shape rather than snapping to the UNet's 64-pixel grid
        self.size_multiple = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._text_cache: dict[str, torch.Tensor] = {}

    def edit(self, render: torch.Tensor, original: torch.Tensor, instruction: str, t: float, seed: int,
             guidance: Guidance | None = None, cancel: CancelToken | None = None,
             on_step: StepCallback | None = None) -> torch.Tensor:
        """The edited image, same size and device as ``render``, values in [0, 1]; raises Cancelled between steps,
        tells ``on_step`` of each.  Afterwards (also on errors) offloaded models go back to the CPU, so the GPU is
        free for training."""
        try:
            return self._edit(render, original, instruction, t, seed, guidance, cancel, on_step)
        finally:
            self.pipe.maybe_free_model_hooks()

    def _edit(self, render: torch.Tensor, original: torch.Tensor, instruction: str, t: float, seed: int,
              guidance: Guidance | None, cancel: CancelToken | None, on_step: StepCallback | None) -> torch.Tensor:
        """``edit`` itself."""
        text = check_instruction(instruction)
        check_edit_inputs(render, original, t)
        guidance = guidance or Guidance()
        size = working_size(render.shape[0], render.shape[1], self.size_multiple)
        generator = torch.Generator().manual_seed(seed)
        timesteps, stride = in2n_timesteps(t, guidance.steps, self.num_train_timesteps, self.steps_offset)
        sf = self.vae.config.scaling_factor
        with torch.no_grad():
            render_px = _to_model(render, size, self.device).to(self.dtype)
            original_px = _to_model(original, size, self.device).to(self.dtype)
            latents = self.vae.encode(render_px).latent_dist.sample(generator).float() * sf
            image_latents = self.vae.encode(original_px).latent_dist.mode()
            noise = randn_tensor(latents.shape, generator=generator, device=self.device, dtype=torch.float32)
            alpha = self.alphas_cumprod[timesteps[0]]
            latents = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
            embeds = torch.cat([self._embed(text), self._embed(""), self._embed("")])
            return self._denoise(latents, image_latents, embeds, timesteps, stride, guidance, cancel, on_step, render)

    def stylise(self, view: torch.Tensor, prompt: str, negative: str, noise: torch.Tensor, tau: float = 0.9,
                guidance: Guidance | None = None, cancel: CancelToken | None = None,
                on_step: StepCallback | None = None) -> torch.Tensor:
        """FF3D's stabilised inference: ``view`` (H, W, 3 in [0, 1]) edited from n* = its VAE latent (the mode: the
        same view gives the same start) noised with the caller's fixed ``noise`` (``noise_shape``; the same for
        every view) to level ``tau`` (the schedule's level at the first of ``guidance.steps`` DDIM steps spread
        over [0, tau·T] as in ``in2n_timesteps``), conditioned on the view; the ``negative`` prompt's embedding
        takes both branches the instruction does not (image-only and unconditional).  Same size and device as
        ``view``."""
        try:
            text = check_instruction(prompt)
            check_edit_inputs(view, view, tau)
            guidance = guidance or Guidance()
            size = working_size(view.shape[0], view.shape[1], self.size_multiple)
            if tuple(noise.shape) != self.noise_shape(view.shape[0], view.shape[1]):
                raise UserInputError(f"the fixed noise has shape {tuple(noise.shape)}; a {view.shape[1]}x"
                                     f"{view.shape[0]} view needs {self.noise_shape(view.shape[0], view.shape[1])}")
            timesteps, stride = in2n_timesteps(tau, guidance.steps, self.num_train_timesteps, self.steps_offset)
            with torch.no_grad():
                image_latents = self.vae.encode(_to_model(view, size, self.device).to(self.dtype)).latent_dist.mode()
                alpha = self.alphas_cumprod[timesteps[0]]
                latents = (alpha.sqrt() * image_latents.float() * self.vae.config.scaling_factor
                           + (1 - alpha).sqrt() * noise.to(self.device, torch.float32))
                embeds = torch.cat([self._embed(text), self._embed(negative), self._embed(negative)])
                return self._denoise(latents, image_latents, embeds, timesteps, stride, guidance, cancel, on_step,
                                     view)
        finally:
            self.pipe.maybe_free_model_hooks()

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The latent shape (1, C, h, w) of an image of that size at the working size: the fixed noise's."""
        h, w = working_size(height, width, self.size_multiple)
        return (1, self.vae.config.latent_channels, h // self.size_multiple, w // self.size_multiple)

    def _denoise(self, latents: torch.Tensor, image_latents: torch.Tensor, embeds: torch.Tensor,
                 timesteps: list[int], stride: int, guidance: Guidance, cancel: CancelToken | None,
                 on_step: StepCallback | None, like: torch.Tensor) -> torch.Tensor:
        """DDIM from ``latents`` with three-way guidance, branches (instruction, image), (``embeds[1]``, image),
        (``embeds[2]``, no image): ``uncond + s_T (text − image) + s_I (image − uncond)``; decoded like ``like``."""
        conditioning = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
        for k, step in enumerate(timesteps):
            if cancel is not None:
                cancel.raise_if_cancelled()
            model_in = torch.cat([latents.repeat(3, 1, 1, 1).to(self.dtype), conditioning], dim=1)
            pred_text, pred_image, pred_uncond = self.unet(
                model_in, step, encoder_hidden_states=embeds).sample.float().chunk(3)
            pred = (pred_uncond + guidance.text * (pred_text - pred_image)
                    + guidance.image * (pred_image - pred_uncond))
            latents, clean = self._ddim_step(pred, step, step - stride, latents)
            if on_step is not None:
                on_step(EditStep(k + 1, len(timesteps), lambda clean=clean: self._decode(clean, like)))
        return self._decode(latents, like)

    def _decode(self, latents: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Latents as an HxWx3 image in [0, 1] of ``like``'s size and device."""
        with torch.no_grad():
            decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample.float()
        image = (decoded / 2 + 0.5).clamp(0, 1)
        if tuple(image.shape[-2:]) != tuple(like.shape[:2]):
            image = F.interpolate(image, size=tuple(like.shape[:2]), mode="bilinear", antialias=True,
                                  align_corners=False).clamp(0, 1)
        return image[0].permute(1, 2, 0).to(like.device)

    def _embed(self, text: str) -> torch.Tensor:
        """CLIP embedding (1, tokens, width) of ``text``, cached: the instruction and "" recur every edit."""
        if text not in self._text_cache:
            ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self._text_cache[text] = self.text_encoder(ids.to(self.device))[0].to(self.dtype)
            if len(self._text_cache) > TEXT_CACHE_SIZE:  # forget the oldest
                self._text_cache.pop(next(iter(self._text_cache)))
        return self._text_cache[text]

    def _ddim_step(self, model_output: torch.Tensor, step: int, prev_step: int,
                   sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One deterministic DDIM update (eta 0) from ``step`` to ``prev_step`` on the full-schedule alphas: the
        next latents and the clean latents predicted at this step."""
        alpha = self.alphas_cumprod[step]
        alpha_prev = self.alphas_cumprod[prev_step] if prev_step >= 0 else self.final_alpha_cumprod
        if self.v_prediction:
            pred_x0 = alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output
            pred_eps = alpha.sqrt() * model_output + (1 - alpha).sqrt() * sample
        else:
            pred_x0 = (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
            pred_eps = model_output
        if self.clip_range is not None:
            pred_x0 = pred_x0.clamp(-self.clip_range, self.clip_range)
        return alpha_prev.sqrt() * pred_x0 + (1 - alpha_prev).sqrt() * pred_eps, pred_x0


def check_pipeline_folder(folder: Path) -> None:
    """Raise CheckpointError naming what a diffusers InstructPix2Pix folder lacks."""
    missing = [name for name in ("model_index.json", *COMPONENTS) if not (folder / name).exists()]
    if missing:
        raise CheckpointError(f"{folder} is not a complete diffusers InstructPix2Pix folder: it lacks "
                              f"{', '.join(missing)} (expected model_index.json and the folders "
                              f"{', '.join(COMPONENTS)})")


def _download_hint(repo_id: str) -> str:
    return (f"download it where there is network with `hf download {repo_id} --local-dir DIR` "
            f"(`huggingface-cli download` on older huggingface_hub), then point Retouch3D at it with `--model DIR`")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (the environment may change after huggingface_hub was imported)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _hub_reachable() -> bool:
    """Whether the hub's endpoint accepts a connection within HUB_TIMEOUT_S."""
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _hub_folder(repo_id: str) -> Path:
    """The local folder of hub model ``repo_id``: the HF cache first, a download only when the hub is online."""
    try:
        return Path(StableDiffusionInstructPix2PixPipeline.download(repo_id, local_files_only=True))
    except OSError:
        pass
    if _hub_offline():
        raise CheckpointError(f"{repo_id} is neither a local folder nor in the local Hugging Face cache, and "
                              f"HF_HUB_OFFLINE is set, so it will not be downloaded: {_download_hint(repo_id)}")
    if not _hub_reachable():
        raise CheckpointError(f"{repo_id} is neither a local folder nor in the local Hugging Face cache, and "
                              f"{huggingface_hub.constants.ENDPOINT} cannot be reached: {_download_hint(repo_id)}")
    try:
        return Path(StableDiffusionInstructPix2PixPipeline.download(repo_id))
    except OSError as exc:
        raise CheckpointError(f"could not download {repo_id}: {exc}; {_download_hint(repo_id)}") from exc


def _load(load: Callable[[], StableDiffusionInstructPix2PixPipeline],
          where: Path) -> StableDiffusionInstructPix2PixPipeline:
    """Run a diffusers load, turning its failures into a CheckpointError naming ``where``."""
    try:
        return load()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load InstructPix2Pix from {where}: {exc}") from exc


def _place(pipe: StableDiffusionInstructPix2PixPipeline, device: torch.device, memory: str) -> list[str]:
    """Move the pipeline to ``device`` for the memory preset; returns notes for the user."""
    if memory == "low" and device.type == "cuda":
        try:
            pipe.enable_model_cpu_offload(device=device)
        except ImportError as exc:  # accelerate older than diffusers needs (check_run_options saw it installed)
            raise UserInputError(f"{OFFLOAD_MISSING} ({exc})") from exc
        return ["low memory: models wait on the CPU and move to the GPU one at a time"]
    pipe.to(device)
    return ["low memory changes nothing on the CPU"] if memory == "low" else []


def load_ip2p(source: str | Path, device: torch.device | str = "cpu", memory: str = "default",
              config_dir: str | Path | None = None, precision: str = "full") -> InstructPix2PixEditor:
    """An InstructPix2Pix editor from a diffusers folder, a .safetensors/.ckpt file (with ``config_dir``, the
    diffusers folder of the same model for its configs), or a hub id (the local cache first; a download only
    when online).  ``memory`` and ``precision``: see engine.editors.sources (precision "full" is float32,
    "half" float16 on CUDA only); the safety checker is not loaded; the scheduler is replaced by DDIM with
    Instruct-NeRF2NeRF's options (IN2N_DDIM).  Raises UserInputError for a device, preset or precision this
    machine cannot run, CheckpointError saying what is missing and what to do.  Its settings are checked with the
    functions ``EditConfig.validate`` uses (check_device, check_run_options, model_kind), so whether it is called
    directly or for an edit job, a problem reads the same.
    """
    device = torch.device(check_device(str(device)))
    check_run_options(str(device), memory, precision)
    kind = model_kind(str(source), None if config_dir is None else str(config_dir))
    options = dict(dtype=torch.float16 if precision == "half" else torch.float32, safety_checker=None,
                   requires_safety_checker=False, local_files_only=True)
    pipeline = StableDiffusionInstructPix2PixPipeline
    path = Path(source).expanduser()
    if kind == "checkpoint":
        config_dir = Path(config_dir).expanduser()
        check_pipeline_folder(config_dir)
        pipe = _load(lambda: pipeline.from_single_file(str(path), config=str(config_dir), **options), path)
    else:
        if kind == "hub":
            path = _hub_folder(str(source))
        check_pipeline_folder(path)
        pipe = _load(lambda: pipeline.from_pretrained(path, **options), path)
    if pipe.unet.config.in_channels != IP2P_IN_CHANNELS:
        raise CheckpointError(f"{path} is not an InstructPix2Pix pipeline: its UNet takes "
                              f"{pipe.unet.config.in_channels} input channels, InstructPix2Pix needs {IP2P_IN_CHANNELS}")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **IN2N_DDIM)
    return InstructPix2PixEditor(pipe, device, _place(pipe, device, memory))
