"""EG3D checkpoints as users have them, written from real generators for the import tests.

``write_official_pickle`` writes a network snapshot the way NVIDIA's EG3D training does: a plain
pickle of {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'} whose networks went through
``torch_utils.persistence``.  Every engine module is pickled as the official class it stands for
(``OFFICIAL_CLASSES``): persistent classes as ``_reconstruct_persistent_obj(meta)`` with their
module source, class name and ``__dict__`` state, the plain torch modules EG3D does not decorate
(OSGDecoder, ImportanceRenderer, RaySampler, MipRayMarcher2, Sequential, Softplus) by class
reference.  The stand-in ``torch_utils``, ``dnnlib`` and ``training`` packages exist only while a
file is written (``nvidia_style_packages``); loading must work, and run nothing, without them.
``write_live3d_pth`` writes the .pth layout of Live3DPortrait and 3DPE.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import torch
from torch import nn

from engine.portrait.eg3d import TriPlaneGenerator
from engine.portrait.stylegan import (FullyConnectedLayer, MappingNetwork, StyleGAN2Backbone, SynthesisBlock,
                                      SynthesisLayer, SynthesisNetwork, ToRGBLayer)
from engine.portrait.superresolution import SUPERRESOLUTION_MODULES, SuperResolution
from engine.portrait.triplane import ImportanceRenderer, OSGDecoder, plane_axes

PERSISTENCE_SRC = '''
"""Test stand-in for torch_utils.persistence: networks pickle as (_reconstruct_persistent_obj, (meta,))."""
import inspect
import sys

FORMAT_VERSION = 6
source_prefix = ""
"""text put before each module source in a pickle, so a test can plant code that must never run"""


def _reconstruct_persistent_obj(meta):
    raise RuntimeError("a safe loader never calls the reconstruct function named in the pickle")


def module_source(module_name):
    return source_prefix + inspect.getsource(sys.modules[module_name])


def persistent_reduce(module_src, class_name, state):
    meta = dict(type="class", version=FORMAT_VERSION, module_src=module_src, class_name=class_name, state=state)
    return _reconstruct_persistent_obj, (meta,), None


def persistent_class(cls):
    class Persistent(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._orig_module_src = module_source(cls.__module__)
            self._orig_class_name = cls.__name__
            self._init_args = args
            self._init_kwargs = kwargs

        def __reduce__(self):
            return persistent_reduce(self._orig_module_src, self._orig_class_name, super().__reduce__()[2])

    Persistent.__name__ = cls.__name__
    Persistent.__qualname__ = cls.__qualname__
    return Persistent
'''

EASYDICT_SRC = '''
class EasyDict(dict):
    """A dict whose items read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value
'''

PERSISTENT_MODULE_SRC = '"""Stand-in: its classes are pickled with this source, never imported from here."""\n'


def _plain_module(*names: str) -> str:
    """Source of a stand-in module defining undecorated ``torch.nn.Module`` classes (pickled by reference)."""
    return "import torch\n" + "".join(f"\n\nclass {name}(torch.nn.Module):\n    pass\n" for name in names)


STAND_IN_FILES = {
    "torch_utils/__init__.py": "", "torch_utils/persistence.py": PERSISTENCE_SRC,
    "dnnlib/__init__.py": "", "dnnlib/util.py": EASYDICT_SRC,
    "training/__init__.py": "",
    "training/networks_stylegan2.py": PERSISTENT_MODULE_SRC,
    "training/superresolution.py": PERSISTENT_MODULE_SRC,
    "training/triplane.py": PERSISTENT_MODULE_SRC + _plain_module("OSGDecoder"),
    "training/volumetric_rendering/__init__.py": "",
    "training/volumetric_rendering/renderer.py": _plain_module("ImportanceRenderer"),
    "training/volumetric_rendering/ray_sampler.py": _plain_module("RaySampler"),
    "training/volumetric_rendering/ray_marcher.py": _plain_module("MipRayMarcher2"),
    "training/dual_discriminator.py": '''
import torch
from torch_utils import persistence


@persistence.persistent_class
class DualDiscriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels=3):
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.weight = torch.nn.Parameter(torch.zeros(1, c_dim))
''',
}
"""the stand-in packages: NVIDIA's persistence and EasyDict, and the EG3D modules the pickles name"""
STAND_IN_PACKAGES = ("torch_utils", "dnnlib", "training")

OFFICIAL_CLASSES: dict[type[nn.Module], tuple[str, str]] = {
    TriPlaneGenerator: ("training.triplane", "TriPlaneGenerator"),
    StyleGAN2Backbone: ("training.networks_stylegan2", "Generator"),  # imported as StyleGAN2Backbone there
    MappingNetwork: ("training.networks_stylegan2", "MappingNetwork"),
    FullyConnectedLayer: ("training.networks_stylegan2", "FullyConnectedLayer"),
    SynthesisNetwork: ("training.networks_stylegan2", "SynthesisNetwork"),
    SynthesisBlock: ("training.networks_stylegan2", "SynthesisBlock"),
    SynthesisLayer: ("training.networks_stylegan2", "SynthesisLayer"),
    ToRGBLayer: ("training.networks_stylegan2", "ToRGBLayer"),
    OSGDecoder: ("training.triplane", "OSGDecoder"),
    ImportanceRenderer: ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
}
"""engine class -> (module, class) of the official EG3D class it stands for; super-resolution modules
are named by their spec, and a block that does not upsample is SynthesisBlockNoUp"""
BY_REFERENCE = {"OSGDecoder", "ImportanceRenderer"}
"""official classes that are plain torch modules (not persistent): pickled by class reference"""


@contextlib.contextmanager
def nvidia_style_packages(source_prefix: str = "",
                          extra_files: Mapping[str, str] | None = None) -> Iterator[SimpleNamespace]:
    """Write the stand-in packages (plus ``extra_files``, relative path -> source) to a temporary
    folder and import them; yields their ``EasyDict`` and ``modules`` by dotted name; unloads on exit."""
    files = {**STAND_IN_FILES, **(extra_files or {})}
    with tempfile.TemporaryDirectory(prefix="nvidia-pkgs-") as folder:
        root = Path(folder)
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(textwrap.dedent(text))
        sys.path.insert(0, folder)
        try:
            persistence = importlib.import_module("torch_utils.persistence")
            persistence.source_prefix = source_prefix
            names = [rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for rel in files]
            modules = {name: importlib.import_module(name) for name in names}
            yield SimpleNamespace(EasyDict=modules["dnnlib.util"].EasyDict, modules=modules)
        finally:
            sys.path.remove(folder)
            for name in [m for m in sys.modules if m.split(".")[0] in STAND_IN_PACKAGES]:
                del sys.modules[name]


def official_class(module: nn.Module) -> tuple[str, str]:
    """(module, class) of the official EG3D class an engine module stands for."""
    if isinstance(module, SuperResolution):
        return "training.superresolution", next(n for n, s in SUPERRESOLUTION_MODULES.items() if s is module.spec)
    if isinstance(module, SynthesisBlock) and not module.upsample:
        return "training.superresolution", "SynthesisBlockNoUp"
    if type(module) not in OFFICIAL_CLASSES:
        raise TypeError(f"no official EG3D class is known for {type(module).__qualname__}")
    return OFFICIAL_CLASSES[type(module)]


def _from_engine(value: Any) -> bool:
    """Whether ``value`` is an instance of an engine class (which official pickles cannot name)."""
    return type(value).__module__.startswith("engine.")


def _stand_in(module_name: str, class_name: str, state: dict | None = None) -> nn.Module:
    """An instance of a plain stand-in module class (the packages must be loaded), with ``state`` as
    its ``__dict__`` when given."""
    cls = getattr(sys.modules[module_name], class_name)
    if state is None:
        return cls()
    stand_in = cls.__new__(cls)
    stand_in.__dict__.update(state)
    return stand_in


def _official_state(module: nn.Module) -> dict:
    """``module.__dict__`` as the official class's: engine-only helper objects left out, submodules of
    plain (undecorated) official classes swapped for stand-ins, and the parameterless submodules and
    plain attributes the official class has added."""
    state = {k: v for k, v in vars(module).items() if not _from_engine(v)}
    children = {}
    for name, child in state["_modules"].items():
        official = official_class(child) if _from_engine(child) else None
        if official and official[1] in BY_REFERENCE:
            child = _stand_in(*official, _official_state(child))
        children[name] = child
    if isinstance(module, TriPlaneGenerator):
        order = ["renderer", "ray_sampler", *(name for name in children if name != "renderer")]
        children["ray_sampler"] = _stand_in("training.volumetric_rendering.ray_sampler", "RaySampler")
        children = {name: children[name] for name in order}
        state["_last_planes"] = None
    elif isinstance(module, ImportanceRenderer):
        children = {"ray_marcher": _stand_in("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
                    **children}
        state["plane_axes"] = plane_axes()
    state["_modules"] = children
    return state


class _OfficialPickler(pickle.Pickler):
    """Pickles engine modules through the stand-in persistence as the official EG3D classes they
    stand for; everything else as usual."""

    def __init__(self, file: IO[bytes], protocol: int | None, generator_kwargs: dict, easydict: type) -> None:
        super().__init__(file, protocol)
        self.generator_kwargs = generator_kwargs
        self.easydict = easydict

    def reducer_override(self, obj: Any) -> Any:
        if not (isinstance(obj, nn.Module) and _from_engine(obj)):
            return NotImplemented
        module_name, class_name = official_class(obj)
        persistence = sys.modules["torch_utils.persistence"]
        source = persistence.module_source(module_name)
        state = _official_state(obj) | {"_orig_module_src": source, "_orig_class_name": class_name,
                                         "_init_args": (), "_init_kwargs": self._init_kwargs(obj)}
        return persistence.persistent_reduce(source, class_name, state)

    def _init_kwargs(self, module: nn.Module) -> dict:
        """The generator's constructor kwargs, nested dicts as the EasyDicts official training passes
        (empty for submodules, whose arguments a loader never reads)."""
        if not isinstance(module, TriPlaneGenerator):
            return {}
        return {k: self.easydict(v) if isinstance(v, dict) else v for k, v in self.generator_kwargs.items()}


def write_official_pickle(path: Path, generator: TriPlaneGenerator, generator_kwargs: dict,
                          protocol: int | None = None) -> Path:
    """``generator`` (as G and G_ema, its ``neural_rendering_resolution`` included) built from
    ``generator_kwargs`` in an official-style EG3D network snapshot at ``path``."""
    with nvidia_style_packages() as pkgs:
        discriminator = pkgs.modules["training.dual_discriminator"].DualDiscriminator(generator.c_dim,
                                                                                      generator.img_resolution)
        snapshot = {"G": generator, "D": discriminator, "G_ema": generator, "augment_pipe": None,
                    "training_set_kwargs": pkgs.EasyDict(path="ffhq.zip", resolution=generator.img_resolution,
                                                         use_labels=True)}
        with path.open("wb") as file:
            _OfficialPickler(file, protocol, generator_kwargs, pkgs.EasyDict).dump(snapshot)
    return path


def write_live3d_pth(path: Path, generator: TriPlaneGenerator, generator_kwargs: dict) -> Path:
    """``generator`` built from ``generator_kwargs`` saved as Live3DPortrait / 3DPE save theirs: state
    dict, init args and kwargs, rendering kwargs (under their misspelt key) and resolution, beside D."""
    torch.save({"G": generator.state_dict(), "G_init_args": (), "G_init_kwargs": generator_kwargs,
                "G_neural_rendering_resolution": generator.neural_rendering_resolution,
                "G_renderinig_kwargs": generator_kwargs["rendering_kwargs"],
                "D": {"weight": torch.zeros(1, generator.c_dim)}, "D_init_args": (),
                "D_init_kwargs": {"c_dim": generator.c_dim, "img_resolution": generator.img_resolution}}, path)
    return path
