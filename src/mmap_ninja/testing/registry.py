"""How to test one kind of map (`KindSpec`), and the registry of specs (`register_spec`, `specs`, `spec_for`).

Every kind registered in `mmap_ninja.kinds.maps.KINDS` needs at least one spec; `specs()` raises `MissingSpecError`
for a kind without one, so a new kind cannot go untested by accident. The three built-in kinds have their
specs here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.errors import MissingSpecError
from mmap_ninja.kinds.images import ImagesMmap
from mmap_ninja.kinds.maps import KINDS, MapBase
from mmap_ninja.kinds.numpy import NumpyMmap
from mmap_ninja.kinds.ragged import RaggedMmap
from mmap_ninja.kinds.records import RecordsMmap
from mmap_ninja.kinds.strings import StringsMmap

__all__ = [
    "BUILTIN_SPECS",
    "BadSample",
    "KindSpec",
    "MissingSpecError",
    "arrays_equal",
    "numpy_sample",
    "ragged_sample",
    "register_spec",
    "spec_for",
    "specs",
    "strings_sample",
]


@dataclass(frozen=True)
class BadSample:
    """A value a map of the kind must refuse, and the exception it must raise.

    ``match`` is a regular expression the message must contain (``None``: any message). ``in_setitem=False``
    when in-place assignment refuses the value with another exception (or accepts it, as NumPy broadcasting
    accepts a scalar), so only ``append``, ``extend`` and the builders are checked with it. ``in_first_write=False``
    when the value is bad only for a map whose dtype is already fixed (a first batch of a new numpy map may mix
    int and float samples: NumPy promotes them, and the map takes the promoted dtype).
    """

    value: Any
    error: type[BaseException]
    match: Optional[str] = None
    in_setitem: bool = True
    in_first_write: bool = True

    def __repr__(self) -> str:
        shown = repr(self.value)
        return f"BadSample({shown[:40] + '...' if len(shown) > 40 else shown}, {self.error.__name__})"


def arrays_equal(got: Any, want: Any) -> bool:
    """Equal as samples: the same ``str``, or arrays of the same dtype, shape and bytes."""
    if isinstance(want, str) or isinstance(got, str):
        return type(got) is type(want) and bool(got == want)
    got_array, want_array = np.asarray(got), np.asarray(want)
    return (got_array.dtype == want_array.dtype and got_array.shape == want_array.shape
            and got_array.tobytes() == want_array.tobytes())


@dataclass(frozen=True)
class KindSpec:
    """Everything the conformance tests need to know about one kind of map (or one kind with one codec).

    The callables must be module-level functions (the crash and concurrency tests pickle the spec to send it to
    child processes, which import them by name).

    - ``container``: the map class (a `MapBase` subclass registered in `mmap_ninja.kinds.maps.KINDS`).
    - ``make_sample(i)``: sample number ``i`` (any ``i >= 0``); it must encode ``i`` so that a reader can tell
      which sample it holds (two different ``i`` never give equal samples).
    - ``equal(got, want)``: whether a sample read back is the one written (dtype and shape included).
    - ``bad_samples``: values the map must refuse once it holds samples from ``make_sample``, each with the
      exception it must raise.
    - ``build_options``: keyword arguments of ``from_generator`` / ``from_indexable`` for this kind (a dtype,
      a sample shape, a codec, ...).
    - ``variant(sample)``: a different value of the same size, for in-place assignment (``m[i] = v``); ``None``
      if the kind has no in-place assignment.
    - ``name``: how the tests name it (default: the kind's name).
    """

    container: type[MapBase]
    make_sample: Callable[[int], Any]
    equal: Callable[[Any, Any], bool] = arrays_equal
    bad_samples: Sequence[BadSample] = ()
    build_options: Mapping[str, Any] = field(default_factory=dict)
    variant: Optional[Callable[[Any], Any]] = None
    name: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.container, type) and issubclass(self.container, MapBase)):
            raise TypeError(f"container must be a MapBase subclass, got {self.container!r}")
        if not self.name:
            object.__setattr__(self, "name", self.kind)

    @property
    def kind(self) -> str:
        """The kind's name, as headers and `KINDS` give it."""
        return self.container.layout.kind

    def samples(self, start: int, stop: int) -> list[Any]:
        """Samples ``start .. stop - 1``."""
        return [self.make_sample(i) for i in range(start, stop)]

    def build(self, path: str | Path, length: int, batch_size: int = 64) -> MapBase:
        """A map at ``path`` holding samples ``0 .. length - 1``, built by the container's ``from_generator`` with
        the spec's ``build_options``."""
        return self.container.from_generator(path, (self.make_sample(i) for i in range(length)), batch_size,
                                             **self.build_options)

    def __repr__(self) -> str:
        return f"KindSpec({self.name!r}, {self.container.__name__})"


_SPECS: dict[str, KindSpec] = {}


def register_spec(spec: KindSpec) -> KindSpec:
    """Add ``spec`` to the registry (replacing a spec of the same name) and return it."""
    _SPECS[spec.name] = spec
    return spec


def specs(*, require_all: bool = True) -> list[KindSpec]:
    """The registered specs whose kind is registered in `KINDS`, sorted by name.

    With ``require_all`` (the default) a kind in `KINDS` that no spec covers raises `MissingSpecError`.
    """
    if require_all:
        covered = {spec.kind for spec in _SPECS.values()}
        missing = sorted(kind for kind in KINDS if kind not in covered)
        if missing:
            raise MissingSpecError(
                f"kind(s) {', '.join(map(repr, missing))} registered in mmap_ninja.kinds.maps.KINDS have no test spec: "
                f"register one with mmap_ninja.testing.register_spec(KindSpec(container=..., make_sample=...)) so "
                f"that the conformance tests cover them")
    return [spec for name, spec in sorted(_SPECS.items()) if spec.kind in KINDS]


def spec_for(name: str) -> KindSpec:
    """The spec registered under ``name`` (a kind's name for the built-in kinds)."""
    try:
        return _SPECS[name]
    except KeyError:
        where = "registered in mmap_ninja.kinds.maps.KINDS" if name in KINDS else "not a registered kind either"
        raise MissingSpecError(f"no test spec named {name!r} ({where}); registered specs: "
                               f"{', '.join(sorted(_SPECS)) or 'none'}") from None


# ---------------------------------------------------------------------------------------------- built-in kinds

_EXTRA_CHARACTERS = "é€😀"


def strings_sample(i: int) -> str:
    """``"{i}:"``, then up to three non-ASCII characters and up to 49 ``x`` (1 to 4 UTF-8 bytes per character)."""
    return f"{i}:" + _EXTRA_CHARACTERS[:i % 4] + "x" * (i % 50)


def reversed_string(text: str) -> str:
    """The characters in reverse order: the same UTF-8 byte size."""
    return text[::-1]


def ragged_sample(i: int) -> np.ndarray[Any, Any]:
    """An int64 array holding ``i * 1000, i * 1000 + 1, ...``; shapes cycle through 1-D, 2-D and 0-D, and every
    fifteenth sample is an empty ``(0, i)`` array."""
    if i % 3 == 0:
        shape: tuple[int, ...] = (i % 5,) if i % 5 else (0, i)  # an empty sample tells its index by its shape
    elif i % 3 == 1:
        shape = (1 + i % 2, 1 + i % 4)
    else:
        shape = ()
    size = int(np.prod(shape, dtype=np.int64))
    return (np.arange(size, dtype=np.int64) + i * 1000).reshape(shape)


NUMPY_SAMPLE_SHAPE = (3, 4)


def numpy_sample(i: int) -> np.ndarray[Any, Any]:
    """A ``(3, 4)`` int32 array holding ``12 * i .. 12 * i + 11``."""
    return (np.arange(12, dtype=np.int32) + 12 * i).reshape(NUMPY_SAMPLE_SHAPE)


def negated(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``-array - 1``: the same dtype and shape, and different from every `ragged_sample` / `numpy_sample`."""
    result: np.ndarray[Any, Any] = -np.asarray(array) - 1
    return result


STRINGS_SPEC = KindSpec(
    container=StringsMmap,
    make_sample=strings_sample,
    bad_samples=(
        BadSample(3, TypeError, "int, expected str"),
        BadSample(b"bytes", TypeError, "bytes, expected str"),
        BadSample(None, TypeError),
        BadSample(["a list"], TypeError),
        BadSample("\ud800", ValueError, "UTF-8"),  # a lone surrogate has no UTF-8 encoding
    ),
    variant=reversed_string,
)

RAGGED_SPEC = KindSpec(
    container=RaggedMmap,
    make_sample=ragged_sample,
    build_options={"dtype": np.int64},
    bad_samples=(
        BadSample(np.array([1.5]), ValueError, "1.5"),  # lossy cast to the map's int64
        BadSample(np.array([2**63], dtype=np.uint64), ValueError),  # does not fit int64
        BadSample(np.array(["a"]), TypeError),
        BadSample("text", TypeError),
        BadSample([[1, 2], [3]], ValueError),  # not a regular array
        BadSample(None, TypeError),
        BadSample({"a": 1}, TypeError),
    ),
    variant=negated,
)

NUMPY_SPEC = KindSpec(
    container=NumpyMmap,
    make_sample=numpy_sample,
    build_options={"dtype": np.int32, "sample_shape": NUMPY_SAMPLE_SHAPE},
    bad_samples=(
        BadSample(np.zeros((2, 2), np.int32), ValueError),  # another shape
        BadSample(np.zeros((4, 3), np.int32), ValueError),  # the same size, another shape
        BadSample(np.full(NUMPY_SAMPLE_SHAPE, 0.5), ValueError, "0.5", in_first_write=False),  # lossy to int32
        BadSample(np.full(NUMPY_SAMPLE_SHAPE, 2**40), ValueError, in_first_write=False),  # does not fit int32
        BadSample(np.full(NUMPY_SAMPLE_SHAPE, 1j), TypeError, in_first_write=False),
        BadSample("abc", ValueError, in_setitem=False),  # assignment names the dtype (TypeError), not the shape
    ),
    variant=negated,
)

def records_sample(i: int) -> dict[str, Any]:
    """A row of three fields, each encoding ``i``: a string, a ragged int32 array and an int64 scalar."""
    return {"text": strings_sample(i), "tokens": np.arange(i % 6, dtype=np.int32) + i, "label": np.int64(i)}


def records_equal(got: Any, want: Any) -> bool:
    """Rows are equal when they have the same fields holding equal samples."""
    return (isinstance(got, dict) and got.keys() == want.keys()
            and all(arrays_equal(got[name], want[name]) for name in want))


RECORDS_SPEC = KindSpec(
    container=RecordsMmap,
    make_sample=records_sample,
    equal=records_equal,
    build_options={"schema": {"text": "strings", "tokens": ("ragged", "int32"), "label": ("scalar", "int64")}},
    bad_samples=(
        BadSample({"text": 3, "tokens": np.arange(2, dtype=np.int32), "label": 1}, TypeError, "field 'text'"),
        BadSample({"text": "x", "tokens": np.arange(2, dtype=np.int32)}, ValueError, "label"),
        BadSample({"text": "x", "tokens": np.array([1.5]), "label": 1}, ValueError, "field 'tokens'",
                  in_first_write=False),  # a new map's first rows may mix ints and floats: NumPy promotes them
        BadSample("not a row", TypeError),
    ),
)

def image_sample(i: int) -> np.ndarray[Any, Any]:
    """An RGBA image (stored losslessly as PNG) of a size and pixels that encode ``i``."""
    height, width = 2 + i % 5, 3 + i % 4
    return ((np.arange(height * width * 4, dtype=np.int64).reshape(height, width, 4) + i * 7) % 256).astype(np.uint8)


IMAGES_SPEC = KindSpec(
    container=ImagesMmap,
    make_sample=image_sample,
    bad_samples=(
        BadSample(np.zeros((4, 5, 4)), TypeError, "dtype float64"),
        BadSample(np.zeros((4, 5, 5), np.uint8), ValueError, "C in 1..4"),
        BadSample("text", TypeError, "str"),
        BadSample(None, TypeError),
    ),
)


def records_image_sample(i: int) -> dict[str, Any]:
    """A row of an images field (`image_sample`, stored losslessly) and an int64 label, both encoding ``i``."""
    return {"image": image_sample(i), "label": np.int64(i)}


RECORDS_IMAGES_SPEC = KindSpec(
    container=RecordsMmap,
    make_sample=records_image_sample,
    equal=records_equal,
    build_options={"schema": {"image": "images", "label": ("scalar", "int64")}},
    bad_samples=(
        # A first write on a handle with no map infers the schema, and never infers an images field (an image
        # array makes a ragged field): the images field's own refusals are checked on a map built with the schema.
        BadSample({"image": b"not an image", "label": 1}, ValueError, "row .*, field 'image'", in_first_write=False),
        BadSample({"image": None, "label": 1}, TypeError, "field 'image'"),
        BadSample({"image": np.zeros((4, 5, 4)), "label": 1}, TypeError, "dtype float64", in_first_write=False),
    ),
    name="records-images",
)

BUILTIN_SPECS = (STRINGS_SPEC, RAGGED_SPEC, NUMPY_SPEC, RECORDS_SPEC, IMAGES_SPEC, RECORDS_IMAGES_SPEC)
for _spec in BUILTIN_SPECS:
    register_spec(_spec)
