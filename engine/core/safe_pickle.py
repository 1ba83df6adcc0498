"""Reading pickles and ``torch.save`` files people send each other, without running anything in them.

A pickle is a program: each global it names is called with arguments it chooses.  ``SafeUnpickler``
runs Python's own pure-Python unpickler with these changes, so a crafted file can neither run code
nor make the reader allocate much more than the file holds:

* a global resolves only through a table of harmless callables (tensor and container rebuilding);
  any other is refused, naming what it asked for;
* state is set (BUILD) and classes are instantiated (NEWOBJ) only for the types a reader allows (an
  OrderedDict becomes a ``PlainDict``, which keeps nothing but torch's ``_metadata``, so no attribute
  can shadow a dict method);
* ``Limits`` bound the instructions, memo indices and mark nesting, and charge every argument a
  callable or a state receives (a memoised value passed a million times is charged a million times)
  against a budget proportional to the file's size; no length field allocates more than the file holds;
* every tensor is a view of a storage read from the file and checked to lie inside it (size, stride,
  offset), never one that grows its storage.

``load_torch`` reads a ``torch.save`` file (zip or legacy format) this way; ``check_nesting`` refuses
data that contains itself or nests deeper than the code walking it can follow.  Every failure is one
``CheckpointError`` sentence naming the file.
"""

from __future__ import annotations

import collections
import contextlib
import io
import mmap
import pickle
import reprlib
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch

from engine.core.errors import CheckpointError

MAX_OPCODES = 5_000_000
"""pickle instructions in one file (an official-style FFHQ snapshot with G, G_ema and D takes 25 000)"""
MAX_MEMO_INDEX = MAX_OPCODES
MAX_MARK_DEPTH = 100
"""nested marks (tuples, lists and dicts being built); real files stay below 25"""
MAX_NESTING = 100
"""containers inside containers in the loaded data; an FFHQ snapshot nests 20 deep"""
MAX_TENSOR_DIMS = 64
ITEM_COST = 64
"""bytes a container element is charged (its slot and the object it points to)"""
BUDGET_PER_FILE_BYTE, BUDGET_BASE = 4, 16 * 2**20
"""what the callables of one file may copy: 4 x its size + 16 MiB (a real file copies each storage once
or twice, plus small objects)"""
PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
"""module names pickle protocols 0-2 write for Python 2 compatibility"""
STORAGE_DTYPES = {f"torch.{name}": dtype for name, dtype in (
    ("DoubleStorage", torch.float64), ("FloatStorage", torch.float32), ("HalfStorage", torch.float16),
    ("BFloat16Storage", torch.bfloat16), ("LongStorage", torch.int64), ("IntStorage", torch.int32),
    ("ShortStorage", torch.int16), ("CharStorage", torch.int8), ("ByteStorage", torch.uint8),
    ("BoolStorage", torch.bool), ("ComplexDoubleStorage", torch.complex128), ("ComplexFloatStorage", torch.complex64),
    ("UntypedStorage", torch.uint8))}
"""the storage classes ``torch.save`` names, read as the element type they stand for"""


class Limits:
    """What reading one file may cost; shared by the unpicklers reading its parts."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.opcodes = 0
        self.budget = BUDGET_PER_FILE_BYTE * size + BUDGET_BASE

    def refuse(self, problem: str) -> CheckpointError:
        return CheckpointError(f"refusing to load {self.path}: {problem}")

    def damaged(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path} is damaged: {problem}")

    def count_opcode(self) -> None:
        self.opcodes += 1
        if self.opcodes > MAX_OPCODES:
            raise self.refuse(f"it holds more than {MAX_OPCODES} pickle instructions")

    def spend(self, nbytes: int) -> None:
        """Charge ``nbytes`` of memory against the file's budget."""
        self.budget -= nbytes
        if self.budget < 0:
            raise self.refuse("it makes the reader copy far more data than the file holds")

    def charge(self, *values: Any) -> None:
        """Charge what copying ``values`` (shallowly) costs."""
        for value in values:
            if isinstance(value, (str, bytes, bytearray)):
                self.spend(len(value))
            elif isinstance(value, (tuple, list, dict, set, frozenset)):
                self.spend(ITEM_COST * len(value))


class Storage(NamedTuple):
    """A storage read from a file: its elements as a flat tensor, which bounds every tensor viewing it."""

    flat: torch.Tensor


class PlainDict(dict):
    """An OrderedDict read from a file: an (insertion-ordered) dict carrying at most torch's ``_metadata``."""

    def __reduce__(self):
        """Saved again as the OrderedDict it was read from, so a loaded state can be written back and re-read."""
        return collections.OrderedDict, (list(self.items()),), vars(self) or None


class Record:
    """Stand-in for a pickled object of a class a reader names (``record_class``): the class it named and the
    state it carried; nothing of that class is imported or run."""

    class_name = ""

    def __init__(self, class_name: str, state: Any) -> None:
        self.class_name = class_name
        self.state = state

    def __setstate__(self, state: Any) -> None:
        self.state = state


def record_class(qualified: str) -> type[Record]:
    """A Record type standing in for the class ``qualified`` ("module.Class") in a reader's table: the file may
    create it (NEWOBJ) and set its state (BUILD)."""
    return type(qualified.rpartition(".")[2], (Record,), {"class_name": qualified})


class _ExactReader:
    """``read(n)`` gives n bytes or raises EOFError: a truncated file ends the unpickling, and a length
    field never allocates more than is left (``stream`` is a BytesIO or an mmap, which read at most that)."""

    def __init__(self, stream: io.BytesIO | mmap.mmap) -> None:
        self.stream = stream

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def readline(self) -> bytes:
        return self.stream.readline()


def _flat_storage(dtype: torch.dtype, data: bytearray) -> Storage:
    """The storage whose elements are ``data``'s bytes (shared, not copied)."""
    return Storage(torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype))


def _whole(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**62


class SafeUnpickler(pickle._Unpickler):
    """Python's pure-Python unpickler resolving globals through ``table`` only, within ``limits``;
    ``storage`` resolves persistent ids (the storages of a ``torch.save`` file)."""

    INSTANTIABLE: tuple[type, ...] = (dict, Record)
    """classes a file may create with NEWOBJ (subclasses add theirs; Records only where the table names them)"""

    def __init__(self, stream: io.BytesIO | mmap.mmap, limits: Limits, table: Mapping[str, Any] | None = None,
                 storage: Callable[[Any], Storage] | None = None) -> None:
        super().__init__(_ExactReader(stream))
        self.limits = limits
        self.storage = storage
        self.table: dict[str, Any] = {
            "collections.OrderedDict": PlainDict, "torch.Size": torch.Size, "torch.device": torch.device,
            "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
            "_codecs.encode": self._latin1_bytes,
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch.storage._load_from_bytes": self._legacy_storage,
            **STORAGE_DTYPES, **(table or {})}

    def find_class(self, module: str, name: str) -> Any:
        module = PYTHON2_MODULES.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in self.table:
            return self.table[qualified]
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]
        raise self.limits.refuse(f"it asks to run {qualified}")

    def persistent_load(self, pid: Any) -> Any:
        if self.storage is None:
            raise self.limits.damaged("it refers to objects outside the pickle")
        return self.storage(pid)

    def set_state(self, obj: Any, state: Any) -> None:
        """BUILD: a PlainDict keeps torch's ``_metadata``, a Record its state; other types refuse (subclasses allow
        theirs)."""
        if isinstance(obj, Record):
            obj.__setstate__(state)
            return
        if type(obj) is PlainDict and isinstance(state, dict) and set(state) <= {"_metadata"}:
            vars(obj).update(state)
            return
        what = "an OrderedDict" if type(obj) is PlainDict else f"a {type(obj).__name__}"
        raise self.limits.refuse(f"it asks to set attributes or state of {what}")

    def call(self, func: Any, args: Any) -> Any:
        """REDUCE (and INST / OBJ): ``func(*args)``, the arguments charged first."""
        self.limits.charge(args)
        args = tuple(args)
        self.limits.charge(*args)
        return func(*args)

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        """NEWOBJ / NEWOBJ_EX, for the INSTANTIABLE classes only."""
        if not (isinstance(cls, type) and issubclass(cls, self.INSTANTIABLE)):
            raise self.limits.refuse(f"it asks to create a {getattr(cls, '__qualname__', type(cls).__name__)}")
        self.limits.charge(args, kwargs)
        return cls.__new__(cls, *args, **kwargs)

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self.call(klass, args))

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args)

    def _load_build(self) -> None:
        state = self.stack.pop()
        self.limits.charge(state, *(state if isinstance(state, tuple) else ()))
        self.set_state(self.stack[-1], state)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, {})

    def _load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)

    def _load_mark(self) -> None:
        if len(self.metastack) >= MAX_MARK_DEPTH:
            raise self.limits.refuse(f"it nests more than {MAX_MARK_DEPTH} levels deep")
        pickle._Unpickler.load_mark(self)

    def _memoize(self, index: int) -> None:
        if not 0 <= index <= MAX_MEMO_INDEX:
            raise self.limits.refuse(f"it stores a value at memo index {index}, beyond {MAX_MEMO_INDEX}")
        self.memo[index] = self.stack[-1]

    def _load_put(self) -> None:
        self._memoize(int(self.readline()[:-1]))

    def _load_long_binput(self) -> None:
        self._memoize(struct.unpack("<I", self.read(4))[0])

    def _load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.limits.size:
            raise self.limits.damaged(f"it declares {size} bytes where the file holds {self.limits.size}")
        data = bytearray(size)
        self.readinto(data)
        self.append(data)

    def _latin1_bytes(self, text: Any, encoding: Any) -> bytes:
        """``_codecs.encode(text, 'latin1')``, how protocols 0-2 store bytes (tensor storages among them)."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self.limits.refuse(f"it asks to run _codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                        hooks: Any = None, metadata: Any = None) -> torch.Tensor:
        """``torch._utils._rebuild_tensor(_v2)``: a view of ``storage``, checked to lie inside it."""
        if not isinstance(storage, Storage):
            raise self.limits.damaged(f"a tensor's storage is a {type(storage).__name__}")
        if hooks or metadata:
            raise self.limits.refuse("it attaches hooks or metadata to a tensor")
        available = storage.flat.numel()
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_TENSOR_DIMS
                and all(_whole(v) for v in (offset, *size, *stride))):
            raise self.limits.damaged(f"a tensor has an impossible layout: size {reprlib.repr(size)}, stride "
                                      f"{reprlib.repr(stride)}, offset {reprlib.repr(offset)}")
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
        if end > available:
            raise self.limits.damaged(f"a tensor of size {tuple(size)} (stride {tuple(stride)}, offset {offset}) "
                                      f"reaches past its storage of {available} elements")
        return storage.flat.as_strided(size, stride, offset)

    def _rebuild_parameter(self, data: Any, requires_grad: Any, hooks: Any) -> torch.Tensor:
        """``torch._utils._rebuild_parameter``: its tensor (parameters are read as plain tensors)."""
        if not isinstance(data, torch.Tensor) or hooks:
            raise self.limits.damaged("a parameter holds no tensor, or hooks")
        return data

    def _legacy_storage(self, data: Any) -> Storage:
        """``torch.storage._load_from_bytes``: the storage a legacy-format ``torch.save`` of it wrote."""
        if not isinstance(data, bytes):
            raise self.limits.damaged(f"a pickled storage is a {type(data).__name__}, not bytes")
        root = _read_legacy(io.BytesIO(data), len(data), self.limits, {})
        if not isinstance(root, Storage):
            raise self.limits.damaged(f"a pickled storage holds a {type(root).__name__}")
        return root


def _counted(op: Callable[[SafeUnpickler], None]) -> Callable[[SafeUnpickler], None]:
    def run(self: SafeUnpickler) -> None:
        self.limits.count_opcode()
        op(self)
    return run


SafeUnpickler.dispatch = {code: _counted(op) for code, op in {
    **pickle._Unpickler.dispatch,
    pickle.REDUCE[0]: SafeUnpickler._load_reduce, pickle.BUILD[0]: SafeUnpickler._load_build,
    pickle.NEWOBJ[0]: SafeUnpickler._load_newobj, pickle.NEWOBJ_EX[0]: SafeUnpickler._load_newobj_ex,
    pickle.MARK[0]: SafeUnpickler._load_mark, pickle.PUT[0]: SafeUnpickler._load_put,
    pickle.LONG_BINPUT[0]: SafeUnpickler._load_long_binput, pickle.BYTEARRAY8[0]: SafeUnpickler._load_bytearray8,
}.items()}


def _storage_id(pid: Any, length: int, limits: Limits) -> tuple[torch.dtype, str, int]:
    """(element type, key, element count) of a ``('storage', type, key, location, count, ...)`` persistent id."""
    if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
            and isinstance(pid[2], str) and _whole(pid[4])):
        raise limits.damaged(f"a storage reference is {reprlib.repr(pid)}")
    return pid[1], pid[2], pid[4]


def _read_legacy(stream: io.BytesIO | mmap.mmap, size: int, limits: Limits, table: Mapping[str, Any]) -> Any:
    """The object a legacy-format ``torch.save`` wrote to ``stream`` (``size`` bytes): header pickles, the
    object (its storages by key), the keys, then each storage's element count and bytes."""
    def plain() -> Any:
        return SafeUnpickler(stream, limits, table).load()

    if plain() != torch.serialization.MAGIC_NUMBER or plain() != torch.serialization.PROTOCOL_VERSION:
        raise limits.damaged("it is not a PyTorch file")
    info = plain()
    if not (isinstance(info, dict) and info.get("little_endian") is True):
        raise limits.refuse("it was written on a big-endian machine")
    buffers: dict[str, tuple[torch.dtype, bytearray]] = {}

    def storage(pid: Any) -> Storage:
        dtype, key, count = _storage_id(pid, 6, limits)
        if pid[5] is not None:
            raise limits.refuse("it uses storage views, which this reader does not support")
        if key not in buffers:
            nbytes = count * dtype.itemsize
            if nbytes > size:
                raise limits.damaged(f"a storage of {nbytes} bytes is larger than the file")
            limits.spend(nbytes)
            buffers[key] = dtype, bytearray(nbytes)
        return _flat_storage(*buffers[key])

    root = SafeUnpickler(stream, limits, table, storage).load()
    keys = plain()
    if not (isinstance(keys, list) and len(keys) == len(set(keys)) and set(keys) == set(buffers)):
        raise limits.damaged("its storage list does not match its storages")
    reader = _ExactReader(stream)
    for key in keys:
        dtype, data = buffers[key]
        if struct.unpack("<q", reader.read(8))[0] * dtype.itemsize != len(data):
            raise limits.damaged(f"storage {key} has another size than its reference says")
        memoryview(data)[:] = reader.read(len(data))
    return root


def _read_zip(file: BinaryIO, limits: Limits, table: Mapping[str, Any]) -> Any:
    """The object a zip-format ``torch.save`` wrote: ``*/data.pkl`` with storages from ``*/data/<key>``."""
    with zipfile.ZipFile(file) as archive:
        entries = archive.infolist()
        if any(e.compress_type != zipfile.ZIP_STORED or e.file_size > limits.size for e in entries):
            raise limits.refuse("it holds compressed or oversized entries, which torch.save never writes")
        pickles = [e.filename for e in entries if e.filename.rpartition("/")[2] == "data.pkl"]
        if len(pickles) != 1:
            raise limits.damaged(f"it holds {len(pickles)} data.pkl entries, not one")
        prefix = pickles[0].removesuffix("data.pkl")
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
            raise limits.refuse("it was written on a big-endian machine")
        buffers: dict[str, bytearray] = {}

        def storage(pid: Any) -> Storage:
            dtype, key, count = _storage_id(pid, 5, limits)
            if key not in buffers:
                try:
                    entry = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise limits.damaged(f"storage {key} is missing") from None
                limits.spend(entry.file_size)
                buffers[key] = bytearray(archive.read(entry))
            if len(buffers[key]) != count * dtype.itemsize:
                raise limits.damaged(f"storage {key} holds {len(buffers[key])} bytes, not {count} x {dtype}")
            return _flat_storage(dtype, buffers[key])

        return SafeUnpickler(io.BytesIO(archive.read(pickles[0])), limits, table, storage).load()


@contextlib.contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turns any failure while reading ``path`` (a ``what``) into one CheckpointError sentence naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(f"{path} is truncated: the {what} ends early; download or copy it again") from None
    except Exception as exc:  # noqa: BLE001 - crafted bytes make any step fail in arbitrary ways
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable {what}; it may be damaged or truncated "
                              f"({type(exc).__name__}: {detail})") from None


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap]:
    """``path`` mapped read-only (reads of it never allocate more than it holds)."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def load_torch(path: str | Path, table: Mapping[str, Any] | None = None) -> Any:
    """What a ``torch.save`` file (zip or legacy format) holds, read without running anything in it:
    tensors (CPU views of the file's own storages, bounds-checked), plain containers, numbers, strings,
    and what ``table`` (qualified name -> harmless object) adds; a CheckpointError naming the file otherwise."""
    path = Path(path)
    with reading(path, "PyTorch file"):
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
        size = path.stat().st_size
        if size == 0:
            raise CheckpointError(f"{path} is empty")
        limits = Limits(path, size)
        with path.open("rb") as file:
            if file.read(4) == b"PK\x03\x04":
                data = _read_zip(file, limits, table or {})
            else:
                with mapped(path) as stream:
                    data = _read_legacy(stream, size, limits, table or {})
        check_nesting(data, path)
    return data


def _parts(value: Any) -> list:
    """The values ``value`` holds that code walking it may recurse into."""
    parts = []
    if isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        parts = list(value)
    attributes = None if isinstance(value, type) else getattr(value, "__dict__", None)
    return parts + list(attributes.values()) if isinstance(attributes, dict) else parts


def check_nesting(data: Any, path: Path) -> None:
    """Refuse data that contains itself or nests more than MAX_NESTING containers deep: code that walks
    it (and ``repr``) recurses once a level.  Iterative; visits each container once."""
    heights: dict[int, int] = {}
    stack: list[list] = [[data, iter(_parts(data)), 0]]  # container, its parts left, tallest part so far
    on_path = {id(data)}
    while stack:
        frame = stack[-1]
        part = next(frame[1], stack)  # the stack itself marks the end
        if part is stack:
            stack.pop()
            on_path.discard(id(frame[0]))
            height = heights[id(frame[0])] = frame[2] + 1
            if height > MAX_NESTING:
                raise CheckpointError(f"{path} is damaged: its data nests more than {MAX_NESTING} levels deep")
            if stack:
                stack[-1][2] = max(stack[-1][2], height)
        elif id(part) in on_path:
            raise CheckpointError(f"{path} is damaged: its data contains itself")
        elif id(part) in heights:
            frame[2] = max(frame[2], heights[id(part)])
        elif parts := _parts(part):
            if len(stack) >= MAX_NESTING:
                raise CheckpointError(f"{path} is damaged: its data nests more than {MAX_NESTING} levels deep")
            on_path.add(id(part))
            stack.append([part, iter(parts), 0])
