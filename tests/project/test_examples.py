"""The training examples run end to end on real files that ship with Python and matplotlib."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script, data, tmp_path, *extra):
    cmd = [sys.executable, str(EXAMPLES / script), "--data", str(data), "--steps", "3", "--workers", "2",
           "--batch-size", "4", "--maps", str(tmp_path / "maps"), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # bounds a hang only (torch, 2 workers)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"samples_seen=(\d+) final_loss=(\S+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1)), float(match.group(2))


def test_train_text_on_stdlib_sources(tmp_path):
    data = tmp_path / "texts"
    for package in (json, re):  # two classes: the folder a file sits in
        source = Path(package.__file__).parent
        (data / package.__name__).mkdir(parents=True)
        for f in sorted(source.glob("*.py"))[:8]:
            shutil.copy(f, data / package.__name__ / f.name)
    seen, loss = _run("train_text.py", data, tmp_path, "--max-len", "256")
    assert seen == 12
    assert math.isfinite(loss)


def test_train_packed_windows_with_document_boundaries(tmp_path):
    data = tmp_path / "texts"
    data.mkdir()
    for f in sorted(Path(json.__file__).parent.glob("*.py"))[:6]:
        shutil.copy(f, data / f.name)
    seen, loss = _run("train_packed.py", data, tmp_path, "--seq-len", "64")
    assert seen == 12
    assert math.isfinite(loss)


def test_train_images_on_matplotlib_images(tmp_path):
    mpl_data = Path(matplotlib.get_data_path())
    data = tmp_path / "images"
    photos = [mpl_data / "sample_data" / n for n in ("grace_hopper.jpg", "logo2.png",
                                                   "Minduka_Present_Blue_Pack.png")]
    icons = sorted((mpl_data / "images").glob("*.png"))[:6]
    for folder, files in (("photos", photos), ("icons", icons)):
        (data / folder).mkdir(parents=True)
        for f in files:
            if f.exists():
                shutil.copy(f, data / folder / f.name)
    assert len(os.listdir(data / "photos")) >= 1 and len(os.listdir(data / "icons")) >= 1
    seen, loss = _run("train_images.py", data, tmp_path, "--size", "32", "--store-size", "96")
    assert seen == 12
    assert math.isfinite(loss)


def test_train_image_folder_on_a_pillow_made_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "root"
    for folder, shade in (("bright", 220), ("dark", 30)):
        (root / folder).mkdir(parents=True)
        for i in range(5):
            size = (20 + 7 * i, 16 + 5 * (i % 3))
            if i == 3:  # a gray PNG with alpha and a gray JPEG: the transform gives every image 3 channels
                Image.new("LA", size, (shade, 255)).save(root / folder / f"{i}.png")
            elif i == 4:
                Image.new("L", size, shade).save(root / folder / f"{i}.jpg")
            else:
                Image.new("RGB", size, (shade, shade - 10 * i, shade)).save(root / folder / f"{i}.jpg")
    seen, loss = _run("train_image_folder.py", root, tmp_path, "--size", "16")
    assert seen == 12
    assert math.isfinite(loss)
