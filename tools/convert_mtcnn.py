"""Convert the MTCNN weights of the facenet-pytorch wheel to resources/mtcnn/mtcnn.safetensors.

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
    python tools/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

The wheel (a zip) carries ``facenet_pytorch/data/pnet.pt``, ``rnet.pt`` and ``onet.pt``: legacy-format
``torch.save`` files of the three networks' state dicts.  They are read with the project's restricted
unpickler (``engine.core.safe_pickle.load_torch``: tensors and plain containers only, nothing in the files
runs), checked against the networks of ``engine.portrait.mtcnn`` (every name and shape), and written as one
safetensors file with the keys prefixed ``pnet.``, ``rnet.`` and ``onet.``.  Beside it go the wheel's MIT
licence (``LICENSE-facenet-pytorch.txt``) and a README saying where the weights come from, how to redo
this and the sha256 of every input and output.  facenet-pytorch itself is never imported or installed.

The source may also be a folder: an unpacked wheel, or any folder holding the three .pt files (directly or
under ``facenet_pytorch/data/``) and the wheel's ``*.dist-info`` with its LICENSE and METADATA.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: the engine is this checkout's
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from engine.core.errors import UserInputError  # noqa: E402
from engine.core.project import atomic_write  # noqa: E402
from engine.core.safe_pickle import load_torch  # noqa: E402
from engine.portrait.mtcnn import MTCNN  # noqa: E402

NETWORKS = ("pnet", "rnet", "onet")
DATA_DIR = "facenet_pytorch/data"
OUT_DIR = REPO / "resources" / "mtcnn"
WEIGHTS_NAME, LICENSE_NAME, README_NAME = "mtcnn.safetensors", "LICENSE-facenet-pytorch.txt", "README.md"
HOMEPAGE = "https://github.com/timesler/facenet-pytorch"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _metadata_version(text: str) -> str:
    """The ``Version:`` field of a METADATA file ("unknown" without one)."""
    for line in text.splitlines():
        if line.startswith("Version:"):
            return line.partition(":")[2].strip()
        if not line.strip():  # the headers end at the first blank line
            break
    return "unknown"


class Source:
    """The three .pt files (bytes), the licence text, the version and a description of where they came from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        self.license = ""
        self.version = "unknown"
        self.sha256 = ""
        if path.is_file():
            self._read_wheel(path)
        elif path.is_dir():
            self._read_folder(path)
        else:
            raise UserInputError(f"{path}: no such wheel or folder; fetch the wheel with "
                                 "pip download --no-deps facenet-pytorch -d DIR")

    def _read_wheel(self, path: Path) -> None:
        try:
            with zipfile.ZipFile(path) as wheel:
                names = wheel.namelist()
                for net in NETWORKS:
                    member = f"{DATA_DIR}/{net}.pt"
                    if member not in names:
                        raise UserInputError(f"{path} holds no {member}: is it the facenet-pytorch wheel?")
                    self.files[net] = wheel.read(member)
                licences = [n for n in names if n.split("/")[0].endswith(".dist-info")
                            and n.rpartition("/")[2].upper().startswith("LICENSE")]
                metadata = [n for n in names if n.split("/")[0].endswith(".dist-info") and n.endswith("/METADATA")]
                if not licences:
                    raise UserInputError(f"{path} holds no licence file in its .dist-info folder")
                self.license = wheel.read(licences[0]).decode("utf-8")
                if metadata:
                    self.version = _metadata_version(wheel.read(metadata[0]).decode("utf-8"))
        except zipfile.BadZipFile:
            raise UserInputError(f"{path} is not a wheel (zip file); it may be truncated") from None
        self.sha256 = sha256(path.read_bytes())

    def _read_folder(self, path: Path) -> None:
        for folder in (path, path / DATA_DIR, path / "data"):
            if all((folder / f"{net}.pt").is_file() for net in NETWORKS):
                self.files = {net: (folder / f"{net}.pt").read_bytes() for net in NETWORKS}
                break
        else:
            raise UserInputError(f"{path} holds no pnet.pt, rnet.pt and onet.pt (nor under {DATA_DIR}/)")
        licences = sorted(p for p in path.glob("*.dist-info/LICENSE*") if p.is_file()) or \
            sorted(p for p in path.glob("LICENSE*") if p.is_file())
        if not licences:
            raise UserInputError(f"{path} holds no facenet-pytorch licence (a *.dist-info/LICENSE* or LICENSE* "
                                 "file); give the wheel instead")
        self.license = licences[0].read_text(encoding="utf-8")
        metadata = sorted(path.glob("*.dist-info/METADATA"))
        if metadata:
            self.version = _metadata_version(metadata[0].read_text(encoding="utf-8"))


def read_state_dicts(source: Source) -> dict[str, torch.Tensor]:
    """The three state dicts read safely, checked against ``engine.portrait.mtcnn.MTCNN``, as one flat dict
    of contiguous float32 tensors keyed ``pnet.conv1.weight`` and so on."""
    expected = MTCNN().state_dict()
    tensors: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for net, data in source.files.items():
            file = Path(tmp) / f"{net}.pt"
            file.write_bytes(data)
            state = load_torch(file)
            if not isinstance(state, dict):
                raise UserInputError(f"{net}.pt holds a {type(state).__name__}, not a state dict")
            for name, value in state.items():
                if not isinstance(value, torch.Tensor):
                    raise UserInputError(f"{net}.pt: {name} is a {type(value).__name__}, not a tensor")
                tensors[f"{net}.{name}"] = value.to(torch.float32).contiguous().clone()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UserInputError(f"the .pt files do not match the MTCNN networks: missing {missing}, "
                             f"unexpected {unexpected}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise UserInputError(f"{name} has shape {tuple(value.shape)}, the network expects "
                                 f"{tuple(expected[name].shape)}")
    return dict(sorted(tensors.items()))


def readme(source: Source, weights_sha: str, count: int) -> str:
    wheel = f"facenet_pytorch-{source.version}-py3-none-any.whl"
    digests = "\n".join(f"| `{DATA_DIR}/{net}.pt` | `{sha256(data)}` |" for net, data in source.files.items())
    wheel_line = f"| the wheel `{source.path.name}` | `{source.sha256}` |\n" if source.sha256 else ""
    return f"""# MTCNN weights

`{WEIGHTS_NAME}` holds the trained weights of the MTCNN face detector (Zhang et al. 2016, "Joint Face
Detection and Alignment using Multi-task Cascaded Convolutional Networks") that `engine/portrait/mtcnn.py`
runs: P-Net, R-Net and O-Net, {count} tensors (float32), keys prefixed `pnet.`, `rnet.` and `onet.`
followed by facenet-pytorch's own parameter names.

They come from the `facenet-pytorch` wheel, version {source.version}
({HOMEPAGE}, MIT licence, copied in `{LICENSE_NAME}`),
which carries them as `{DATA_DIR}/pnet.pt`, `rnet.pt` and `onet.pt` (state dicts saved with
`torch.save`; facenet-pytorch converted them from the original Caffe models of the paper's authors).
facenet-pytorch is not a dependency: the project reads only this converted file, with safetensors.

## Redo the conversion

    pip download --no-deps facenet-pytorch=={source.version} -d /tmp/fp
    python tools/convert_mtcnn.py /tmp/fp/{wheel}

The converter reads the three .pt files with the project's restricted unpickler
(`engine.core.safe_pickle.load_torch`: nothing in them runs), checks every name and shape against the
networks in `engine/portrait/mtcnn.py`, and writes this folder's three files again; it gives the same
`{WEIGHTS_NAME}` byte for byte.

| input | sha256 |
|---|---|
{wheel_line}{digests}

| output | sha256 |
|---|---|
| `{WEIGHTS_NAME}` | `{weights_sha}` |
"""


def convert(source_path: str | Path, out_dir: str | Path = OUT_DIR) -> Path:
    """Write OUT_DIR/mtcnn.safetensors, the licence and the README from the wheel or folder; the weights' path."""
    source = Source(Path(source_path).expanduser())
    tensors = read_state_dicts(source)
    out = Path(out_dir)
    # one metadata entry: safetensors writes several in an arbitrary order, and the file should come out the same
    digests = ", ".join(f"{net}.pt {sha256(data)}" for net, data in source.files.items())
    metadata = {"source": f"facenet-pytorch {source.version} ({HOMEPAGE}, MIT licence, Copyright (c) 2019 "
                          f"Timothy Esler, see {LICENSE_NAME}): {DATA_DIR}/*.pt, sha256 {digests}"}
    weights = atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    preamble = (f"The MTCNN weights in {WEIGHTS_NAME} come from facenet-pytorch {source.version}\n({HOMEPAGE}), "
                "distributed under the following licence\n(copied from the wheel's metadata):\n\n")
    atomic_write(out / LICENSE_NAME, lambda tmp: tmp.write_text(preamble + source.license.rstrip() + "\n"))
    text = readme(source, sha256(weights.read_bytes()), len(tensors))
    atomic_write(out / README_NAME, lambda tmp: tmp.write_text(text))
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the facenet-pytorch wheel (.whl) or a folder holding its pnet/rnet/onet.pt")
    parser.add_argument("--out", default=str(OUT_DIR), help="folder to write mtcnn.safetensors, the licence and README")
    args = parser.parse_args(argv)
    try:
        weights = convert(args.source, args.out)
    except UserInputError as exc:  # CheckpointError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {weights} ({weights.stat().st_size} bytes) and its licence and README")
    return 0


if __name__ == "__main__":
    sys.exit(main())
