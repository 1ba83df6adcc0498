"""MTCNN face detection with five landmarks: the detector of EG3D's in-the-wild preprocessing.

    detector = load_mtcnn()                      # resources/mtcnn/mtcnn.safetensors, on the CPU
    faces = detector.detect(image)               # HxWx3 uint8 RGB; largest box first, score > 0.9
    if faces:
        eyes = faces[0].landmarks[:2]            # (5, 2): left eye, right eye, nose, mouth left, mouth right

The cascade of Zhang et al. 2016 ("Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"):

1. **P-Net** slides over an image pyramid (the smallest face sought, ``min_face_size`` pixels, maps to the
   network's 12x12 window; each further level is 0.709 times smaller, down to 12 pixels): every 12x12
   window (stride 2) scoring at least 0.6 becomes a candidate; non-maximum suppression (IoU 0.5) within
   each level, then (IoU 0.7) over all of them; the boxes are corrected by P-Net's regression and made
   square.
2. **R-Net** scores each candidate, cut from the image and resized to 24x24: those above 0.7 stay,
   suppressed at IoU 0.7, corrected by R-Net's regression and made square.
3. **O-Net** does the same at 48x48 (threshold 0.7) and places five landmarks in the box; boxes are
   corrected once more and suppressed where their intersection covers 70 % of the smaller box.

Only faces whose O-Net score exceeds ``min_score`` (0.9, the threshold of EG3D's preprocessing, which
then takes the largest face) are returned.

Conventions.  Pixels are read as the networks were trained: RGB values mapped by (v - 127.5) / 128.
Coordinates are image pixels, x right and y down, with the image's top-left corner at (0, 0) and pixel
(row i, column j) covering [j, j+1) x [i, i+1); a box is (x0, y0, x1, y1) in these coordinates (it may
reach past the image edge: MTCNN reads the area outside the image as black, as the original code pads
it) and a landmark is the box corner plus O-Net's fraction of the box size, the position every MTCNN
port reports and EG3D's alignment reads as it is.  The crops R-Net and O-Net see are resampled by exact
area averaging (each output pixel the mean of the image over its rectangle, read from one summed-area
table of the image, all candidates of a stage in one batch), as OpenCV's INTER_AREA, which the common
MTCNN ports use, resamples; a crop smaller than the network's input is enlarged bilinearly.  Pyramid
levels are shrunk with ``F.interpolate``'s area mode, as facenet-pytorch does, and P-Net runs on bands
of rows of a large level.

Accuracy: on the 25 in-the-wild photos of ../shared (reference 5-point detections from Deep3DFaceRecon's
examples) the largest face's landmarks lie a median 0.048 (at most 0.080) of the inter-ocular distance
from the reference (facenet-pytorch 2.6.0 on the same photos: 0.051; the references were made by another
detector or pipeline, and two ports of these same weights already disagree by about 0.025 of it);
``python -m benchmarks.landmarks`` measures it.

The weights are facenet-pytorch's (its ``data/{pnet,rnet,onet}.pt``, themselves converted from the
original Caffe models), converted once by ``tools/convert_mtcnn.py`` to one safetensors file; they are
read with safetensors only.  The network definitions below follow facenet-pytorch's layer names and
layout (including the width-height transpose before the dense layers, which the Caffe weights expect);
that project's notice:

    MIT License

    Copyright (c) 2019 Timothy Esler

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from engine.core.devices import check_device
from engine.core.errors import CheckpointError

__all__ = ["DEFAULT_WEIGHTS", "Face", "MIN_FACE_SIZE", "MIN_SCORE", "MTCNN", "ONet", "PNet", "RNet", "load_mtcnn"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "resources" / "mtcnn" / "mtcnn.safetensors"
"""the converted weights shipped with the project (see resources/mtcnn/README.md)"""
MIN_SCORE = 0.9
"""faces ``detect`` returns score above this (EG3D's preprocessing: the largest face with confidence > 0.9)"""
MIN_FACE_SIZE = 20
"""the smallest face, in pixels, the pyramid looks for (smaller sizes add pyramid levels and time)"""
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
"""the score a candidate needs to pass P-Net, R-Net and O-Net"""
PYRAMID_FACTOR = 0.709
"""the scale from one pyramid level to the next (about 1/sqrt(2): each level halves the pixel count)"""
PNET_NMS_PER_SCALE, PNET_NMS, RNET_NMS, ONET_NMS_MIN = 0.5, 0.7, 0.7, 0.7
"""suppression thresholds: IoU within a pyramid level, IoU over all levels, IoU after R-Net, and
intersection over the smaller box after O-Net"""
PNET_WINDOW, PNET_STRIDE = 12, 2
"""P-Net's receptive window and its output stride, in pyramid-level pixels"""
PNET_BAND_PIXELS = 2**20
"""P-Net runs on bands of about this many pixels of a pyramid level (a 12-megapixel photo's first level
would otherwise hold some 400 MB of activations at once)"""
BATCH = 256
"""crops per R-Net / O-Net forward pass (bounds memory when P-Net passes thousands of candidates)"""


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """RGB values 0..255 as the networks were trained on them: (v - 127.5) / 128."""
    return (pixels - 127.5) * 0.0078125


class PNet(nn.Module):
    """Proposal network: fully convolutional, a face score (softmax over 2) and a box regression for every
    12x12 window at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regression N x 4 x h x w, face probability N x h x w) for normalised images N x 3 x H x W."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement network: a face score and a box regression for 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regression N x 4, face probability N) for normalised crops N x 3 x 24 x 24."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # Caffe's (W, H, C) flattening order
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output network: a face score, a box regression and five landmarks for 48x48 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(regression N x 4, landmarks N x 10 as five x fractions then five y fractions of the box, face
        probability N) for normalised crops N x 3 x 48 x 48."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))  # Caffe's (W, H, C) flattening order
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in image pixels (x right, y down; see the module's conventions)."""

    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1), O-Net's corrected box; it may reach past the image edge"""
    score: float
    """O-Net's face probability, in (``min_score``, 1]"""
    landmarks: np.ndarray
    """(5, 2) float64, read-only: (x, y) of the left eye, right eye, nose tip, left and right mouth corners
    (left and right as they appear in the image)"""

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        """The box's area in square pixels, by which ``detect`` orders faces."""
        return self.width * self.height


def _integral(pixels: torch.Tensor) -> torch.Tensor:
    """The summed-area table of 1 x C x H x W pixels: 1 x C x (H+1) x (W+1) float64, entry (y, x) the sum of
    the pixels above and left of the point (x, y).  Read bilinearly it is the exact integral of the image up
    to any point (each pixel a constant square), and constant past the edges: the image padded with zeros.
    Built in place (8 bytes a value: 290 MB for a 12-megapixel photo)."""
    table = pixels.new_zeros((*pixels.shape[:2], pixels.shape[2] + 1, pixels.shape[3] + 1), dtype=torch.float64)
    inner = table[:, :, 1:, 1:]
    inner.copy_(pixels)
    inner.cumsum_(2).cumsum_(3)
    return table


def _area_resample(integral: torch.Tensor, boxes: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The boxes (K x 4, image coordinates) of the image whose summed-area table is ``integral``, each resampled
    to rows x cols by exact area averaging (an output pixel is the mean of the image over its rectangle; zero
    outside the image): K x C x rows x cols float32.  All boxes in one ``grid_sample`` of the table."""
    height, width = integral.shape[2] - 1, integral.shape[3] - 1
    boxes = boxes.double()
    xs = torch.lerp(boxes[:, None, 0], boxes[:, None, 2], torch.linspace(0, 1, cols + 1, dtype=torch.float64,
                                                                           device=boxes.device))
    ys = torch.lerp(boxes[:, None, 1], boxes[:, None, 3], torch.linspace(0, 1, rows + 1, dtype=torch.float64,
                                                                           device=boxes.device))
    count = len(boxes)
    grid = torch.stack([(2 * xs / width - 1)[:, None, :].expand(count, rows + 1, cols + 1),
                        (2 * ys / height - 1)[:, :, None].expand(count, rows + 1, cols + 1)], dim=3)
    table = F.grid_sample(integral, grid.reshape(1, count * (rows + 1), cols + 1, 2), mode="bilinear",
                          padding_mode="border", align_corners=True)
    table = table.reshape(-1, count, rows + 1, cols + 1).transpose(0, 1)
    sums = table[:, :, 1:, 1:] - table[:, :, :-1, 1:] - table[:, :, 1:, :-1] + table[:, :, :-1, :-1]
    cell = (boxes[:, 2] - boxes[:, 0]) / cols * (boxes[:, 3] - boxes[:, 1]) / rows
    return (sums / cell[:, None, None, None]).float()


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Boxes (K x 4) moved by a network's regression: each side by its offset times the box's size."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """The squares with the boxes' centres and their longer sides."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy suppression, best score first, of boxes whose intersection covers more than ``threshold`` of
    the smaller of the two (MTCNN's last step; IoU lets a small box inside a large one survive)."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    overlap = (inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-12)).cpu()
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class MTCNN(nn.Module):
    """The three networks and the cascade that runs them; made by ``load_mtcnn``.  ``detect`` runs under
    ``torch.inference_mode`` and keeps no state, so threads may share one detector."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    @torch.inference_mode()
    def detect(self, image: np.ndarray, *, min_score: float = MIN_SCORE,
               min_face_size: float = MIN_FACE_SIZE) -> list[Face]:
        """The faces in ``image`` (H x W x 3 uint8 RGB) whose O-Net score exceeds ``min_score``, largest box
        first; faces smaller than about ``min_face_size`` pixels are not looked for."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            what = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                    else type(image).__name__)
            raise ValueError(f"MTCNN.detect takes an H x W x 3 uint8 RGB image, not a {what}")
        if not min_face_size > 0:
            raise ValueError(f"min_face_size must be positive, not {min_face_size}")
        pixels = torch.tensor(image, device=self.device)  # a copy: the caller's array may be read-only
        pixels = pixels.permute(2, 0, 1)[None].float().contiguous()  # 1 x 3 x H x W, values 0..255
        integral = _integral(pixels)
        boxes = self._propose(pixels, float(min_face_size))
        boxes, _ = self._refine(pixels, integral, boxes)
        boxes, scores, landmarks = self._output(pixels, integral, boxes)
        faces = [Face(tuple(float(v) for v in box), float(score), marks.copy())
                 for box, score, marks in zip(boxes.cpu().double().numpy(), scores.cpu().tolist(),
                                              landmarks.cpu().double().numpy())
                 if score > min_score]
        for face in faces:
            face.landmarks.flags.writeable = False
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def _propose(self, pixels: torch.Tensor, min_face_size: float) -> torch.Tensor:
        """Stage 1: P-Net over the pyramid; square candidate boxes K x 4."""
        height, width = pixels.shape[2:]
        scale = PNET_WINDOW / min_face_size
        found = []  # (windows, regressions, scores) of each level after its suppression
        while min(height, width) * scale >= PNET_WINDOW:
            size = (math.ceil(height * scale), math.ceil(width * scale))
            if size == (height, width):
                level = pixels
            else:  # area averaging to shrink (as facenet-pytorch), bilinear to enlarge (min_face_size below 12)
                level = F.interpolate(pixels, size=size, mode="area" if size[0] < height else "bilinear")
            offsets, prob = self._pnet_banded(_normalise(level))
            ys, xs = torch.nonzero(prob[0] >= STAGE_THRESHOLDS[0], as_tuple=True)
            if len(ys):
                # window (column x, row y) of this level covers [2x, 2x + 12) x [2y, 2y + 12) of its pixels
                per_pixel = torch.tensor([width / size[1], height / size[0]] * 2, device=pixels.device)
                corner = torch.stack([xs, ys, xs, ys], dim=1).float() * PNET_STRIDE
                windows = (corner + torch.tensor([0, 0, PNET_WINDOW, PNET_WINDOW], device=pixels.device)) * per_pixel
                scores = prob[0, ys, xs]
                keep = nms(windows, scores, PNET_NMS_PER_SCALE)
                found.append((windows[keep], offsets[0][:, ys[keep], xs[keep]].T, scores[keep]))
            scale *= PYRAMID_FACTOR
        if not found:
            return torch.zeros(0, 4, device=pixels.device)
        windows, offsets, scores = (torch.cat(parts) for parts in zip(*found))
        keep = nms(windows, scores, PNET_NMS)
        return _square(_regress(windows[keep], offsets[keep]))

    def _pnet_banded(self, level: torch.Tensor,
                     band_pixels: int = PNET_BAND_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net on a normalised pyramid level (1 x 3 x h x w), in bands of rows of about ``band_pixels`` input
        pixels so a large photo's activations stay small; the same outputs as one pass (each band starts on an
        even row and overlaps the next by the 10 rows a window reaches past its stride)."""
        height, width = level.shape[2:]
        rows = math.ceil((height - 2) / 2) - 4  # P-Net's output rows: conv 3, pool 2 (ceil), conv 3, conv 3
        band = max(1, band_pixels // (PNET_STRIDE * width))  # output rows per band
        if rows <= band:
            return self.pnet(level)
        parts = [self.pnet(level[:, :, PNET_STRIDE * r:PNET_STRIDE * (r + band) + PNET_WINDOW - PNET_STRIDE])
                 for r in range(0, rows, band)]
        return torch.cat([offsets for offsets, _ in parts], dim=2), torch.cat([prob for _, prob in parts], dim=1)

    @staticmethod
    def _resample(pixels: torch.Tensor, integral: torch.Tensor, boxes: torch.Tensor, rows: int,
                  cols: int) -> torch.Tensor:
        """The boxes of the image resampled to rows x cols (K x 3 x rows x cols, values 0..255): by exact area
        averaging where they shrink (as the networks' training crops were made, without aliasing), bilinearly
        where a box is smaller than the output; black outside the image, as MTCNN pads crops."""
        out = _area_resample(integral, boxes, rows, cols)
        small = ((boxes[:, 2] - boxes[:, 0]) < cols) | ((boxes[:, 3] - boxes[:, 1]) < rows)
        if small.any():
            rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)[small]
            out[small] = roi_align(pixels, rois, output_size=(rows, cols), spatial_scale=1.0, sampling_ratio=1,
                                   aligned=True)
        return out

    def _run(self, net: nn.Module, pixels: torch.Tensor, integral: torch.Tensor, boxes: torch.Tensor,
             size: int) -> tuple[torch.Tensor, ...]:
        """``net`` on the boxes' crops resampled to size x size, ``BATCH`` at a time; its outputs concatenated."""
        outputs = [net(_normalise(self._resample(pixels, integral, boxes[i:i + BATCH], size, size)))
                   for i in range(0, len(boxes), BATCH)]
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    @staticmethod
    def _valid(boxes: torch.Tensor) -> torch.Tensor:
        """The boxes with positive, finite width and height (a regression can invert a box)."""
        size = boxes[:, 2:] - boxes[:, :2]
        return boxes[(size > 0).all(dim=1) & torch.isfinite(boxes).all(dim=1)]

    def _refine(self, pixels: torch.Tensor, integral: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: R-Net on 24x24 crops; the square boxes that pass, and their scores."""
        boxes = self._valid(boxes)
        if not len(boxes):
            return boxes, boxes.new_zeros(0)
        offsets, scores = self._run(self.rnet, pixels, integral, boxes, 24)
        passed = scores > STAGE_THRESHOLDS[1]
        boxes, offsets, scores = boxes[passed], offsets[passed], scores[passed]
        keep = nms(boxes, scores, RNET_NMS)
        return _square(_regress(boxes[keep], offsets[keep])), scores[keep]

    def _output(self, pixels: torch.Tensor, integral: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 3: O-Net on 48x48 crops; the boxes that pass (corrected), their scores and landmarks K x 5 x 2."""
        boxes = self._valid(boxes)
        if not len(boxes):
            return boxes, boxes.new_zeros(0), boxes.new_zeros(0, 5, 2)
        offsets, marks, scores = self._run(self.onet, pixels, integral, boxes, 48)
        passed = scores > STAGE_THRESHOLDS[2]
        boxes, offsets, marks, scores = boxes[passed], offsets[passed], marks[passed], scores[passed]
        # landmarks are fractions of the box O-Net saw (before its own correction)
        landmarks = boxes[:, None, :2] + torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * (boxes[:, None, 2:]
                                                                                               - boxes[:, None, :2])
        boxes = _regress(boxes, offsets)
        if not len(boxes):
            return boxes, scores, landmarks
        keep = _nms_min(boxes, scores, ONET_NMS_MIN)
        return boxes[keep], scores[keep], landmarks[keep]


def load_mtcnn(path: str | Path | None = None, device: str = "cpu") -> MTCNN:
    """The MTCNN detector with the weights in ``path`` (a safetensors file with keys ``pnet.*``, ``rnet.*``,
    ``onet.*``; default ``DEFAULT_WEIGHTS``) on ``device`` ("cpu", "cuda", "cuda:N" or "auto").  A missing,
    damaged or foreign file is a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        hint = (" (it ships with the project; recreate it as resources/mtcnn/README.md says: "
                "python tools/convert_mtcnn.py FACENET_PYTORCH_WHEEL)" if path == DEFAULT_WEIGHTS else "")
        raise CheckpointError(f"MTCNN face-detector weights not found at {path}{hint}")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable safetensors file of MTCNN weights; it may be damaged or "
                              f"truncated ({type(exc).__name__}: {detail})") from None
    model = MTCNN()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = [f"{what} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for what, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise CheckpointError(f"{path} does not hold MTCNN weights (pnet.*, rnet.*, onet.*): {'; '.join(parts)}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{path} does not hold MTCNN weights: {name} has shape {tuple(value.shape)}, "
                                  f"not {tuple(expected[name].shape)}")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise CheckpointError(f"{path} is damaged: {name} holds non-finite or non-float values")
    model.load_state_dict({name: value.float() for name, value in tensors.items()})
    model.requires_grad_(False).eval()
    return model.to(check_device(device))


def landmark_error(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance of five landmarks (5, 2) to reference ones, as a fraction of the reference
    inter-ocular distance (left eye to right eye): the usual face-alignment error."""
    iod = float(np.linalg.norm(reference[1] - reference[0]))
    return float(np.linalg.norm(np.asarray(found) - reference, axis=1).mean() / iod)
