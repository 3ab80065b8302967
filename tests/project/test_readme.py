"""The README's Python snippets run as written, one after the other in one folder, as a new user pastes them."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_snippets_run(capsys):
    snippets = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    remote = next(s for s in snippets if "memory://" in s)  # the object storage snippet, checked below
    tokens = next(s for s in snippets if "PackedTokens" in s)  # pretraining on token maps, checked below
    order = next(s for s in snippets if "blend(" in s)  # the training order snippet, checked below
    first, records, training = (s for s in snippets if s is not remote and s is not order and s is not tokens)
    exec(compile(first, "README snippet 1", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["appended later", "(48, 64, 3)"]

    names: dict = {}
    exec(compile(records, "README snippet 2", "exec"), names)
    row, pictures = capsys.readouterr().out.splitlines()
    assert row == "{'text': 'document 5', 'tokens': array([0, 1, 2, 3, 4], dtype=int32), 'label': np.int64(2)}"
    assert pictures == "(32, 48, 4) b'\\x89PNG'"
    assert names["labels"].tolist() == [i % 3 for i in range(100)]
    padded, lengths = names["batch"]
    assert padded["tokens"].shape == (3, 3) and lengths["tokens"].tolist() == [1, 2, 3]

    names = {}
    exec(compile(training, "README snippet 3", "exec"), names)
    padded, lengths = next(iter(names["loader"]))
    assert padded.shape[0] == 50 and padded.dtype == torch.int64  # this rank's half of the 100 samples
    assert all(int(padded[j, :n].sum()) == n * (n - 1) // 2 for j, n in enumerate(lengths.tolist()))
    assert names["padded"].shape == (64, 64) and names["lengths"].tolist() == list(range(1, 65))
    assert names["t"].tolist() == [0]  # tokens[0] as a tensor

    names = {}
    exec(compile(remote, "README snippet (object storage)", "exec"), names)
    assert capsys.readouterr().out.splitlines()[-1] == "5 [0 1 2]"
    assert list((Path("cache") / "entries").iterdir())  # read through the cache

    names = {}
    exec(compile(order, "README snippet (training order)", "exec"), names)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1000000000 [0, 1, 2, 3, 4]"
    counts, first_source = lines[1].rsplit(" ", 1)
    assert counts == "[800, 200]" and first_source in ("0", "1")
    assert lines[2] == "1 600 350"  # 300 of rank 0 of 2 = global position 600; 1400 left over 4 ranks

    names = {}
    exec(compile(tokens, "README snippet (token maps)", "exec"), names)
    assert capsys.readouterr().out.splitlines()[-3:] == ["[4 5 6]", "[0 1 2 3 4 0 1 2 0] [0 5 8 9] [0 1 2]", "3 20%"]
    batch = next(iter(names["loader"]))
    assert batch["cu_seqlens"].tolist() == [0, 5, 8, 9, 18] and batch["max_seqlen"] == 9
    assert sorted(i for b in names["budget"] for i in b) == [0, 1, 2, 3, 4]


def test_every_snippet_names_its_extras_and_runs_pasted_twice(tmp_path):
    """Each snippet's first line says what to pip install, and the snippet runs as a new user pastes it into a file:
    in a fresh interpreter, twice in a row in the same folder (the second run finds the first one's maps)."""
    import subprocess
    import sys

    snippets = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(snippets) >= 5
    for number, snippet in enumerate(snippets, 1):
        first_line = snippet.splitlines()[0]
        assert re.match(r"# pip install (mmap_ninja|'mmap_ninja\[[a-z0-9,]+\]')", first_line), (number, first_line)
        script = tmp_path / f"snippet{number}.py"
        script.write_text(snippet)
        for attempt in (1, 2):
            done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f"snippet {number}, run {attempt}:\n{done.stderr[-3000:]}"
