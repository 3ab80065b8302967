"""A user's script, typed: tests/test_typing.py checks it with ``mypy --strict`` (zero errors) and runs it.

Every annotation below is what the library's types promise; running the script checks they are also true.
Usage: ``python typed_user_script.py FOLDER`` (FOLDER must be empty or missing).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch.utils.data import DataLoader, Dataset, random_split

from mmap_ninja import ImagesMmap, NumpyMmap, RaggedMmap, RecordsMmap, StringsMmap, np_open_existing, open_existing
from mmap_ninja.maps import MapBase


def strings(root: Path) -> None:
    texts = StringsMmap.from_strings(root / "texts", ["a", "bb", "ccc"])
    texts.append("dddd")
    texts.extend(["e", "f"])
    first: str = texts[0]
    last: str = texts[-1]
    some: list[str] = texts[1:3]
    picked: list[str] = texts[[0, 2]]
    masked: list[str] = texts[np.array([True, False, True, False, True, False])]
    every: list[str] = list(texts)
    assert (first, last, some, picked, masked) == ("a", "f", ["bb", "ccc"], ["a", "ccc"], ["a", "ccc", "e"])
    assert len(every) == len(texts) == 6
    again: StringsMmap = open_existing(root / "texts", kind=StringsMmap)
    assert again[np.int64(1)] == "bb"
    with StringsMmap(root / "texts", mode="r") as read_only:
        assert read_only[0] == "a"
    texts.close()
    again.close()


def ragged(root: Path) -> None:
    rag = RaggedMmap.from_lists(root / "ragged", [[1, 2], [3], [4, 5, 6]], dtype=np.int32)
    rag.append(np.array([7, 8], dtype=np.int32))
    rag.extend([[9], [10, 11]])
    sample: npt.NDArray[Any] = rag[0]
    window: list[npt.NDArray[Any]] = rag[1:3]
    padded, lengths = rag.get_batch([0, 2], pad_value=0)
    assert sample.tolist() == [1, 2] and [w.tolist() for w in window] == [[3], [4, 5, 6]]
    assert padded.shape == (2, 3) and lengths.tolist() == [2, 3]
    rag.close()


def arrays(root: Path) -> None:
    arr = NumpyMmap.from_generator(root / "numpy", (np.full(4, i, dtype=np.float32) for i in range(5)), 2)
    arr.append(np.zeros(4, dtype=np.float32))
    row: npt.NDArray[Any] = arr[0]
    rows: npt.NDArray[Any] = arr[1:3]
    chosen: npt.NDArray[Any] = arr[[0, 4]]
    batch: npt.NDArray[Any] = arr.get_batch([0, 1])
    cell = arr[1, 2]  # NumPy's indexing within samples: a scalar here
    assert float(cell) == 1.0
    assert row.shape == (4,) and rows.shape == (2, 4) and chosen.shape == (2, 4) and batch.shape == (2, 4)
    assert len(arr) == 6
    arr.close()
    with np_open_existing(root / "numpy", "r", verify_reads=True) as again:
        checked: npt.NDArray[Any] = again[np.array([5])]
        assert checked.tolist() == [[0.0] * 4]


def images(root: Path) -> None:
    pictures = [np.full((4, 6, 3), i, dtype=np.uint8) for i in range(3)]
    imgs = ImagesMmap.from_generator(root / "images", pictures)
    first: npt.NDArray[np.uint8] = imgs[0]
    some: list[npt.NDArray[np.uint8]] = imgs[:2]
    as_any: npt.NDArray[Any] = imgs[2]
    every: list[npt.NDArray[np.uint8]] = list(imgs)
    assert first.shape == (4, 6, 3) and len(some) == 2 and int(as_any[0, 0, 0]) == 2 and len(every) == 3
    imgs.close()


def records(root: Path) -> None:
    rec = RecordsMmap.from_dict(root / "records", {"text": ["a", "b"], "label": [0, 1]})
    rec.append({"text": "c", "label": 2})
    row: dict[str, Any] = rec[0]
    rows: list[dict[str, Any]] = rec[1:]
    labels: MapBase = rec["label"]
    texts: list[str] = [row["text"] for row in rec]
    assert texts == ["a", "b", "c"]
    assert row == {"text": "a", "label": 0} and [r["text"] for r in rows] == ["b", "c"] and len(labels) == 3
    opened = open_existing(root / "records", kind=RecordsMmap)
    assert opened[2]["label"] == 2
    opened.close()
    rec.close()


def data_loading(root: Path) -> None:
    rag = RaggedMmap(root / "ragged", mode="r")
    dataset: Dataset[Any] = rag
    train, test = random_split(rag, [4, 2])
    assert len(train) + len(test) == len(rag) and dataset is rag
    texts = StringsMmap(root / "texts", mode="r")
    loader = DataLoader(texts, batch_size=None)
    assert list(loader) == list(texts)
    anything = open_existing(root / "texts", mode="r")
    loaded = DataLoader(anything, batch_size=2, collate_fn=list)
    assert sum(len(batch) for batch in loaded) == len(anything) == 6
    for opened in (rag, texts, anything):
        opened.close()


def main(folder: str) -> None:
    root = Path(folder)
    strings(root)
    ragged(root)
    arrays(root)
    images(root)
    records(root)
    data_loading(root)
    print("typed user script: ok")


if __name__ == "__main__":
    main(sys.argv[1])
