"""A face-parsing network for portraits without a label map: BiSeNet as the face-parsing.PyTorch project trained it
on CelebAMask-HQ (19 labels in its own order, engine.portrait.semantic.LABEL_ORDERS["bisenet"]; its weights file
``79999_iter.pth`` is a state dict, given as a local file: nothing is downloaded).

Written here with that project's parameter names so its state dict loads as it is (face-parsing.PyTorch,
github.com/zllrunning/face-parsing.PyTorch, MIT licence, Copyright (c) 2019 zll): a ResNet-18 context path whose
1/16 and 1/32 features are refined by attention (global context added at 1/32), fused with the 1/8 features
(feature fusion with channel attention), a 3×3 + 1×1 head to 19 classes, upsampled to the input.  Two auxiliary
heads (``conv_out16``, ``conv_out32``) exist only for training and are kept so the file loads strictly.
Inference as that project's: the 512² crop, bilinear, ImageNet-normalised; the label is the argmax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import CheckpointError

PARSING_SIZE = 512
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = 19


class ConvBNReLU(nn.Module):
    """Convolution without bias, batch norm, ReLU."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block (two 3×3 convolutions, a projected shortcut when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None if inputs == outputs and stride == 1 else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(residual + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """The backbone: features at 1/8, 1/16 and 1/32 of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        for k, (inputs, outputs, stride) in enumerate(((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))):
            self.add_module(f"layer{k + 1}", nn.Sequential(BasicBlock(inputs, outputs, stride),
                                                           BasicBlock(outputs, outputs, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        eighth = self.layer2(self.layer1(x))
        sixteenth = self.layer3(eighth)
        return eighth, sixteenth, self.layer4(sixteenth)


class AttentionRefinement(nn.Module):
    """A 3×3 conv block whose channels are re-weighted by a sigmoid of their global average."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(inputs, outputs)
        self.conv_atten = nn.Conv2d(outputs, outputs, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return features * torch.sigmoid(self.bn_atten(self.conv_atten(features.mean((2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """ResNet-18 with refined 1/32 (plus the global context) and 1/16 features, each brought up a scale."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16, self.arm32 = AttentionRefinement(256, 128), AttentionRefinement(512, 128)
        self.conv_head32, self.conv_head16 = ConvBNReLU(128, 128), ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eighth, sixteenth, thirty_second = self.resnet(x)
        context = self.conv_avg(thirty_second.mean((2, 3), keepdim=True))
        up32 = self.conv_head32(F.interpolate(self.arm32(thirty_second) + context, sixteenth.shape[2:],
                                              mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(sixteenth) + up32, eighth.shape[2:], mode="nearest"))
        return eighth, up16, up32


class FeatureFusion(nn.Module):
    """Concatenated features through a 1×1 block, plus themselves re-weighted by a channel attention."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(inputs, outputs, kernel=1)
        self.conv1 = nn.Conv2d(outputs, outputs // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(outputs // 4, outputs, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        features = self.convblk(torch.cat([spatial, context], 1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(features.mean((2, 3), keepdim=True)))))
        return features * attention + features


class Head(nn.Module):
    """A 3×3 block then a 1×1 convolution to the classes."""

    def __init__(self, inputs: int, middle: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(inputs, middle)
        self.conv_out = nn.Conv2d(middle, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parsing: images (B, 3, H, W), ImageNet-normalised → class scores (B, classes, H, W)."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, classes)
        self.conv_out16, self.conv_out32 = Head(128, 64, classes), Head(128, 64, classes)  # training only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eighth, up16, _ = self.cp(x)
        scores = self.conv_out(self.ffm(eighth, up16))
        return F.interpolate(scores, x.shape[2:], mode="bilinear", align_corners=True)


def load_face_parser(path: str | Path) -> BiSeNet:
    """The face-parsing network of a ``79999_iter.pth``-style state dict, in eval mode; a CheckpointError naming the
    file and what is wrong otherwise (a file that asks to run code is refused)."""
    from engine.core.safe_pickle import load_torch

    path = Path(path)
    state = load_torch(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a face-parsing state dict (a dict of named tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = BiSeNet()
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{path} is not BiSeNet's face-parsing network: {len(missing)} weights missing"
                              f"{' (' + missing[0] + ', ...)' if missing else ''}, {len(extra)} unexpected"
                              f"{' (' + extra[0] + ', ...)' if extra else ''}")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} is {tuple(state[wrong[0]].shape)}, BiSeNet's is "
                              f"{tuple(own[wrong[0]].shape)}")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def parse_face(net: BiSeNet, image: np.ndarray) -> np.ndarray:
    """The label map (H, W) uint8, in BiSeNet's order, of a portrait crop (H, W, 3) uint8."""
    from PIL import Image

    height, width = image.shape[:2]
    resized = np.asarray(Image.fromarray(image).resize((PARSING_SIZE,) * 2, Image.Resampling.BILINEAR))
    x = torch.from_numpy(resized.copy()).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    labels = net(x)[0].argmax(0).byte().numpy()
    return np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))


__all__ = ["BiSeNet", "load_face_parser", "parse_face"]
