"""The face-parsing network (BiSeNet, face-parsing.PyTorch's layout) read from a state dict file: it loads strictly,
labels a crop at the crop's size, refuses files of another network or that ask to run code, and labels photos for
inversion when no label map is given."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from engine.core.errors import CheckpointError
from engine.portrait.face_parsing import BiSeNet, load_face_parser, parse_face


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parser") / "79999_iter.pth"
    torch.save(BiSeNet().state_dict(), path)
    return path


def test_a_state_dict_loads_and_labels_a_crop_at_its_size(weights):
    net = load_face_parser(weights)
    assert not net.training
    image = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    labels = parse_face(net, image)
    assert labels.shape == (96, 80) and labels.dtype == np.uint8 and labels.max() < 19


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_other_networks_and_code_running_files_are_refused(tmp_path, weights):
    state = torch.load(weights, weights_only=True)
    state.pop("conv_out.conv_out.weight")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "short.pth")  # DataParallel prefix is fine
    with pytest.raises(CheckpointError, match=r"short\.pth is not BiSeNet's face-parsing network: 1 weights missing "
                                              r"\(conv_out\.conv_out\.weight"):
        load_face_parser(tmp_path / "short.pth")
    torch.save({"weights": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth.*asks to run"):
        load_face_parser(tmp_path / "evil.pth")


def test_inversion_labels_a_photo_with_the_parser_when_no_label_map_is_given(tmp_path, weights):
    from PIL import Image

    from engine.portrait.semantic_edit import photo_face

    Image.fromarray(np.full((512, 512, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    face = photo_face(tmp_path / "photo.png", None, face_parser=weights, size=16)
    assert face.labels.shape == (16, 16) and int(face.labels.max()) < 4
    assert any("face-parsing model 79999_iter.pth" in note for note in face.notes)
    from engine.core.errors import UserInputError

    with pytest.raises(UserInputError, match="give the photo's label map"):
        photo_face(tmp_path / "photo.png", None)
