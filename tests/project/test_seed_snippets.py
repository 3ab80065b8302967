"""Every code snippet of the user's request (shared/seed/mmap_ninja_api.md) runs as written.

Only the data sources change, because they need a network: sklearn's ``fetch_20newsgroups`` becomes real
CPython documentation text, and the COCO folder a folder of real JPEGs from matplotlib's sample data.
"""

import re
from pathlib import Path

import numpy as np
import pytest

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "mmap_ninja_api.md"

SNIPPETS = [
    """\
from mmap_ninja.string import StringsMmmap
from sklearn.datasets import fetch_20newsgroups

data = fetch_20newsgroups()
memmap = StringsMmmap.from_strings('20newsgroups', data['data'], verbose=True)
""",
    """\
from mmap_ninja.string import StringsMmmap
texts = StringsMmmap('20newsgroups')
print(texts[123]) # Prints the 123-th text
""",
    """\
import matplotlib.pyplot as plt
from mmap_ninja.ragged import RaggedMmap
from pathlib import Path

coco_path = Path('/home/hvrigazov/data/coco/val2017')
val_images = RaggedMmap.from_generator('val_images', 
                                       map(plt.imread, coco_path.iterdir()), 
                                       batch_size=1024, 
                                       verbose=True)
""",
    """\
from mmap_ninja.ragged import RaggedMmap

training_images = RaggedMmap('val_images')
print(training_images[3]) # Prints the ndarray image, e.g. with shape (387, 640, 3)
""",
]


def test_snippets_are_the_seed_documents():
    if not SEED.exists():
        pytest.skip(f"{SEED} is not beside this checkout")
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), flags=re.S)
    assert blocks == SNIPPETS


def run(snippet, swaps=None, **names):
    """Run ``snippet`` with the text replacements ``swaps`` and the extra global ``names``."""
    for old, new in (swaps or {}).items():
        assert old in snippet
        snippet = snippet.replace(old, new)
    namespace = dict(names)
    exec(compile(snippet, "<seed snippet>", "exec"), namespace)
    return namespace


def test_text_snippets(real_texts, capsys):
    texts = real_texts * 2  # 158 real documents, so that texts[123] exists
    ns = run(SNIPPETS[0], {"from sklearn.datasets import fetch_20newsgroups":
                             "fetch_20newsgroups = lambda: {'data': TEXTS}"}, TEXTS=texts)
    assert len(ns["memmap"]) == len(texts)
    assert f"{len(texts)}/{len(texts)}" in capsys.readouterr().err  # the progress bar
    ns = run(SNIPPETS[1])
    assert ns["texts"][123] == texts[123]
    assert capsys.readouterr().out == texts[123] + "\n"


def test_image_snippets(real_image_dir, capsys):
    ns = run(SNIPPETS[2], {"/home/hvrigazov/data/coco/val2017": str(real_image_dir)})
    import matplotlib.pyplot as plt

    expected = [plt.imread(p) for p in real_image_dir.iterdir()]
    images = ns["val_images"]
    assert len(images) == len(expected) == 5
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(images, expected))
    assert len({img.shape for img in images}) == 5 and images.dtype == np.uint8
    capsys.readouterr()
    ns = run(SNIPPETS[3])
    assert ns["training_images"][3].shape == expected[3].shape
    assert str(expected[3].ravel()[0]) in capsys.readouterr().out
