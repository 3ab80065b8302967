"""`RandomResizedCropDecode`: crops chosen from the stored size (torchvision's rule), decoded at the smallest DCT
scale that keeps them at least the output size, resized to exactly it; deterministic per (seed, epoch, index)."""

import io
import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from torch.utils.data import DataLoader  # noqa: E402

from mmap_ninja import RecordsMmap  # noqa: E402
from mmap_ninja.adapters.torch import ImagesDataset, RandomResizedCropDecode, RecordsDataset  # noqa: E402
from mmap_ninja.kinds.images import ImagesMmap  # noqa: E402

from tests.kinds.test_draft import jpeg, psnr, smooth  # noqa: E402


def reference(data: bytes, box, size) -> np.ndarray:
    """Full decode, then Pillow's BILINEAR resize of the same crop (what torchvision's RandomResizedCrop does)."""
    top, left, height, width = box
    with Image.open(io.BytesIO(data)) as image:
        crop = image.convert("RGB").crop((left, top, left + width, top + height))
        return np.asarray(crop.resize((size[1], size[0]), Image.BILINEAR))


@pytest.fixture
def pictures(tmp_path):
    shapes = [(480, 640), (1000, 900), (300, 266), (96, 120)]
    samples = [jpeg(smooth(h, w, k)) for k, (h, w) in enumerate(shapes)]
    samples.append(smooth(500, 400, 9))  # a PNG (an array, stored losslessly)
    ImagesMmap.from_generator(tmp_path / "m", samples, batch_size=8).close()
    return ImagesMmap(tmp_path / "m"), samples


def test_output_is_exactly_size_and_close_to_full_decode_and_resize(pictures):
    images, samples = pictures
    decode = RandomResizedCropDecode(64, seed=3)
    batch = decode(images, range(len(images)))
    assert batch.shape == (5, 64, 64, 3) and batch.dtype == np.uint8
    for k in range(len(images)):
        height, width = images.shape(k)[:2]
        box = decode.crop_box(height, width, k)
        top, left, h, w = box
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        if images.format(k) == "JPEG":
            assert psnr(batch[k], reference(samples[k], box, (64, 64))) >= 30, k
        else:  # decoded fully: Pillow's crop and resize, within one step of a pixel value (torch's resize)
            expected = Image.fromarray(images[k]).crop((left, top, left + w, top + h)).resize((64, 64), Image.BILINEAR)
            assert np.abs(batch[k].astype(np.int16) - np.asarray(expected)).max() <= 1


def test_crops_are_resized_with_torchs_antialiased_bilinear_filter(pictures):
    """The resize is torch's ``interpolate(mode="bilinear", antialias=True)`` on the crop's pixels (several times
    faster than Pillow's on uint8, the same filter: within 1 of Pillow's BILINEAR)."""
    images, _ = pictures
    for channels, mode in [(3, "RGB"), (1, "L"), (4, "RGBA")]:
        decode = RandomResizedCropDecode((40, 56), seed=8, channels=channels)
        png = 4  # not a JPEG: decoded at full size, so the crop's pixels are known exactly
        height, width = images.shape(png)[:2]
        top, left, h, w = decode.crop_box(height, width, png)
        full = np.asarray(Image.fromarray(images[png]).convert(mode)).reshape(height, width, channels)
        crop = torch.from_numpy(np.ascontiguousarray(full[top:top + h, left:left + w])).permute(2, 0, 1)[None]
        expected = torch.nn.functional.interpolate(crop, size=(40, 56), mode="bilinear", antialias=True)
        batch = decode(images, [png])
        assert batch.shape == (1, 40, 56, channels)
        assert np.array_equal(batch[0], expected[0].permute(1, 2, 0).numpy()), channels


def test_large_crops_of_large_jpegs_decode_at_a_reduced_scale_and_stay_close(pictures):
    images, samples = pictures
    decode = RandomResizedCropDecode((56, 48), scale=(0.5, 1.0), seed=0)
    batch = decode(images, [1])
    box = decode.crop_box(1000, 900, 1)
    assert min(box[2] // 56, box[3] // 48) >= 2  # the crop covers the size twice: decoded at 1/2 or less
    assert batch.shape == (1, 56, 48, 3)
    assert psnr(batch[0], reference(samples[1], box, (56, 48))) >= 30


def test_crops_follow_torchvisions_rule(pictures):
    decode = RandomResizedCropDecode(32, scale=(0.2, 0.6), ratio=(0.5, 2.0), seed=11)
    for index in range(200):
        _top, _left, height, width = decode.crop_box(400, 500, index)
        assert 0.2 * 200000 - 1000 <= height * width <= 0.6 * 200000 + 1000
        assert 0.5 - 0.02 <= width / height <= 2.0 + 0.02
    # nothing fits (a very wide image, ratio 1 only): the central crop of the nearest allowed ratio
    square = RandomResizedCropDecode(8, scale=(0.9, 1.0), ratio=(1.0, 1.0), seed=0)
    assert square.crop_box(10, 100, 0) == (0, 45, 10, 10)


def test_crops_are_deterministic_per_seed_epoch_and_index(pictures):
    images, _ = pictures
    first = RandomResizedCropDecode(32, seed=5)
    again = pickle.loads(pickle.dumps(RandomResizedCropDecode(32, seed=5)))
    assert np.array_equal(first(images, [0, 1, 2]), again(images, [0, 1, 2]))
    assert np.array_equal(first(images, [2])[0], first(images, [0, 1, 2])[2])  # per sample, not per batch
    boxes = [first.crop_box(480, 640, i) for i in range(20)]
    first.set_epoch(1)
    assert [first.crop_box(480, 640, i) for i in range(20)] != boxes
    first.set_epoch(0)
    assert [first.crop_box(480, 640, i) for i in range(20)] == boxes
    other = RandomResizedCropDecode(32, seed=6)
    assert [other.crop_box(480, 640, i) for i in range(20)] != boxes
    unseeded = RandomResizedCropDecode(32)
    assert pickle.loads(pickle.dumps(unseeded)).seed == unseeded.seed  # workers share the drawn seed


def test_hflip_flips_some_crops(pictures):
    images, _ = pictures
    plain = RandomResizedCropDecode(32, seed=1)(images, range(5))
    flipped = RandomResizedCropDecode(32, seed=1, hflip=1.0)(images, range(5))
    assert np.array_equal(flipped, plain[:, :, ::-1])


def test_bad_options_are_refused():
    for options in [{"size": 0}, {"size": (3, 4, 5)}, {"size": 32, "scale": (0.5, 0.1)},
                    {"size": 32, "ratio": (0, 1)}, {"size": 32, "seed": -1}, {"size": 32, "hflip": 2},
                    {"size": 32, "channels": 2}]:
        with pytest.raises(ValueError):
            RandomResizedCropDecode(**options)


def test_records_dataset_decodes_images_fields_inside_the_batched_read(tmp_path):
    rows = [{"image": jpeg(smooth(300 + 40 * i, 400, i)), "label": i} for i in range(6)]
    rec = RecordsMmap.from_generator(tmp_path / "r", rows, batch_size=6, schema={"image": "images", "label": int})
    decode = RandomResizedCropDecode(48, seed=2)
    dataset = RecordsDataset(rec, decode=decode)
    loader = DataLoader(dataset, batch_size=4, collate_fn=dataset.collate)
    batches = list(loader)
    assert batches[0]["image"].shape == (4, 48, 48, 3) and batches[1]["image"].shape == (2, 48, 48, 3)
    assert batches[0]["label"].tolist() == [0, 1, 2, 3]
    assert np.array_equal(batches[1]["image"][1].numpy(), decode(rec["image"], [5])[0])
    assert np.array_equal(dataset[5]["image"], decode(rec["image"], [5])[0]) and dataset[5]["label"] == 5
    workers = DataLoader(pickle.loads(pickle.dumps(dataset)), batch_size=4, collate_fn=dataset.collate)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, workers))
    transformed = RecordsDataset(rec, decode=decode, transform=lambda row: {**row, "label": row["label"] + 1})
    assert transformed.__getitems__([1, 2])[1]["label"] == 3
    with pytest.raises(TypeError, match="decode"):
        RecordsDataset(rec, decode="crop")


def test_images_dataset_applies_decode_per_row(pictures):
    images, _ = pictures
    decode = RandomResizedCropDecode(40, seed=4)
    dataset = ImagesDataset(images, decode=decode)
    batch = next(iter(DataLoader(dataset, batch_size=5, collate_fn=dataset.collate)))
    assert batch.shape == (5, 40, 40, 3) and batch.dtype == torch.uint8
    assert np.array_equal(batch.numpy(), decode(images, range(5)))
    assert np.array_equal(dataset[3], decode(images, [3])[0]) and len(dataset) == 5
    assert not math.isnan(float(batch.float().mean()))


def test_decoding_runs_torch_on_one_thread_and_restores_the_count(pictures):
    from mmap_ninja.adapters._crop_decode import one_torch_thread

    images, _ = pictures
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread():
            assert torch.get_num_threads() == 1
            with one_torch_thread():  # nested (or another thread's) block: the count comes back after the last
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        RandomResizedCropDecode(32, seed=0)(images, range(3))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_in_a_worker_the_batch_is_decoded_into_shared_memory_and_handed_over_as_it_is(pictures, tmp_path):
    """In a DataLoader worker the crops are decoded straight into a shared-memory tensor, which the collates give
    back as it is (sending it to the main process then copies nothing)."""
    from mmap_ninja.adapters.torch import as_tensor

    images, _ = pictures
    decode = RandomResizedCropDecode(32, seed=0)
    in_main = decode(images, range(3))
    assert not isinstance(in_main.base, torch.Tensor)  # outside a worker: a plain array

    def batch_in_a_worker(_):
        batch = decode(images, range(3))
        via_as_tensor, via_collate = as_tensor(batch), ImagesDataset(images, decode=decode).collate(batch)
        shared_here = [via_as_tensor.is_shared(), via_collate.is_shared()]  # before any pickling
        return via_collate, shared_here

    loader = DataLoader(range(1), batch_size=1, num_workers=1, collate_fn=batch_in_a_worker,
                        multiprocessing_context="fork")
    ((via_collate, shared_here),) = list(loader)
    assert shared_here == [True, True]
    assert np.array_equal(via_collate.numpy(), in_main)
