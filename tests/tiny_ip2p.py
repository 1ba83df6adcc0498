"""Tiny random InstructPix2Pix pipelines built from configs, for tests and the overhead benchmark.

The layout is that of a real diffusers InstructPix2Pix folder (model_index.json plus unet, vae,
text_encoder, tokenizer and scheduler folders), so the real loader reads it, but every model
is a few thousand random parameters: an edit of a 64x64 image takes a fraction of a second
on a CPU.  Weights are seeded, so a folder written twice holds the same numbers.  The VAE
downsamples 8x like Stable Diffusion's, so latent sizes match the real model's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKEN_LENGTH = 16
"""the toy tokenizer's model_max_length (CLIP's is 77)"""
EMBED_DIM = 16
"""text embedding width = the UNet's cross-attention width"""
MERGES = [("t", "h"), ("th", "e</w>"), ("i", "t</w>"), ("m", "a"), ("ma", "k"), ("mak", "e</w>")]
"""a few byte-pair merges, so the toy tokenizer really runs BPE"""


def write_toy_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over printable ASCII (vocab.json, merges.txt) written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for code in range(33, 127):
        tokens += [chr(code), chr(code) + "</w>"]
    tokens += [a + b for a, b in MERGES]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=TOKEN_LENGTH)


def tiny_pipeline(tokenizer: CLIPTokenizer, in_channels: int = 8, seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    """Random seeded models wired into an InstructPix2Pix pipeline (``in_channels`` 4 makes a plain SD UNet)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(8, 8, 8, 16), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=0.8)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=EMBED_DIM, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TOKEN_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    # the scheduler InstructPix2Pix ships (Euler ancestral) with Stable Diffusion's training schedule and none of
    # the DDIM options (clip_sample, set_alpha_to_one; steps_offset at Euler's default 0): the loader must set
    # Instruct-NeRF2NeRF's itself when it swaps in DDIM
    scheduler = EulerAncestralDiscreteScheduler.from_config(dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="epsilon"))
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def write_tiny_ip2p(folder: Path, in_channels: int = 8, seed: int = 0, drop: tuple[str, ...] = ()) -> Path:
    """Save a tiny pipeline as a diffusers folder at ``folder``, then delete the entries named in ``drop``
    (component folders or model_index.json, to make an incomplete folder); returns the folder."""
    folder = Path(folder)
    source = folder.parent / f"{folder.name}-tokenizer-src"
    tiny_pipeline(write_toy_tokenizer(source), in_channels, seed).save_pretrained(folder)
    shutil.rmtree(source)
    for name in drop:
        entry = folder / name
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return folder
