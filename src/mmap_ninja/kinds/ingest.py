"""Building records maps from folders of files: `from_image_folder` for the ``root/<class>/<file>`` layout.

The classes are the sub-folders of ``root``, sorted by name (as ``torchvision.datasets.ImageFolder`` sorts
them), and class ``k`` is label ``k``. The images of a class are every file under its folder (sub-folders
included, links followed) whose name ends with one of the extensions, in ``torchvision``'s order: folders as
``sorted(os.walk(...))`` gives them and the files of each folder sorted by name. The same tree always gives the
same rows in the same order.

Unlike torchvision, hidden entries (names starting with ``.``: ``.ipynb_checkpoints``, macOS's ``._x.jpg``
files, ``.git``) are skipped, as Hugging Face's ``imagefolder`` skips them: neither a class nor an image. A linked
folder is followed once per class: a link back to a folder already walked (a cycle) is not entered again.

Each image's bytes are stored as they are in the file (no decoding, no re-encoding): the map takes about the disk
of the files. This module is also what the command line's ``convert`` calls for a folder of images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from mmap_ninja.kinds.images import inspect_image
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.storage.store import PathLike

if TYPE_CHECKING:  # for annotations only: records imports this module (RecordsMmap.from_image_folder builds here)
    from mmap_ninja.kinds.records import RecordsMmap

__all__ = ["IMAGE_EXTENSIONS", "build_image_folder", "find_classes", "from_image_folder", "image_folder_samples"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The file name endings taken as images by default (torchvision's ``IMG_EXTENSIONS``), compared in lower case."""


def _extensions(extensions: Optional[Sequence[str]]) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    result = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext:
            raise ValueError(f"extensions must be file name endings such as '.jpg', got {ext!r}")
        result.append((ext if ext.startswith(".") else "." + ext).lower())
    if not result:
        raise ValueError("extensions is empty: no file would be taken")
    return tuple(result)


def find_classes(root: PathLike) -> list[str]:
    """The class names of an image folder: the names of ``root``'s sub-folders, sorted. A FileNotFoundError if
    ``root`` is not a folder or has no sub-folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; an image folder is root/<class>/<image file>")
    with os.scandir(root) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders; an image folder is root/<class>/<image file> (one "
                                f"sub-folder per class)")
    return classes


def image_folder_samples(root: PathLike, extensions: Optional[Sequence[str]] = None
                         ) -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, samples)`` of an image folder: the sorted class names, and ``(path relative to root, label)``
    of every image in order (see the module docstring). Paths use ``/`` on every system. A FileNotFoundError
    names a class folder that holds no image."""
    root = Path(root)
    endings = _extensions(extensions)
    classes = find_classes(root)
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        found = 0
        for directory, files in sorted(_walk(folder)):
            for file_name in sorted(files):
                if file_name.lower().endswith(endings) and not file_name.startswith("."):
                    relative = Path(directory, file_name).relative_to(root).as_posix()
                    samples.append((relative, label))
                    found += 1
        if not found:
            raise FileNotFoundError(f"class folder {folder} holds no file ending with {', '.join(endings)}; every "
                                    f"class needs at least one image (or pass extensions=)")
    return classes, samples


def _walk(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """(directory, file names) of ``folder`` and every folder below it, links followed, hidden folders skipped;
    a folder reached again (through a link: a cycle, or two links to one folder) is walked only the first time,
    in sorted order."""
    seen: set[tuple[int, int]] = set()
    for directory, folders, files in os.walk(folder, followlinks=True):
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        yield directory, files


class _Rows:
    """The rows of an image folder, read file by file as they are iterated; sized (for the progress bar)."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], first: list[dict[str, Any]]):
        self.root, self.samples, self.first = root, samples, first

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.first
        yield from _read_rows(self.root, self.samples[len(self.first):], len(self.first))


def _read_rows(root: Path, samples: list[tuple[str, int]], start: int = 0) -> Iterator[dict[str, Any]]:
    """The rows of ``samples``, the first being row ``start``."""
    for k, (relative, label) in enumerate(samples):
        path = root / relative
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"row {start + k}, field 'image': file {path} cannot be read: "
                             f"{e.strerror or e}") from None
        yield {"image": data, "label": np.int64(label), "path": relative}


def from_image_folder(out_dir: PathLike, root: PathLike, *, batch_size: int = 256, verbose: bool = False,
                      extensions: Optional[Sequence[str]] = None, key: Optional[str] = None, overwrite: bool = False,
                      durable: bool = False, metadata: Optional[dict[str, Any]] = None,
                      baseline_jpeg: bool = False) -> RecordsMmap:
    """Build a `RecordsMmap` with the fields ``image`` (the file's bytes, decoded on read), ``label`` (int64,
    the class index) and ``path`` (str, relative to ``root``) from an image folder ``root/<class>/<file>``;
    the class names are the map's metadata ``{"classes": [...]}`` (merged into ``metadata``). ``key="path"``
    indexes the rows by path (``rec.index_of("cat/1.jpg")``, see `RecordsMmap.index_of`); only ``"path"`` is
    unique, so only it can be the key. ``baseline_jpeg=True`` stores progressive JPEGs as baseline ones with the
    same coefficients (the same pixels, decoded 2-3x faster; see `ImagesMmap.from_files`).

    A root with no class folders, or a class folder with no image, raises FileNotFoundError before anything is
    written. A file that cannot be read or is not an image Pillow can read raises a ValueError naming its row
    and path; when it is in the first batch nothing is written, otherwise the map is left as an unfinished build
    (see `MapBase.from_generator`; build again with ``overwrite=True``). Returns the map open. (The same as
    `RecordsMmap.from_image_folder`.)
    """
    records: Any = KINDS["records"]  # RecordsMmap, found through the kind registry: records imports this module
    built: RecordsMmap = records.from_image_folder(out_dir, root, batch_size=batch_size, verbose=verbose,
                                                   extensions=extensions, key=key, overwrite=overwrite,
                                                   durable=durable, metadata=metadata, baseline_jpeg=baseline_jpeg)
    return built


def build_image_folder(records: type[RecordsMmap], out_dir: PathLike, root: PathLike, schema: dict[str, Any], *,
                       batch_size: int, verbose: bool, extensions: Optional[Sequence[str]], key: Optional[str],
                       overwrite: bool, durable: bool, metadata: Optional[dict[str, Any]]) -> RecordsMmap:
    """What `RecordsMmap.from_image_folder` does, given the records class and the schema of the three fields."""
    if key not in (None, "path"):
        raise ValueError(f"key={key!r}: only the field 'path' is unique in an image folder; pass key='path' or "
                         f"no key")
    root = Path(root)
    if Path(os.path.abspath(out_dir)).is_relative_to(os.path.abspath(root)):
        raise ValueError(f"{out_dir} is inside the image folder {root}: the map's folder would be read as a class "
                         f"(or its files as images) when it is built again; build the map outside {root}")
    classes, samples = image_folder_samples(root, extensions)
    info = {**(metadata or {}), "classes": classes}
    first = list(islice(_read_rows(root, samples), batch_size))
    for k, row in enumerate(first):  # the first batch is checked before anything exists
        inspect_image(row["image"], f"row {k}, field 'image': file {root / row['path']}")
    try:
        return records.from_generator(out_dir, _Rows(root, samples, first), batch_size, verbose, schema=schema,
                                      key=key, overwrite=overwrite, durable=durable, metadata=info)
    except ValueError as e:
        raise _with_path(e, root, samples) from None


def _with_path(error: ValueError, root: Path, samples: list[tuple[str, int]]) -> ValueError:
    """The error with the file of the row it names (``row 12, field 'image': ...``) added, if it has none."""
    import re

    found = re.match(r"row (\d+), field 'image'", str(error))
    if found and int(found[1]) < len(samples):
        path = root / samples[int(found[1])][0]
        if str(path) not in str(error):
            return ValueError(f"{error} (file {path})")
    return error
