"""3DPE's official network (Bai et al., "Real-time 3D-aware Portrait Editing from a Single Image"):
an edited portrait's triplanes from one aligned photo and a reference image, in one forward pass,
rendered by EG3D's renderer.  Written from the paper and the golden fixture's description
(../shared/fixtures/3dpe-golden/README.md); module and parameter names follow the published
``3dpe.pt`` (``encoder_state_dict``, ``renderer_state_dict``) so it loads with nothing missing or left over.

Encoder (``Live3DEditingEncoder``), for a 512² input with two raw coordinate channels (row, column):
* E_low: a ResNet-34 trunk (no batch norms, biased convs; layer3 / layer4 carried in the weights but
  unused) and a DeepLabV3 head (ASPP at rates 12 / 24 / 36 + a 3×3 conv) → 256 × 64²;
* EncoderF: an overlapping patch embedding (7×7, stride 2) and two Mix-Transformer blocks → 128 × 128²;
* E_high: seven convolutions on the input → 128 × 128²;
* the prompt branch (Ref_encoder): E_high's features as 32² query tokens attend, without learned
  projections, to the tokens of an MAE ViT-B/16 on the 224² reference; pixel shuffles and a 1×1
  projection bring the result back to 128 × 128², replacing E_high's features;
* the final stage (Final_encoder): both features → a Mix-Transformer block with spatial reduction
  → convolutions → the triplanes (96 × 256²).
Renderer: EG3D's triplane decoder, importance sampling at 128² and the 8XDC super-resolution, every
style of which is one learned constant (``const``) since there is no latent.

Runs in eval mode: the official script leaves the ASPP's dropout active, which makes its own outputs
random; here it is never applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import CheckpointError
from engine.core.safe_pickle import load_torch
from engine.portrait.superresolution import SuperResolution
from engine.portrait.triplane import PLANE_FEATURES, ImportanceRenderer, OSGDecoder, sample_rays, texel_major

INPUT_RESOLUTION = 512
REFERENCE_RESOLUTION = 224
PLANE_RESOLUTION = 256
NEURAL_RENDERING_RESOLUTION = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RENDERING_KWARGS = {"depth_resolution": 48, "depth_resolution_importance": 48, "ray_start": 2.25, "ray_end": 3.3,
                    "box_warp": 1.0, "clamp_mode": "softplus", "disparity_space_sampling": False,
                    "white_back": False}
"""what the official renderer reads (EG3D's FFHQ settings)"""
LEGACY_DECODER_KEYS = {"decoder.0.": "decoder.aspp.", "decoder.1.": "decoder.conv."}
"""segmentation-models-pytorch 0.3.x spelled the DeepLabV3 head as a plain sequence"""
CHECKPOINT_KEYS = ("encoder_state_dict", "renderer_state_dict")


def conv(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation, bias=bias)


class BasicBlock(nn.Module):
    """A ResNet basic block without batch norms: two 3×3 convs and the (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.conv2 = conv(cout, cout, 3)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        return F.relu(self.conv2(F.relu(self.conv1(x))) + shortcut)


class ResNetTrunk(nn.Module):
    """A ResNet of basic blocks without batch norms (default: ResNet-34, 3-4-6-3 blocks, as smp builds it);
    ``forward`` stops after layer2 (smp's encoder depth 3), the later layers only carried."""

    def __init__(self, in_channels: int = 5, widths: tuple[int, ...] = (64, 64, 128, 256, 512),
                 depths: tuple[int, ...] = (3, 4, 6, 3), max_pool: bool = True) -> None:
        """``widths``: the stem's, then each layer's."""
        super().__init__()
        self.conv1 = conv(in_channels, widths[0], 7, 2)
        self.max_pool = max_pool
        cin = widths[0]
        for index, (width, depth) in enumerate(zip(widths[1:], depths), start=1):
            blocks = [BasicBlock(cin if k == 0 else width, width, 2 if k == 0 and index > 1 else 1)
                      for k in range(depth)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            cin = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        if self.max_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        return self.layer2(self.layer1(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated 3×3 and an image-pooling branch, projected."""

    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        branches = [nn.Sequential(conv(cin, cout, 1))]
        branches += [nn.Sequential(conv(cin, cout, 3, dilation=rate)) for rate in rates]
        branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(cin, cout, 1)))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(conv(cout * len(branches), cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.relu(branch(x)).expand(-1, -1, *x.shape[-2:]) for branch in self.convs]
        return F.relu(self.project(torch.cat(outs, 1)))


class DeepLabHead(nn.Module):
    """DeepLabV3's decoder: ASPP then a 3×3 conv and ReLU."""

    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        self.aspp = ASPP(cin, cout, rates)
        self.conv = conv(cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(self.aspp(x)))


def tokens_to_grid(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H·W, C) row-major tokens → (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: a strided k×k conv, then LayerNorm over channels, as tokens."""

    def __init__(self, cin: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = conv(cin, dim, kernel, stride)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), x.shape[2], x.shape[3]


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys and values may come from a grid reduced by a strided conv."""

    def __init__(self, dim: int, heads: int, reduction: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.reduction = reduction
        if reduction > 1:
            self.sr = nn.Conv2d(dim, dim, reduction, reduction)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, n, c = x.shape
        source = x
        if self.reduction > 1:
            source = self.norm(self.sr(tokens_to_grid(x, height, width)).flatten(2).transpose(1, 2))
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(source).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    """A depth-wise 3×3 conv on the token grid (the Mix-FFN's positional mixing)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.dwconv(tokens_to_grid(x, height, width)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear → depth-wise conv → GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), height, width)))


class MixBlock(nn.Module):
    """A Mix-Transformer block (SegFormer's encoder block): pre-norm attention and Mix-FFN, both residual."""

    def __init__(self, dim: int, heads: int, hidden: int, reduction: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, heads, reduction)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, hidden)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class EncoderF(nn.Module):
    """E_low's features → 128 × 128²: patch embedding, two Mix-Transformer blocks, shuffle and convs."""

    def __init__(self, cin: int = 256, dim: int = 1024, heads: int = 4, blocks: int = 2, out: int = 128,
                 kernel: int = 7) -> None:
        super().__init__()
        self.patchembed = PatchEmbed(cin, dim, kernel, 2)
        self.blocks = nn.ModuleList([MixBlock(dim, heads, 2 * dim) for _ in range(blocks)])
        self.net = nn.Sequential(conv(dim // 4, out, 3), nn.LeakyReLU(), conv(out, out, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, h, w = self.patchembed(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        return self.net(_upsample(F.pixel_shuffle(tokens_to_grid(tokens, h, w), 2)))


class EncoderHigh(nn.Module):
    """E_high: the 5-channel input → 128 × 128² through seven convolutions (both first two strided)."""

    def __init__(self, cin: int = 5, stem: int = 64, width: int = 128, middle: int = 4, second_stride: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv(cin, stem, 7, 2), nn.LeakyReLU(), conv(stem, width, 3, second_stride)]
        for _ in range(middle):
            layers += [nn.LeakyReLU(), conv(width, width, 3)]
        self.net = nn.Sequential(*layers, nn.LeakyReLU(), conv(width, width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ViTBlock(nn.Module):
    """A standard pre-norm ViT block (LayerNorm eps 1e-6, fused qkv with bias, GELU MLP)."""

    def __init__(self, dim: int = 768, heads: int = 12, hidden: int = 3072) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = x + self.attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class MAEEncoder(nn.Module):
    """The reference's ViT-B/16 (MAE-trained): class token + 196 patch tokens, 12 blocks, final norm."""

    def __init__(self, dim: int = 768, depth: int = 12, patch: int = 16, image: int = REFERENCE_RESOLUTION) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim), requires_grad=False)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList([ViTBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(image).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class EncoderRef(nn.Module):
    """The image-prompt branch: E_high's features query the prompt's tokens (here an MAE ViT-B/16's on
    the reference) without learned attention projections; the answer, shuffled back to E_high's
    resolution, replaces those features."""

    def __init__(self, high: int = 128, dim: int = 768, pre: int = 96, stride: int = 4,
                 mae_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.mae_encoder = mae_encoder if mae_encoder is not None else MAEEncoder(dim)
        self.pre_conv = conv(high, pre, 3)
        self.patch_emb = PatchEmbed(pre, dim, 7, stride)
        self.proj_tail = nn.Conv2d(dim // 4, 4 * high, 1, bias=False)

    def forward(self, high: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.fuse(high, self.mae_encoder(reference))

    def fuse(self, high: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """E_high's features (B, C, H, W) attending to prompt tokens (B, L, dim) → (B, C, H, W)."""
        queries, h, w = self.patch_emb(self.pre_conv(high))
        attention = torch.softmax(queries @ tokens.transpose(1, 2) / math.sqrt(tokens.shape[-1]), dim=-1)
        fused = tokens_to_grid(attention @ tokens, h, w)
        return F.pixel_shuffle(self.proj_tail(F.pixel_shuffle(fused, 2)), 2)


class EncoderFinal(nn.Module):
    """The final stage: prompt-fused high features and E_low's features → triplanes (96 × 256²)."""

    def __init__(self, cin: int = 256, dim: int = 1024, heads: int = 2, kernel: int = 7,
                 output_net: nn.Sequential | None = None) -> None:
        """``output_net`` maps the shuffled tokens (dim / 4 channels) to the planes; default the official one."""
        super().__init__()
        self.net = nn.Sequential(conv(cin, cin, 3))
        self.pathembed = PatchEmbed(cin, dim, kernel, 2)
        self.block = MixBlock(dim, heads, 2 * dim, reduction=2)
        planes = 3 * PLANE_FEATURES
        self.output_net = output_net or nn.Sequential(
            conv(dim // 4, 256, 3), nn.LeakyReLU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            conv(256, 128, 3), nn.LeakyReLU(), conv(128, 128, 3), nn.LeakyReLU(),
            conv(128, planes, 3), nn.LeakyReLU(), conv(planes, planes, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, h, w = self.pathembed(self.net(x))
        tokens = self.block(tokens, h, w)
        return self.output_net(F.pixel_shuffle(tokens_to_grid(tokens, h, w), 2))


def with_coordinates(image: torch.Tensor) -> torch.Tensor:
    """Append the pixel row and column indices (raw 0 … H−1, 0 … W−1) as two channels."""
    b, _, h, w = image.shape
    rows = torch.arange(h, dtype=image.dtype, device=image.device).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, dtype=image.dtype, device=image.device).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([image, rows, cols], 1)


class Live3DEditingEncoder(nn.Module):
    """The editing encoder: (input portrait, reference) → edited triplanes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ResNetTrunk(5)
        self.decoder = DeepLabHead(128)
        self.F_encoder = EncoderF()
        self.EHigh_encoder = EncoderHigh()
        self.Ref_encoder = EncoderRef()
        self.Final_encoder = EncoderFinal()

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        x = with_coordinates(image)
        low = self.F_encoder(self.decoder(self.encoder(x)))
        high = self.Ref_encoder(self.EHigh_encoder(x), reference)
        return self.Final_encoder(torch.cat([high, low], 1))


class TriplaneRenderer(nn.Module):
    """EG3D's renderer and 8XDC super-resolution, styled by the learned constant ``const``."""

    def __init__(self) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, 1, 512))
        self.decoder = OSGDecoder(PLANE_FEATURES, 1.0, PLANE_FEATURES)
        self.superresolution = SuperResolution("SuperresolutionHybrid8XDC", PLANE_FEATURES, INPUT_RESOLUTION,
                                               sr_antialias=True)
        self.renderer = ImportanceRenderer()
        self.rendering_kwargs = dict(RENDERING_KWARGS)

    def forward(self, planes: torch.Tensor, c: torch.Tensor, deterministic_sampling: bool = False,
                resolution: int = NEURAL_RENDERING_RESOLUTION) -> dict[str, torch.Tensor]:
        b = planes.shape[0]
        origins, directions = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), resolution)
        features, depth, _ = self.renderer(texel_major(planes), self.decoder, origins, directions,
                                           self.rendering_kwargs, deterministic=deterministic_sampling)
        feature_image = features.transpose(1, 2).reshape(b, -1, resolution, resolution).contiguous()
        depth = depth.transpose(1, 2).reshape(b, 1, resolution, resolution)
        image = self.superresolution(feature_image[:, :3], feature_image, self.const.expand(b, -1, -1))
        return {"image": image, "image_raw": feature_image[:, :3], "image_depth": depth,
                "feature_image": feature_image}


def _modern_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder state with smp 0.3.x's DeepLabV3 keys renamed to the layout used here."""
    renamed = {}
    for key, value in state.items():
        for old, new in LEGACY_DECODER_KEYS.items():
            if key.startswith(old):
                key = new + key[len(old):]
        renamed[key] = value
    return renamed


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, source: str) -> None:
    """Copy ``state`` into ``module``: every key required, none extra, shapes equal; one error naming them."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: {what} is not a state dict of tensors")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})" if missing else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
                 if unexpected else "",
                 "shape mismatch: " + ", ".join(f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
                                                for k in wrong[:3]) if wrong else ""]
        raise CheckpointError(f"{source}: {what} is not 3DPE's: " + "; ".join(p for p in parts if p))
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})


class ThreeDPE(nn.Module):
    """The official 3DPE network: ``encode`` a photo and a reference into triplanes, ``render`` them."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Live3DEditingEncoder()
        self.renderer = TriplaneRenderer()
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_state_dicts(cls, encoder_state_dict: Mapping[str, torch.Tensor],
                         renderer_state_dict: Mapping[str, torch.Tensor], source: str = "3DPE weights") -> ThreeDPE:
        """The network with the official state dicts (both smp spellings of the DeepLabV3 head
        accepted); every key is required.  Comes back in eval mode without gradients."""
        with torch.device("meta"):
            net = cls()
        net.to_empty(device="cpu")
        _load_into(net.encoder, _modern_names(encoder_state_dict), "encoder_state_dict", source)
        _load_into(net.renderer, renderer_state_dict, "renderer_state_dict", source)
        return net.requires_grad_(False).eval()

    @classmethod
    def load(cls, path: str | Path) -> ThreeDPE:
        """The network from a ``3dpe.pt`` checkpoint, read without running anything in it."""
        path = Path(path)
        data = read_checkpoint(path)
        return cls.from_state_dicts(data["encoder_state_dict"], data["renderer_state_dict"], str(path))

    @torch.no_grad()
    def encode(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Triplanes (B, 96, 256, 256) for portraits (B, 3, 512, 512) in [−1, 1] and references
        (B, 3, 224, 224) ImageNet-normalised (see ``reference_tensor``)."""
        _check_shape(image, INPUT_RESOLUTION, "image")
        _check_shape(reference, REFERENCE_RESOLUTION, "reference")
        return self.encoder(image, reference)

    @torch.no_grad()
    def render(self, planes: torch.Tensor, c: torch.Tensor, deterministic_sampling: bool = False) -> dict[str, torch.Tensor]:
        """Render triplanes from EG3D camera labels c (B, 25): ``image`` (B, 3, 512, 512),
        ``image_raw`` (B, 3, 128, 128), ``image_depth`` (B, 1, 128, 128), ``feature_image``."""
        if c.ndim != 2 or c.shape[1] != 25 or c.shape[0] != planes.shape[0]:
            raise ValueError(f"cameras must be ({planes.shape[0]}, 25) EG3D labels, got {tuple(c.shape)}")
        return self.renderer(planes, c.to(planes), deterministic_sampling)


def _check_shape(x: torch.Tensor, size: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (size, size):
        raise ValueError(f"{what} must be (B, 3, {size}, {size}), got {tuple(x.shape)}")


def reference_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """A reference image (B, 3, H, W) in [0, 1] as the MAE encoder takes it: antialiased bicubic
    resize to 224², ImageNet normalisation."""
    x = F.interpolate(rgb, size=(REFERENCE_RESOLUTION,) * 2, mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def read_checkpoint(path: Path) -> dict:
    """A ``3dpe.pt``'s top-level dict: torch's weights-only loader (memory-mapped) where it accepts the
    file, otherwise the project's restricted unpickler (which names what it refuses)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (the 3DPE checkpoint, e.g. pretrained_models/3dpe.pt)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything torch refuses gets the restricted reader's precise message
        data = load_torch(path)
    if not isinstance(data, Mapping) or not all(key in data for key in CHECKPOINT_KEYS):
        held = ", ".join(map(str, list(data)[:6])) if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{path} is not a 3DPE checkpoint: it needs {' and '.join(CHECKPOINT_KEYS)} "
                              f"(it holds {held})")
    return data
