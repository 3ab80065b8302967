"""Random resized crops decoded at the size training uses (re-exported by `mmap_ninja.adapters.torch`).

`RandomResizedCropDecode` chooses each crop from the image's stored size (torchvision's ``RandomResizedCrop``
sampling rule, reimplemented), then decodes a JPEG at the smallest DCT scale that keeps the crop at least the
output size (see `mmap_ninja.image_decoding.decode_resized_crop`), crops and resizes to exactly the output size.
`RecordsDataset(..., decode=...)` and `ImagesDataset(images, decode=...)` apply it per row inside the batched read.
"""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmap_ninja.image_decoding import Decoder, decode_resized_crop

__all__ = ["ImagesDataset", "RandomResizedCropDecode"]


def _pair(value: Any, what: str, positive_int: bool) -> tuple[Any, Any]:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{what} must be a number or a pair, got {value!r}")
    first, second = value
    for v in (first, second):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{what} must hold numbers, got {value!r}")
        if positive_int and (not isinstance(v, numbers.Integral) or v < 1):
            raise ValueError(f"{what} must be a positive integer or a pair of them, got {value!r}")
    return first, second


class RandomResizedCropDecode:
    """Decode a random crop of each image, resized to ``size``: torchvision's ``RandomResizedCrop`` done while
    decoding.

    The crop (its area a fraction in ``scale`` of the image's, its aspect ratio log-uniform in ``ratio``, 10 tries,
    then the central crop of the nearest allowed ratio: torchvision's rule) is chosen from the stored size,
    before any decoding. A JPEG is then decoded at the smallest DCT scale (1/2, 1/4, 1/8) at which the crop still
    covers ``size``; the crop is cut from it and resized to exactly ``size`` with Pillow's ``BILINEAR`` filter.
    Other formats decode fully. ``hflip`` is the probability of flipping a crop horizontally. ``channels`` (1,
    3 or 4) is the output's channels.

    Crops are deterministic: they depend only on ``(seed, epoch, sample index)``, so a resumed run, or any number
    of DataLoader workers, sees the same crops. ``seed=None`` draws one seed when the object is made (kept when
    pickled into workers). Call ``set_epoch(epoch)`` before each epoch, as with ``DistributedSampler`` (workers
    that are started per epoch get the new epoch; with ``persistent_workers=True`` they keep the one they were
    started with).

    ``decode(images, indices)`` takes an `ImagesMmap` (or an images field, ``rec["image"]``) and gives a new
    ``(k, height, width, channels)`` uint8 array.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import ImagesMmap
        >>> photos = ImagesMmap.from_generator("photos", [np.full((64, 80, 3), 90, np.uint8)] * 4, batch_size=4,
        ...                                    format="jpeg", overwrite=True)
        >>> from mmap_ninja.adapters.torch import RandomResizedCropDecode
        >>> decode = RandomResizedCropDecode(32, seed=0, hflip=0.5)
        >>> decode.set_epoch(1)
        >>> decode(photos, [0, 2]).shape
        (2, 32, 32, 3)
    """

    def __init__(self, size: Any, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 seed: int | None = None, *, hflip: float = 0.0, channels: int = 3):
        height, width = _pair(size, "size", positive_int=True)
        low, high = _pair(scale, "scale", positive_int=False)
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        narrow, wide = _pair(ratio, "ratio", positive_int=False)
        if not 0 < narrow <= wide:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {ratio!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
        if isinstance(hflip, bool) or not isinstance(hflip, numbers.Real) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip must be a probability from 0 to 1, got {hflip!r}")
        if isinstance(channels, bool) or channels not in (1, 3, 4):
            raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}")
        self.size: tuple[int, int] = (int(height), int(width))
        self.scale: tuple[float, float] = (float(low), float(high))
        self.ratio: tuple[float, float] = (float(narrow), float(wide))
        self.seed: int = secrets.randbits(63) if seed is None else int(seed)
        self.hflip: float = float(hflip)
        self.channels: int = int(channels)
        self.epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the crops of ``epoch`` from now on."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def crop_box(self, height: int, width: int, index: int) -> tuple[int, int, int, int]:
        """The crop ``(top, left, height, width)`` of sample ``index`` (stored ``height`` x ``width``) this epoch."""
        return self._box(self._rng(index), height, width)

    def _box(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        area = height * width
        log_narrow, log_wide = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_narrow, log_wide))
            crop_width = round(math.sqrt(target_area * aspect))
            crop_height = round(math.sqrt(target_area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(rng.integers(0, height - crop_height + 1))
                left = int(rng.integers(0, width - crop_width + 1))
                return top, left, crop_height, crop_width
        # No try fitted: the central crop, of the image's ratio clamped to the allowed ones.
        image_ratio = width / height
        if image_ratio < self.ratio[0]:
            crop_width, crop_height = width, round(width / self.ratio[0])
        elif image_ratio > self.ratio[1]:
            crop_height, crop_width = height, round(height * self.ratio[1])
        else:
            crop_height, crop_width = height, width
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def __call__(self, images: Any, indices: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """The crops of the images at ``indices`` of ``images`` as one ``(k, *size, channels)`` uint8 array."""
        positions = [int(i) for i in indices]
        count = len(positions)
        shape = (count, *self.size, self.channels)
        batch = np.empty(shape, np.uint8) if out is None else out
        if batch.shape != shape or batch.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 array of shape {shape}, got {batch.dtype} {batch.shape}")
        if not count:
            return batch
        stored = images.shapes(positions)
        settings = images.decoder
        decoder = Decoder(self.channels, settings.fast, settings.requested)
        for k, position in enumerate(positions):
            height, width = int(stored[k, 0]), int(stored[k, 1])
            rng = self._rng(position if position >= 0 else position + len(images))
            box = self._box(rng, height, width)
            try:
                decode_resized_crop(images.raw(position), images.format(position), (height, width), box, self.size,
                                    decoder, batch[k])
            except ValueError as e:
                raise ValueError(f"image {position} of {images.path} cannot be decoded: {e}") from None
            if self.hflip and rng.random() < self.hflip:
                batch[k] = batch[k, :, ::-1]
        return batch

    def __repr__(self) -> str:
        return (f"RandomResizedCropDecode(size={self.size!r}, scale={self.scale!r}, ratio={self.ratio!r}, "
                f"seed={self.seed!r}, hflip={self.hflip!r}, channels={self.channels!r})")


def images_fields(records: Any, fields: Sequence[str]) -> list[str]:
    """The images fields among ``fields`` of a records map."""
    schema = records.schema
    return [name for name in fields if schema[name].kind == "images"]


def gather_decoded(records: Any, indices: Sequence[int], fields: Sequence[str], pad_value: Any,
                   decode: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rows at ``indices`` as ``(columns, lengths)`` (`RecordsMmap.get_batch`'s), each images field decoded by
    ``decode(field, indices)`` instead (one array of the batch)."""
    decoded = images_fields(records, fields)
    others = [name for name in fields if name not in decoded]
    columns: dict[str, Any] = {}
    lengths: dict[str, Any] = {}
    if others:
        pad = pad_value
        if isinstance(pad_value, dict):
            pad = {name: value for name, value in pad_value.items() if name in others} or None
        gathered = records.get_batch(indices, fields=others, pad_value=pad)
        if pad is not None:
            gathered, lengths = gathered
        columns.update(gathered)
    for name in decoded:
        columns[name] = decode(records.field(name), indices)
    return {name: columns[name] for name in fields}, lengths


class ImagesDataset(Dataset[Any]):
    """A map-style dataset over an `ImagesMmap` whose batched fetch decodes a whole DataLoader batch into one
    array, each image through ``decode`` (e.g. `RandomResizedCropDecode`), or with ``images.get_batch`` when
    ``decode`` is None (the images must then share one shape). Pass ``collate_fn=dataset.collate``; a batch
    becomes one ``(k, H, W, C)`` uint8 tensor. Pickles as the map's path and ``decode``.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import ImagesMmap
        >>> photos = ImagesMmap.from_generator("photos", [np.full((64, 80, 3), 90, np.uint8)] * 4, batch_size=4,
        ...                                    format="jpeg", overwrite=True)
        >>> from torch.utils.data import DataLoader
        >>> from mmap_ninja.adapters.torch import ImagesDataset, RandomResizedCropDecode
        >>> crops = ImagesDataset(photos, decode=RandomResizedCropDecode(32, seed=0))
        >>> batch = next(iter(DataLoader(crops, batch_size=4, collate_fn=crops.collate)))
        >>> batch.shape, batch.dtype
        (torch.Size([4, 32, 32, 3]), torch.uint8)
    """

    def __init__(self, images: Any, decode: Any = None):
        if not (hasattr(images, "raw") and hasattr(images, "shapes") and hasattr(images, "get_batch")):
            raise TypeError(f"ImagesDataset takes an ImagesMmap (or an images field), got {type(images).__name__}")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode must be callable (images, indices) -> batch, got {type(decode).__name__}")
        self.images = images
        self.decode = decode

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: Sequence[int]) -> np.ndarray:
        if self.decode is None:
            return self.images.get_batch(list(indices))  # type: ignore[no-any-return]
        return self.decode(self.images, indices)  # type: ignore[no-any-return]

    def __getitem__(self, index: int) -> np.ndarray:
        image: np.ndarray = self.__getitems__([index])[0]
        return image

    @property
    def collate(self) -> Any:
        """The collate function: the batch array as a tensor (no copy)."""
        return _batch_tensor

    def __repr__(self) -> str:
        return f"ImagesDataset({self.images!r}, decode={self.decode!r})"


def _batch_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch))
    return torch.stack([torch.from_numpy(np.ascontiguousarray(item)) for item in batch])
