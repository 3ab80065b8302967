"""``draft=(height, width)``: JPEGs decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps them at least that
size, on `ImagesMmap`, images fields of records maps, and sharded maps; other formats decoded fully."""

import io
import pickle

import numpy as np
import pytest

from mmap_ninja import RecordsMmap, merge
from mmap_ninja.kinds.images import ImagesMmap

Image = pytest.importorskip("PIL.Image")


def smooth(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour picture (photo-like: little energy at high frequencies)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(20, 60, 3)
    planes = [127 + 90 * np.sin(x / a + y / b), 127 + 90 * np.cos(y / c - x / (a + 7)),
              127 + 90 * np.sin((x + y) / (b + 11))]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def pillow_draft(data: bytes, draft: tuple, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.draft(None, (draft[1], draft[0]))
        array = np.asarray(image.convert(mode))
    return array if array.ndim == 3 else array[:, :, None]


def resized(array: np.ndarray, size: tuple) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR))


@pytest.fixture
def pictures(tmp_path):
    """JPEGs of 500 x 701, 1000 x 900 and 100 x 120, and a PNG of 600 x 600."""
    arrays = [smooth(500, 701), smooth(1000, 900, 1), smooth(100, 120, 2), smooth(600, 600, 3)]
    samples = [jpeg(a) for a in arrays[:3]] + [arrays[3]]
    ImagesMmap.from_generator(tmp_path / "m", samples, batch_size=4).close()
    return tmp_path / "m", arrays, samples


@pytest.mark.parametrize("decoder", [None, "pillow"])
def test_draft_decodes_jpegs_at_the_smallest_scale_at_least_asked(pictures, decoder):
    path, arrays, samples = pictures
    m = ImagesMmap(path, draft=(224, 224), decoder=decoder)
    # 500 x 701: 1/2 (1/4 would give 125 rows); 1000 x 900: 1/4; 100 x 120: too small, full; the PNG: full
    assert [m[i].shape for i in range(4)] == [(250, 351, 3), (250, 225, 3), (100, 120, 3), (600, 600, 3)]
    assert [m.shape(i) for i in range(4)] == [(500, 701, 3), (1000, 900, 3), (100, 120, 3), (600, 600, 3)]
    for k in range(2):
        image = m[k]
        assert image.shape[0] >= 224 and image.shape[1] >= 224
        reference = pillow_draft(samples[k], (224, 224))
        assert psnr(image, reference) >= 40  # the same DCT scaling as Pillow's draft (equal with decoder="pillow")
        if decoder == "pillow":
            assert np.array_equal(image, reference)
        full = ImagesMmap(path, decoder=decoder)[k]
        assert psnr(resized(image, (224, 224)), resized(full, (224, 224))) >= 30
    assert np.array_equal(m[3], arrays[3])
    assert np.array_equal(m[2], ImagesMmap(path)[2])


def test_full_decoding_stays_the_default(pictures):
    path, _, _ = pictures
    m = ImagesMmap(path)
    assert m[0].shape == (500, 701, 3) and m.decoder.draft is None


def test_get_batch_takes_draft_and_pads_to_the_largest_decoded_shape(pictures):
    path, _, _ = pictures
    m = ImagesMmap(path)
    padded, shapes = m.get_batch([0, 1, 2], draft=(224, 224), pad_value=0)
    assert padded.shape == (3, 250, 351, 3)
    assert shapes.tolist() == [[250, 351, 3], [250, 225, 3], [100, 120, 3]]
    drafted = ImagesMmap(path, draft=(224, 224))
    assert np.array_equal(padded[1, :250, :225], drafted[1])
    assert np.all(padded[1, :, 225:] == 0) and np.all(padded[2, 100:] == 0)
    same, _ = drafted.get_batch([0, 1, 2], pad_value=0, threads=2)
    assert np.array_equal(same, padded)
    assert drafted.get_batch([0], draft=False).shape == (1, 500, 701, 3)  # full decoding for one call
    with pytest.raises(ValueError, match="different shapes"):
        drafted.get_batch([0, 1])
    assert m.get_batch([0]).shape == (1, 500, 701, 3)  # the handle's own option is unchanged


def test_draft_with_channels_1_matches_pillow(pictures):
    path, _, samples = pictures
    gray = ImagesMmap(path, draft=(224, 224), channels=1)
    assert gray[0].shape == (250, 351, 1)
    assert psnr(gray[0], pillow_draft(samples[0], (224, 224), "L")) >= 40
    pillow = ImagesMmap(path, draft=(224, 224), channels=1, decoder="pillow")
    assert np.array_equal(pillow[0], pillow_draft(samples[0], (224, 224), "L"))


def test_draft_is_kept_when_pickled_and_checked(pictures):
    path, _, _ = pictures
    m = pickle.loads(pickle.dumps(ImagesMmap(path, draft=(100, 300))))
    assert m.decoder.draft == (100, 300) and m[0].shape == (250, 351, 3)
    for bad in [(0, 10), (10,), "224", (224.0, 224), (True, 3)]:
        with pytest.raises((TypeError, ValueError), match="draft"):
            ImagesMmap(path, draft=bad)
    with pytest.raises((TypeError, ValueError), match="draft"):
        m.get_batch([0], draft=(-1, 5))


def test_sharded_maps_pass_draft_to_their_shards(pictures, tmp_path):
    path, _, _ = pictures
    ImagesMmap.from_generator(tmp_path / "second", [jpeg(smooth(480, 640, 5))], batch_size=1).close()
    sharded = merge(tmp_path / "all", [path, tmp_path / "second"])
    from mmap_ninja.containers.sharded import ShardedMap

    drafted = ShardedMap(tmp_path / "all", draft=(224, 224))
    assert drafted[0].shape == (250, 351, 3) and drafted[4].shape == (240, 320, 3)
    padded, shapes = drafted.get_batch([0, 4], pad_value=0)
    assert padded.shape == (2, 250, 351, 3) and shapes.tolist() == [[250, 351, 3], [240, 320, 3]]
    padded, shapes = sharded.get_batch([0, 4], pad_value=0, draft=(224, 224))
    assert shapes.tolist() == [[250, 351, 3], [240, 320, 3]]
    assert pickle.loads(pickle.dumps(drafted))[4].shape == (240, 320, 3)


def test_records_images_fields_take_draft(tmp_path):
    rows = [{"image": jpeg(smooth(500, 701)), "label": 1}, {"image": jpeg(smooth(480, 640, 1)), "label": 2}]
    RecordsMmap.from_generator(tmp_path / "r", rows, batch_size=2, schema={"image": "images", "label": int})
    rec = RecordsMmap(tmp_path / "r", draft=(224, 224))
    batch, lengths = rec.get_batch([0, 1], pad_value=0)
    assert batch["image"].shape == (2, 250, 351, 3)
    assert lengths["image"].tolist() == [[250, 351, 3], [240, 320, 3]]
    assert rec["image"][1].shape == (240, 320, 3) and rec["image"].shape(1) == (480, 640, 3)
    assert rec[1]["image"].shape == (240, 320, 3)
    full = RecordsMmap(tmp_path / "r")
    assert full.get_batch([1])["image"].shape == (1, 480, 640, 3)
    assert full.get_batch([1], draft=(224, 224))["image"].shape == (1, 240, 320, 3)
    assert pickle.loads(pickle.dumps(rec)).get_batch([1])["image"].shape == (1, 240, 320, 3)


def test_remote_maps_pass_draft_through(pictures, tmp_path):
    pytest.importorskip("fsspec")
    from mmap_ninja import open_existing, upload

    path, _, _ = pictures
    upload(path, "memory://draft-test/single")
    remote = open_existing("memory://draft-test/single", cache_dir=tmp_path / "cache", draft=(224, 224))
    assert remote[0].shape == (250, 351, 3) and remote.shape(0) == (500, 701, 3)
    assert remote.get_batch([1]).shape == (1, 250, 225, 3)
    assert pickle.loads(pickle.dumps(remote))[0].shape == (250, 351, 3)
    merge(tmp_path / "sharded", [path])
    upload(tmp_path / "sharded", "memory://draft-test/sharded")
    sharded = open_existing("memory://draft-test/sharded", cache_dir=tmp_path / "cache", draft=(224, 224))
    assert sharded[1].shape == (250, 225, 3)
    assert sharded.get_batch([0, 1], pad_value=0)[1].tolist() == [[250, 351, 3], [250, 225, 3]]


def test_decoded_shapes_say_what_reads_return_without_decoding(pictures):
    path, _, _ = pictures
    drafted = ImagesMmap(path, draft=(224, 224))
    assert drafted.decoded_shapes().tolist() == [list(drafted[i].shape) for i in range(4)]
    assert drafted.decoded_shapes([1]).tolist() == [[250, 225, 3]]
    assert ImagesMmap(path).decoded_shapes().tolist() == ImagesMmap(path).shapes().tolist()
