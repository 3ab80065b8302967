"""Random resized crops decoded at the size training uses (re-exported by `mmap_ninja.adapters.torch`).

`RandomResizedCropDecode` chooses each crop from the image's stored size (torchvision's ``RandomResizedCrop``
sampling rule, reimplemented), then decodes a JPEG at the smallest DCT scale that keeps the crop at least the
output size, and resizes the crop to exactly the output size (`decode_crop_into`).
`RecordsDataset(..., decode=...)` and `ImagesDataset(images, decode=...)` apply it per row inside the batched read.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mmap_ninja.kinds.image_decoding import Decoder, draft_scale

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
    covers ``size``; the crop is resized to exactly ``size`` with torch's antialiased bilinear filter (Pillow's
    ``BILINEAR``: pixel values within 1 of it, several times faster), or, when decoded at a reduced scale, with
    Pillow's ``BILINEAR`` on the crop's exact, fractional box. Other formats decode fully. The images of a batch
    decode into one reused buffer, torch runs on one thread while they are resized (`one_torch_thread`), and in a
    DataLoader worker the batch is made in shared memory (no copy on its way to the main process). ``hflip`` is
    the probability of flipping a crop horizontally. ``channels`` (1, 3 or 4) is the output's channels.

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
        batch = new_batch_array(shape) if out is None else out
        if batch.shape != shape or batch.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 array of shape {shape}, got {batch.dtype} {batch.shape}")
        if not count:
            return batch
        stored = images.shapes(positions)
        settings = images.decoder
        decoder = Decoder(self.channels, settings.fast, settings.requested)
        plans = []
        scratch_size = 0
        for k, position in enumerate(positions):
            height, width = int(stored[k, 0]), int(stored[k, 1])
            rng = self._rng(position if position >= 0 else position + len(images))
            box = self._box(rng, height, width)
            flip = bool(self.hflip and rng.random() < self.hflip)
            format_name = images.format(position)
            scale = draft_scale(box[2], box[3], self.size) if format_name == "JPEG" else 1
            plans.append((position, format_name, height, width, box, scale, flip))
            scratch_size = max(scratch_size, -(-height // scale) * -(-width // scale))
        # one buffer every image of the batch decodes into (a new array per image costs page faults)
        scratch = np.empty(scratch_size * self.channels, np.uint8)
        with one_torch_thread():
            for k, (position, format_name, height, width, box, scale, flip) in enumerate(plans):
                try:
                    decode_crop_into(images.raw(position), format_name, (height, width), box, scale, decoder,
                                     scratch, batch[k], flip)
                except ValueError as e:
                    raise ValueError(f"image {position} of {images.path} cannot be decoded: {e}") from None
        return batch

    def __repr__(self) -> str:
        return (f"RandomResizedCropDecode(size={self.size!r}, scale={self.scale!r}, ratio={self.ratio!r}, "
                f"seed={self.seed!r}, hflip={self.hflip!r}, channels={self.channels!r})")


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (``torch.set_num_threads(1)``, the previous count restored
    when the last of any concurrent blocks ends).

    A crop's resize is too small to gain from torch's threads: on two cores shared with other work, their spinning
    made a batch four times slower in wall-clock time (DataLoader workers already run on one thread)."""
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            if _threads_saved != 1:
                torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0 and _threads_saved != 1:
                torch.set_num_threads(_threads_saved)


def decode_crop_into(raw: Any, format_name: str, stored_size: tuple[int, int], box: tuple[int, int, int, int],
                     scale: int, decoder: Decoder, scratch: np.ndarray, out: np.ndarray, flip: bool = False) -> None:
    """Decode the crop ``box = (top, left, height, width)`` (stored pixels) of an image of ``stored_size``, resized to
    ``out``'s ``(H, W, C)``, into ``out`` (mirrored left to right when ``flip``). ``scratch``: a flat uint8 buffer
    large enough for the decoded image, which is decoded into it.

    A JPEG is decoded at the DCT scale ``1/scale`` (1, 2, 4 or 8: `draft_scale` of the crop); other formats decode
    fully (``scale`` must be 1). At full scale the crop's pixels are resized with torch's antialiased bilinear
    filter (`resize_into`); at a reduced scale the box falls between decoded pixels and Pillow's ``BILINEAR``
    resize of the exact, fractional box keeps the result close to a full decode's. The decoder's channels must
    be set."""
    channels = decoder.channels
    if channels is None:
        raise ValueError("decode_crop_into needs a decoder with channels set (1, 3 or 4)")
    height, width = stored_size
    if scale > 1:
        # a draft of (height // s, width // s) makes the image decode at exactly 1/s (see draft_scale)
        decoder = decoder.with_draft((height // scale, width // scale))
    shape = (-(-height // scale), -(-width // scale), channels)
    decoded = decoder.decode(raw, format_name, shape, scratch[:shape[0] * shape[1] * channels].reshape(shape))
    top, left, crop_height, crop_width = box
    if scale == 1:
        resize_into(decoded[top:top + crop_height, left:left + crop_width], out, flip)
        return
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.frombuffer(mode, (shape[1], shape[0]), decoded, "raw", mode, 0, 1)
    # cut the whole decoded pixels the crop touches (the filter stops at the crop's edges, as after torchvision's
    # crop), and resize the crop's exact box within them
    x0, y0 = left // scale, top // scale
    x1, y1 = -(-(left + crop_width) // scale), -(-(top + crop_height) // scale)
    with image.crop((x0, y0, x1, y1)) as cut:
        region = (left / scale - x0, top / scale - y0, (left + crop_width) / scale - x0,
                  (top + crop_height) / scale - y0)
        resized = cut.resize((out.shape[1], out.shape[0]), Image.Resampling.BILINEAR, box=region)
    if flip:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    np.copyto(out, np.asarray(resized).reshape(out.shape))


def resize_into(region: np.ndarray, out: np.ndarray, flip: bool = False) -> None:
    """Resize the ``(h, w, C)`` uint8 ``region`` to ``out``'s ``(H, W, C)`` with torch's antialiased bilinear filter
    (Pillow's ``BILINEAR``, within 1 of its pixel values, and several times faster on uint8), mirrored left to right
    when ``flip``."""
    # (1, C, h, w) in channels-last memory: a crop's rows are strided, and without the explicit memory format torch
    # resizes into a channels-first result that then costs a transposing copy as long as the resize itself
    source = torch.from_numpy(region).permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    resized = torch.nn.functional.interpolate(source, size=out.shape[:2], mode="bilinear", align_corners=False,
                                              antialias=True)
    _copy_into(out, resized[0].permute(1, 2, 0), flip)


def _copy_into(out: np.ndarray, pixels: torch.Tensor, flip: bool) -> None:
    """Copy the ``(H, W, C)`` ``pixels`` into ``out``, mirrored left to right when ``flip`` (torch's copy: NumPy's
    copy of a mirrored view of 3-byte pixels runs element by element, several times slower)."""
    torch.from_numpy(out).copy_(pixels.flip(1) if flip else pixels)


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


def new_batch_array(shape: tuple[int, ...]) -> np.ndarray:
    """A new uint8 array of ``shape``; in a DataLoader worker, the ``.numpy()`` of a tensor in shared memory (as
    ``default_collate`` allocates its batches), which `tensor_of` gives back, so that the batch reaches the main
    process without a copy."""
    if get_worker_info() is None:
        return np.empty(shape, np.uint8)
    storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(math.prod(shape), device="cpu")  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=torch.uint8).new(storage).resize_(shape).numpy()


def tensor_of(array: np.ndarray) -> torch.Tensor | None:
    """The tensor ``array`` is the whole ``.numpy()`` of, or None."""
    base = array.base
    if (isinstance(base, torch.Tensor) and tuple(base.shape) == array.shape and base.is_contiguous()
            and array.flags.c_contiguous and base.data_ptr() == array.__array_interface__["data"][0]
            and base.numpy().dtype == array.dtype):
        return base
    return None


def _batch_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        whole = tensor_of(batch)
        return whole if whole is not None else torch.from_numpy(np.ascontiguousarray(batch))
    return torch.stack([torch.from_numpy(np.ascontiguousarray(item)) for item in batch])
