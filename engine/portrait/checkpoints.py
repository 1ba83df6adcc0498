"""Read EG3D generator weights from the files users have, without running any code they contain.

``read_generator_checkpoint`` returns the constructor arguments, the state dict (official
parameter names) and the neural rendering resolution of an EG3D ``TriPlaneGenerator`` from one of
three formats:

* an official network pickle (``.pkl``): a plain pickle of a dict with ``G``, ``D``, ``G_ema``,
  ``augment_pipe`` and ``training_set_kwargs``.  Networks in it were pickled through NVIDIA's
  ``torch_utils.persistence``: each one reduces to
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta`` = dict(type='class',
  version, module_src, class_name, state), where ``module_src`` is the source code of the module
  defining the class and ``state`` the object's ``__dict__`` (``_parameters``, ``_buffers``,
  ``_non_persistent_buffers_set``, ``_modules`` and the recorded ``_init_args`` / ``_init_kwargs``).
  Unpickling it normally would execute ``module_src``.  The restricted unpickler here (built on
  ``engine.core.safe_pickle``, with its limits and bounds-checked tensors) maps every network class to an
  inert record of its class name and state, rebuilds tensors and numpy values, and refuses every
  other global, so nothing from the file runs.
* a PyTorch file (``.pth`` / ``.pt``), read by ``engine.core.safe_pickle.load_torch`` (tensors and plain
  data only).  Two layouts are public:
  the one Live3DPortrait (github.com/Dong142857/Live3DPortrait, ``models/triencoder.py``) and 3DPE
  (github.com/EzioBy/3dpe, ``models/triencoder.py``, file ``ffhqrebalanced512-128.pth``) read, with
  keys ``G`` (state dict), ``G_init_args``, ``G_init_kwargs``, ``G_neural_rendering_resolution``,
  ``G_renderinig_kwargs`` (spelled so) plus ``D``, ``D_init_args``, ``D_init_kwargs`` -- a public
  EG3D/PanoHead pkl-to-pth converter writes the same keys with ``G_rendering_kwargs`` and
  ``training_set_kwargs``, its kwargs being ``dnnlib.util.EasyDict`` objects (read here as dicts);
  and the one TriPlaneNet (github.com/anantarb/triplanenet, ``models/triplanenet.py``) reads, with
  keys ``G_ema`` (state dict), ``init_kwargs`` and ``latent_avg``.  A file with ``state_dict``
  (as StyleGAN pkl-to-pth scripts write) and ``init_args`` / ``init_kwargs``, or a bare state dict,
  is read too; the saved rendering kwargs replace ``rendering_kwargs`` in the constructor kwargs.
* ``generator.safetensors`` (or any ``.safetensors``), its constructor arguments under
  ``generator_kwargs`` in ``meta.json`` or ``config.json`` beside it -- what ``write_converted`` writes.

The neural rendering resolution is an attribute of the generator, not a constructor argument: a
pickled generator's ``neural_rendering_resolution``, a .pth file's ``G_neural_rendering_resolution``,
or the top-level ``neural_rendering_resolution`` of the JSON file beside a weights-only file.

Every failure is one ``CheckpointError`` sentence naming the file and what is wrong with it, and the
constructor arguments are checked (engine.portrait.eg3d.KWARG_RULES) before a generator is allocated.
"""

from __future__ import annotations

import json
import mmap
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.core.errors import CheckpointError
from engine.core.project import atomic_write
from engine.core.safe_pickle import (Limits, Record, SafeUnpickler, check_nesting, load_torch, mapped, reading,
                                     record_class)

__all__ = ["CheckpointError", "GENERATOR_FILE", "GeneratorCheckpoint", "META_FILE", "read_generator_checkpoint",
           "write_converted"]

GENERATOR_FILE = "generator.safetensors"
"""the weights file ``write_converted`` writes (official parameter names, raw unscaled values)"""
META_FILE = "meta.json"
"""the JSON file beside it: ``{"generator_kwargs": {...}, "neural_rendering_resolution": 128}``"""
SIDECAR_FILES = (META_FILE, "config.json")
"""where constructor arguments of a bare weights file are looked up, in this order"""
POSITIONAL_PARAMETERS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                         "sr_num_fp16_res", "mapping_kwargs", "rendering_kwargs", "sr_kwargs")
"""TriPlaneGenerator's parameters in signature order, to name positional ``_init_args``"""
PICKLE_SUFFIXES = (".pkl",)
TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIXES = (".safetensors",)
INERT_MODULE_PREFIXES = ("torch.nn.modules.", "torch_utils.", "training.")
"""classes from these modules become inert records: network code is never imported or run"""
MAX_NEURAL_RENDERING_RESOLUTION = 1024
"""a recorded neural rendering resolution above this is damage (official generators render at 64 or 128)"""


class GeneratorCheckpoint(NamedTuple):
    """What a checkpoint says about its generator."""

    kwargs: dict
    """the official constructor arguments"""
    state_dict: dict[str, torch.Tensor]
    """official parameter names, raw values, on CPU"""
    neural_rendering_resolution: int | None
    """the resolution the generator was trained to render at (an attribute, not a constructor
    argument: 128 for the official FFHQ 512 model), None when the file does not say"""


def _plain_values(value: Any, where: str) -> Any:
    """``value`` as JSON-like data: mappings to dicts, sequences to lists, numpy scalars to Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _plain_values(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_values(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"constructor argument {where} is a {type(value).__name__}, not plain data")


_NDARRAY = object()
"""what ``numpy.ndarray`` resolves to: the class only ever passed to ``_reconstruct``, never called"""


class _RestrictedUnpickler(SafeUnpickler):
    """Unpickles tensors, numpy values, plain containers and inert network records; refuses any other global."""

    def __init__(self, stream: mmap.mmap, limits: Limits) -> None:
        reconstruct, scalar = np.empty(0).__reduce__()[0], np.float64(0).__reduce__()[0]
        numpy = {"multiarray._reconstruct": self._empty_array, "multiarray.scalar": scalar,
                 "numeric._frombuffer": np.empty(0).__reduce_ex__(5)[0]}
        super().__init__(stream, limits, {
            "builtins.dict": dict, "builtins.object": object,
            "copyreg._reconstructor": self._reconstructor,
            "torch_utils.persistence._reconstruct_persistent_obj": self._persistent_object,
            "dnnlib.util.EasyDict": dict,
            "numpy.ndarray": _NDARRAY, "numpy.dtype": np.dtype,
            **{f"{package}.{name}": fn for package in ("numpy.core", "numpy._core") for name, fn in numpy.items()},
        })
        self._numpy_reconstruct = reconstruct
        self._inert_classes: dict[str, type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in self.table or not module.startswith(INERT_MODULE_PREFIXES):
            return super().find_class(module, name)
        if qualified not in self._inert_classes:
            self._inert_classes[qualified] = record_class(qualified)
        return self._inert_classes[qualified]

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.limits.path} is not an EG3D network pickle: it refers to external objects "
                              "(a torch.save file renamed .pkl? give it as .pth)")

    def set_state(self, obj: Any, state: Any) -> None:
        """BUILD of numpy arrays and dtypes (never of object arrays: they nest without end), and what the base
        class allows (inert records)."""
        if type(obj) is np.ndarray or isinstance(obj, np.dtype):
            obj.__setstate__(state)
            if (obj if isinstance(obj, np.dtype) else obj.dtype).hasobject:
                raise self.limits.refuse("it holds a numpy array of Python objects")
        else:
            super().set_state(obj, state)

    def _empty_array(self, cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        """numpy's ``_reconstruct``: the empty array numpy pickles fill by BUILD (its data comes from the file)."""
        if cls is not _NDARRAY or not (isinstance(shape, tuple) and 0 in shape):
            raise self.limits.refuse(f"it asks for a numpy array of shape {reprlib.repr(shape)} before its data")
        return self._numpy_reconstruct(np.ndarray, shape, dtype)

    def _persistent_object(self, meta: Any) -> Record:
        """The inert record of a ``torch_utils.persistence`` object; its ``module_src`` is ignored, never run."""
        if not (isinstance(meta, Mapping) and isinstance(meta.get("class_name"), str)
                and isinstance(meta.get("state"), Mapping)):
            raise self.limits.damaged("a pickled network lacks its class name or state")
        return Record(meta["class_name"], meta["state"])

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocol 0/1 objects), for inert stand-ins and EasyDicts only."""
        if base is object and state is None and isinstance(cls, type) and issubclass(cls, Record):
            return cls.__new__(cls)
        if cls is dict and base is dict:
            return dict(state or {})
        raise self.limits.refuse(f"it asks to run copyreg._reconstructor on "
                                 f"{getattr(cls, '__name__', type(cls).__name__)}")


def _module_field(state: Mapping, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    """``state[key]`` when it has the expected kind (an empty one when absent); a CheckpointError otherwise."""
    value = state.get(key)
    if value is None:
        return ()
    if not isinstance(value, kind):
        raise CheckpointError(f"{path} is damaged: {key} of module {where} is a {type(value).__name__}")
    return value


def _module_state_dict(record: Record, path: Path, prefix: str = "",
                       seen: set[int] | None = None) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of an inert module tree under dotted names, as ``state_dict()`` orders them.

    Each record is visited once (``seen``): a module met again is refused, so shared submodules cannot make
    the walk exponential (EG3D generators share none)."""
    where = prefix.rstrip(".") or record.class_name
    seen = set() if seen is None else seen
    if id(record) in seen:
        raise CheckpointError(f"{path} is damaged: module {where} appears more than once in the network")
    seen.add(id(record))
    state = record.state
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is damaged: module {where} ({record.class_name}) carries no state")
    parameters = _module_field(state, "_parameters", Mapping, path, where)
    buffers = _module_field(state, "_buffers", Mapping, path, where)
    skipped = _module_field(state, "_non_persistent_buffers_set", (set, frozenset, list, tuple), path, where)
    children = _module_field(state, "_modules", Mapping, path, where)
    entries = [*dict(parameters).items(), *((n, v) for n, v in dict(buffers).items() if n not in skipped)]
    tensors: dict[str, torch.Tensor] = {}
    for name, value in entries:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} is damaged: {prefix}{name} is a {type(value).__name__}, not a tensor")
        tensors[prefix + name] = value.detach()
    for name, child in dict(children).items():
        if child is None:
            continue
        if not isinstance(child, Record):
            raise CheckpointError(f"{path} is damaged: submodule {prefix}{name} is a {type(child).__name__}")
        tensors.update(_module_state_dict(child, path, f"{prefix}{name}.", seen))
    return tensors


def _recorded_kwargs(args: Any, kwargs: Any, path: Path) -> dict | None:
    """Constructor kwargs from recorded positional and keyword arguments (None when neither was recorded)."""
    if args is None and kwargs is None:
        return None
    args, kwargs = args or (), kwargs or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{path} is damaged: the generator's recorded constructor arguments are a "
                              f"{type(args).__name__} and a {type(kwargs).__name__}, not a tuple and a dict")
    if len(args) > len(POSITIONAL_PARAMETERS):
        raise CheckpointError(f"{path}: the generator was built with {len(args)} positional arguments; "
                              f"an EG3D TriPlaneGenerator takes at most {len(POSITIONAL_PARAMETERS)}")
    try:
        return _plain_values(dict(zip(POSITIONAL_PARAMETERS, args)) | dict(kwargs), "generator_kwargs")
    except TypeError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _sidecar(path: Path) -> dict:
    """The ``meta.json`` or ``config.json`` beside ``path`` that holds ``generator_kwargs`` (empty when none does):
    what describes a weights-only file."""
    for name in SIDECAR_FILES:
        sidecar = path.with_name(name)
        if not sidecar.is_file():
            continue
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{sidecar}: unreadable JSON ({exc})") from None
        if isinstance(data, dict) and "generator_kwargs" in data:
            if not isinstance(data["generator_kwargs"], dict):
                raise CheckpointError(f"{sidecar}: generator_kwargs must be a JSON object")
            return data
    return {}


def _held(data: Mapping) -> str:
    """The first keys of ``data``, for saying what a file holds instead of what it should."""
    return ", ".join(reprlib.repr(key) for key in list(data)[:12]) + (", ..." if len(data) > 12 else "") or "nothing"


def _read_pickle(path: Path) -> GeneratorCheckpoint:
    """Recorded kwargs and state dict of ``G_ema`` (else ``G``) in an official EG3D network pickle."""
    with reading(path, "EG3D network pickle"), mapped(path) as stream:
        data = _RestrictedUnpickler(stream, Limits(path, len(stream))).load()
        check_nesting(data, path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} is not an EG3D network pickle: it holds a {type(data).__name__}, "
                              "not a dict with G_ema")
    key = next((k for k in ("G_ema", "G") if data.get(k) is not None), None)
    if key is None:
        raise CheckpointError(f"{path} holds no generator (no 'G_ema' or 'G'; it holds {_held(data)}): "
                              "give the network snapshot with G_ema")
    generator = data[key]
    if not isinstance(generator, Record):
        raise CheckpointError(f"{path}: {key} is a {type(generator).__name__}, not a pickled network")
    state_dict = _module_state_dict(generator, path)
    recorded = _recorded_kwargs(generator.state.get("_init_args"), generator.state.get("_init_kwargs"), path)
    return GeneratorCheckpoint(recorded, state_dict, _resolution(generator.state.get("neural_rendering_resolution")))


def _resolution(value: Any) -> int | None:
    """A recorded neural rendering resolution as an int (None when absent or not a positive integer)."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0 else None


def _is_state_dict(value: Any) -> bool:
    """Whether ``value`` is a non-empty mapping of names to tensors."""
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _read_torch(path: Path) -> GeneratorCheckpoint:
    """Recorded kwargs and state dict of a Live3D / 3DPE / TriPlaneNet-style ``.pth`` (or a bare state dict)."""
    data = load_torch(path, {"dnnlib.util.EasyDict": dict})
    if _is_state_dict(data):
        return GeneratorCheckpoint(None, dict(data), None)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict with a generator state dict")
    key = next((k for k in ("G_ema", "G", "state_dict") if _is_state_dict(data.get(k))), None)
    if key is None:
        raise CheckpointError(f"{path} holds no generator state dict: none of 'G_ema', 'G', 'state_dict' is a "
                              f"dict of tensors (it holds {_held(data)})")
    prefix = "G_" if "G_init_kwargs" in data or "G_init_args" in data else ""
    init_kwargs = data.get(f"{prefix}init_kwargs")
    rendering = next((data[k] for k in ("G_rendering_kwargs", "G_renderinig_kwargs") if k in data), None)
    if isinstance(init_kwargs, Mapping) and rendering is not None:
        init_kwargs = {**init_kwargs, "rendering_kwargs": rendering}
    return GeneratorCheckpoint(_recorded_kwargs(data.get(f"{prefix}init_args"), init_kwargs, path), dict(data[key]),
                               _resolution(data.get("G_neural_rendering_resolution")))


def _read_safetensors(path: Path) -> GeneratorCheckpoint:
    """The tensors of a ``.safetensors`` file (its constructor arguments live beside it)."""
    try:
        return GeneratorCheckpoint(None, load_file(str(path), device="cpu"), None)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


_READERS: dict[str, Callable[[Path], GeneratorCheckpoint]] = {
    **dict.fromkeys(PICKLE_SUFFIXES, _read_pickle),
    **dict.fromkeys(TORCH_SUFFIXES, _read_torch),
    **dict.fromkeys(SAFETENSORS_SUFFIXES, _read_safetensors),
}


def _checkpoint_file(path: Path) -> Path:
    """The file to read for ``path``: the path itself, or ``generator.safetensors`` in a converted folder."""
    if path.is_dir():
        if (path / "model_index.json").is_file():
            raise CheckpointError(f"{path} is a diffusers pipeline folder, not an EG3D generator: give an EG3D "
                                  f"network pickle (.pkl), a .pth, or a .safetensors file with its {META_FILE}")
        if (path / GENERATOR_FILE).is_file():
            return path / GENERATOR_FILE
        raise CheckpointError(f"{path} is a folder without {GENERATOR_FILE}: give an EG3D network pickle (.pkl), "
                              "a .pth, or a .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix.lower() not in _READERS:
        raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix or '(no suffix)'!r}; give an EG3D "
                              f"network pickle (.pkl), a Live3D/3DPE-style .pth, or a .safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    return path


def read_generator_checkpoint(path: str | Path, generator_kwargs: dict | None = None) -> GeneratorCheckpoint:
    """The constructor kwargs, state dict and neural rendering resolution of an EG3D TriPlaneGenerator
    from an official .pkl, a Live3D/3DPE-style .pth, or a .safetensors file (or a folder holding
    ``generator.safetensors``).

    The kwargs are the ones recorded in the file (a .safetensors file's come from ``meta.json`` or
    ``config.json`` beside it), updated with ``generator_kwargs`` when given; state dict names and
    values are exactly the official ones (raw, unscaled), on CPU.  Raises CheckpointError naming the
    file and the problem, and for pickles that ask to run anything but tensor rebuilding.
    """
    file = _checkpoint_file(Path(path))
    with reading(file, "EG3D checkpoint"):  # what the readers below do not foresee still fails as one sentence
        found = _READERS[file.suffix.lower()](file)
        kwargs, resolution = found.kwargs, found.neural_rendering_resolution
        if kwargs is None:  # weights only: the JSON file beside them describes them
            sidecar = _sidecar(file)
            kwargs = sidecar.get("generator_kwargs")
            resolution = _resolution(sidecar.get("neural_rendering_resolution"))
    if not found.state_dict:
        raise CheckpointError(f"{file} holds a generator without any parameters")
    if resolution is not None and resolution > MAX_NEURAL_RENDERING_RESOLUTION:
        raise CheckpointError(f"{file} records a neural rendering resolution of {resolution}, beyond the "
                              f"{MAX_NEURAL_RENDERING_RESOLUTION} any EG3D generator renders at: the file is damaged")
    if kwargs is None and not generator_kwargs:
        raise CheckpointError(f"{file} does not say how to build the generator: pass its constructor arguments "
                              f"(generator_kwargs) or put {META_FILE} or config.json holding "
                              '{"generator_kwargs": {...}} beside it')
    return GeneratorCheckpoint({**(kwargs or {}), **(generator_kwargs or {})}, found.state_dict, resolution)


def write_converted(out_dir: str | Path, generator_kwargs: dict, state_dict: dict[str, torch.Tensor],
                    neural_rendering_resolution: int | None = None) -> Path:
    """generator.safetensors + meta.json ({"generator_kwargs": ..., "neural_rendering_resolution": ...})
    in out_dir, written atomically; returns the safetensors path.

    The converted folder loads without pickle and keeps the official names, so a user converts an
    official checkpoint once and the project stores only these two files.
    """
    out_dir = Path(out_dir)
    meta = {"generator_kwargs": _plain_values(generator_kwargs, "generator_kwargs")}
    if neural_rendering_resolution is not None:
        meta["neural_rendering_resolution"] = int(neural_rendering_resolution)
    meta_text = json.dumps(meta, indent=2) + "\n"
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    weights = atomic_write(out_dir / GENERATOR_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    atomic_write(out_dir / META_FILE, lambda tmp: tmp.write_text(meta_text))
    return weights
