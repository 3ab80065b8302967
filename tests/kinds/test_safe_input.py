"""Refusals a new user meets at the builders' and readers' edges (issue 18, "nothing silent at the edges"): each
names what was given and what was expected, and leaves the disk as it was."""

from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import (
    ImagesMmap,
    NotAMapError,
    NumpyMmap,
    RaggedMmap,
    RecordsMmap,
    ShardedMap,
    StringsMmap,
    np_from_generator,
    np_open_existing,
    open_existing,
)


def snapshot(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): (p.is_dir(), None if p.is_dir() else p.read_bytes())
            for p in sorted(Path(directory).rglob("*"))}


def test_images_from_files_takes_overwrite_as_its_map_exists_error_says(tmp_path, real_image_dir):
    paths = sorted(real_image_dir.iterdir())
    ImagesMmap.from_files(tmp_path / "images", paths[:2]).close()
    with ImagesMmap.from_files(tmp_path / "images", paths[2:], overwrite=True, metadata={"split": "val"},
                               durable=False, lock_timeout=5.0) as images:
        assert len(images) == len(paths) - 2
        assert images.raw(0) == paths[2].read_bytes()


def test_images_from_files_takes_the_commit_protocol_like_the_other_builders(tmp_path, real_image_dir):
    paths = sorted(real_image_dir.iterdir())[:2]
    with ImagesMmap.from_files(tmp_path / "images", paths, commit="slots") as images:
        assert len(images) == 2


def test_images_from_files_refuses_a_single_path_string(tmp_path, real_image_dir):
    path = str(sorted(real_image_dir.iterdir())[0])
    with pytest.raises(TypeError, match="iterable of paths, not a single path"):
        ImagesMmap.from_files(tmp_path / "images", path)
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("build", [
    lambda out, s: StringsMmap.from_generator(out, s, batch_size=2),
    lambda out, s: StringsMmap.from_indexable(out, s, batch_size=2),
    lambda out, s: RaggedMmap.from_generator(out, s),
    lambda out, s: RaggedMmap.from_lists(out, s),
    lambda out, s: np_from_generator(out, s),
    lambda out, s: RecordsMmap.from_generator(out, s),
    lambda out, s: RecordsMmap.from_indexable(out, s),
    lambda out, s: ImagesMmap.from_generator(out, s),
], ids=["strings-gen", "strings-indexable", "ragged-gen", "ragged-lists", "numpy-gen", "records-gen",
        "records-indexable", "images-gen"])
@pytest.mark.parametrize("single", ["abc", b"abc"], ids=["str", "bytes"])
def test_every_builder_refuses_a_single_str_or_bytes_as_its_samples(tmp_path, build, single):
    with pytest.raises(TypeError, match=r"takes an iterable of samples, not a single (str|bytes) \((b?'abc')\)"):
        build(tmp_path / "out", single)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opener", [StringsMmap, RaggedMmap, NumpyMmap, ImagesMmap, RecordsMmap, open_existing,
                                    np_open_existing, ShardedMap, lambda p: StringsMmap(p, mode="r")],
                         ids=["strings", "ragged", "numpy", "images", "records", "open_existing", "np_open_existing",
                              "sharded", "strings-read-only"])
def test_a_regular_file_is_not_a_map_whatever_opens_it(tmp_path, opener):
    path = tmp_path / "existing_file.txt"
    path.write_text("hello\n")
    before = snapshot(tmp_path)
    with pytest.raises(NotAMapError, match=r"existing_file\.txt is a file, not a (sharded )?map directory"):
        opener(path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("samples, bad, shapes", [
    ([np.zeros(2), np.zeros(3)], 1, r"\(3,\), but item 0 has shape \(2,\)"),
    ([np.zeros(2), np.zeros(2), np.zeros((2, 1))], 2, r"\(2, 1\), but item 0 has shape \(2,\)"),
    ([[1, 2], [3, 4], [5]], 2, r"\(1,\), but item 0 has shape \(2,\)"),
], ids=["length", "ndim", "lists"])
def test_np_from_generator_names_the_first_sample_of_another_shape(tmp_path, samples, bad, shapes):
    with pytest.raises(ValueError, match=rf"item {bad} has shape {shapes}"):
        np_from_generator(tmp_path / "n", samples)
