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
  Unpickling it normally would execute ``module_src``.  The restricted unpickler here maps every
  network class to an inert record of its class name and state, rebuilds tensors and numpy
  values, and refuses every other global, so nothing from the file runs.
* a PyTorch file (``.pth`` / ``.pt``), loaded with ``weights_only=True``.  Two layouts are public:
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

Every failure is a ``CheckpointError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError
from engine.project import atomic_write

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
PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
"""module names pickle protocols 0-2 write for Python 2 compatibility"""


class GeneratorCheckpoint(NamedTuple):
    """What a checkpoint says about its generator."""

    kwargs: dict
    """the official constructor arguments"""
    state_dict: dict[str, torch.Tensor]
    """official parameter names, raw values, on CPU"""
    neural_rendering_resolution: int | None
    """the resolution the generator was trained to render at (an attribute, not a constructor
    argument: 128 for the official FFHQ 512 model), None when the file does not say"""


_WEIGHTS_ONLY_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_WEIGHTS_ONLY_DETAIL = re.compile(r"WeightsUnpickler error:\s*(\S.*)")


class _Inert:
    """Stand-in for a pickled network object: the class it named and the state it carried, nothing executed."""

    class_name = ""

    def __init__(self, class_name: str, state: Any) -> None:
        self.class_name = class_name
        self.state = state

    def __setstate__(self, state: Any) -> None:
        self.state = state


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


def _numpy_globals() -> dict[str, Any]:
    """numpy's array/scalar rebuilding functions under the module names numpy 1 and numpy 2 pickles use."""
    functions = {"multiarray._reconstruct": np.empty(0).__reduce__()[0],
                 "multiarray.scalar": np.float64(0).__reduce__()[0],
                 "numeric._frombuffer": np.empty(0).__reduce_ex__(5)[0]}
    table: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for package in ("numpy.core", "numpy._core"):
        table.update({f"{package}.{name}": fn for name, fn in functions.items()})
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles tensors, numpy values, plain containers and inert network records; refuses any other global."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path
        self._inert_classes: dict[str, type[_Inert]] = {}
        self._allowed: dict[str, Any] = {
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
            "torch.storage._load_from_bytes": self._load_storage,
            "torch.Size": torch.Size,
            "torch.device": torch.device,
            "collections.OrderedDict": OrderedDict,
            **{f"builtins.{t.__name__}": t for t in (set, frozenset, slice, complex, dict, object)},
            "copyreg._reconstructor": self._reconstructor,
            "_codecs.encode": self._latin1_bytes,
            "torch_utils.persistence._reconstruct_persistent_obj": self._persistent_object,
            "dnnlib.util.EasyDict": dict,
            **_numpy_globals(),
        }

    def find_class(self, module: str, name: str) -> Any:
        module = PYTHON2_MODULES.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in self._allowed:
            return self._allowed[qualified]
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]
        if module.startswith(INERT_MODULE_PREFIXES):
            if qualified not in self._inert_classes:
                self._inert_classes[qualified] = type(name, (_Inert,), {"class_name": qualified})
            return self._inert_classes[qualified]
        raise self._refuse(qualified)

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.path} is not an EG3D network pickle: it refers to external objects "
                              "(a torch.save file renamed .pkl? give it as .pth)")

    def _refuse(self, qualified: str) -> CheckpointError:
        return CheckpointError(f"refusing to load {self.path}: it asks to run {qualified}")

    def _load_storage(self, data: bytes) -> Any:
        """A tensor storage from the legacy ``torch.save`` bytes PyTorch pickles it as, loaded weights-only."""
        return _torch_load_weights_only(io.BytesIO(data), self.path)

    def _persistent_object(self, meta: Any) -> _Inert:
        """The inert record of a ``torch_utils.persistence`` object; its ``module_src`` is ignored, never run."""
        if not (isinstance(meta, Mapping) and isinstance(meta.get("class_name"), str)
                and isinstance(meta.get("state"), Mapping)):
            raise CheckpointError(f"{self.path} is damaged: a pickled network lacks its class name or state")
        return _Inert(meta["class_name"], meta["state"])

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocol 0/1 objects), for inert stand-ins and EasyDicts only."""
        if base is object and state is None and isinstance(cls, type) and issubclass(cls, _Inert):
            return cls.__new__(cls)
        if cls is dict and base is dict:
            return dict(state or {})
        raise self._refuse(f"copyreg._reconstructor on {getattr(cls, '__name__', type(cls).__name__)}")

    def _latin1_bytes(self, text: Any, encoding: Any) -> bytes:
        """``_codecs.encode(text, 'latin1')``, how protocols 0-2 store bytes (tensor storages among them)."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._refuse(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")


def _torch_load_weights_only(source: Path | io.BytesIO, path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU, EasyDicts read as dicts; a refused global becomes a CheckpointError."""
    try:
        with torch.serialization.safe_globals([(dict, "dnnlib.util.EasyDict")]):
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file makes torch.load fail in arbitrary ways
        match = _WEIGHTS_ONLY_GLOBAL.search(str(exc))
        if match:
            raise CheckpointError(f"refusing to load {path}: it asks to run {match.group(1)}") from None
        detail = _WEIGHTS_ONLY_DETAIL.search(str(exc))
        reason = detail.group(1) if detail else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint ({reason})") from None


def _module_field(state: Mapping, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    """``state[key]`` when it has the expected kind (an empty one when absent); a CheckpointError otherwise."""
    value = state.get(key)
    if value is None:
        return ()
    if not isinstance(value, kind):
        raise CheckpointError(f"{path} is damaged: {key} of module {where} is a {type(value).__name__}")
    return value


def _module_state_dict(record: _Inert, path: Path, prefix: str = "",
                       ancestors: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of an inert module tree under dotted names, as ``state_dict()`` orders them."""
    where = prefix.rstrip(".") or record.class_name
    state = record.state
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is damaged: module {where} ({record.class_name}) carries no state")
    if id(record) in ancestors:
        raise CheckpointError(f"{path} is damaged: module {where} contains itself")
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
        if not isinstance(child, _Inert):
            raise CheckpointError(f"{path} is damaged: submodule {prefix}{name} is a {type(child).__name__}")
        tensors.update(_module_state_dict(child, path, f"{prefix}{name}.", ancestors + (id(record),)))
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


def _read_pickle(path: Path) -> GeneratorCheckpoint:
    """Recorded kwargs and state dict of ``G_ema`` (else ``G``) in an official EG3D network pickle."""
    try:
        with path.open("rb") as file:
            data = _RestrictedUnpickler(file, path).load()
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(f"{path} is truncated: the pickle ends early; download or copy it again") from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes make the unpickler fail in arbitrary ways
        raise CheckpointError(f"{path} is not a readable EG3D network pickle ({type(exc).__name__}: {exc}); "
                              "it may be damaged or truncated") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} is not an EG3D network pickle: it holds a {type(data).__name__}, "
                              "not a dict with G_ema")
    key = next((k for k in ("G_ema", "G") if data.get(k) is not None), None)
    if key is None:
        raise CheckpointError(f"{path} holds no generator (no 'G_ema' or 'G'; it holds "
                              f"{', '.join(map(repr, data)) or 'nothing'}): give the network snapshot with G_ema")
    generator = data[key]
    if not isinstance(generator, _Inert):
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
    data = _torch_load_weights_only(path, path)
    if _is_state_dict(data):
        return GeneratorCheckpoint(None, dict(data), None)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict with a generator state dict")
    key = next((k for k in ("G_ema", "G", "state_dict") if _is_state_dict(data.get(k))), None)
    if key is None:
        raise CheckpointError(f"{path} holds no generator state dict: none of 'G_ema', 'G', 'state_dict' is a "
                              f"dict of tensors (it holds {', '.join(map(repr, data)) or 'nothing'})")
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
    found = _READERS[file.suffix.lower()](file)
    if not found.state_dict:
        raise CheckpointError(f"{file} holds a generator without any parameters")
    kwargs, resolution = found.kwargs, found.neural_rendering_resolution
    if kwargs is None:  # weights only: the JSON file beside them describes them
        sidecar = _sidecar(file)
        kwargs, resolution = sidecar.get("generator_kwargs"), _resolution(sidecar.get("neural_rendering_resolution"))
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
