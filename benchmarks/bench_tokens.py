"""Token maps for pretraining: windows with document boundaries, batches of windows, token-budget batches.

    PYTHONPATH=src python benchmarks/bench_tokens.py --data data [--synthetic-docs 1000000] [--seq-len 4096]

Two corpora, each timed in one run of one process: the real text corpus (``--data``/text, from
``scripts/get_data.py`` or ``get_real_data.sh``) tokenized at the byte level (each byte a token, plus an
end-of-document token 256, stored as uint16), and ``--synthetic-docs`` random uint16 sequences (log-normal
lengths, median 128 tokens, at most 4,096). For each corpus the table gives:

- building: our `RaggedMmap` (``extend_flat``: data and offsets, nothing else), against a Megatron-style
  ``IndexedDataset`` (a ``.bin`` of tokens and an ``.idx`` of int32 sizes and int64 pointers) plus the NumPy
  sample index GPTDataset builds before the first read (one epoch: a shuffled document index, the
  (document, offset) of every window boundary, a shuffled window index). `PackedTokens` builds nothing: opening
  it is timed instead, and its index memory is none (the map's offsets);
- one ``seq_len`` window with its boundaries (``cu_seqlens``, document ids), random windows, unbatched: mean of
  20,000, best of 5 runs (target <= 10 us), for `PackedTokens` and the Megatron-style reader (which
  concatenates the pieces of a window that crosses documents into a new array);
- a batch of 64 random windows: ``PackedTokens.get_batch`` (one (64, seq_len) array, with and without the
  flattened boundaries) against copying the same 64 windows one by one with ``np.copyto`` into a preallocated
  array (target <= 1.2x), median of 200 batches;
- `TokenBudgetBatchSampler` padding, pad / (pad + real tokens), with ``max_tokens`` the smallest power of two at
  least the longest document (target <= 5 %), beside fixed-size random batches of the same mean batch size.

Every figure is wall time on a shared machine: compare the rows of one run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mmap_ninja import RaggedMmap
from mmap_ninja.adapters.torch import PackedTokens, TokenBudgetBatchSampler

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_tokens
    from benchmarks._tables import markdown_table

EOD = 256  # the byte-level corpus's end-of-document token


def byte_corpus(text_dir: Path, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths) of the text files: each file's bytes as uint16 tokens, then EOD."""
    files = sorted(p for p in text_dir.glob("*.txt"))[:limit or None]
    if not files:
        raise SystemExit(f"no .txt files in {text_dir}; fetch them with: python scripts/get_data.py DIR")
    parts, lengths = [], []
    for path in files:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.uint16)
        parts.append(np.append(raw, np.uint16(EOD)))
        lengths.append(len(raw) + 1)
    return np.concatenate(parts), np.asarray(lengths, dtype=np.int64)


def synthetic_corpus(documents: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(128), 1.0, documents).astype(np.int64), 1, 4096)
    return rng.integers(0, 50_000, int(lengths.sum()), dtype=np.uint16), lengths


# ---------------------------------------------------------------------------- a Megatron-style reference


class MegatronStyle:
    """A Megatron-style ``IndexedDataset`` (``.bin`` tokens, ``.idx`` sizes and pointers) read through
    ``np.memmap``, with GPTDataset's NumPy sample index over one shuffled epoch of documents."""

    def __init__(self, prefix: Path, seq_len: int, seed: int = 0):
        self.sizes = np.fromfile(f"{prefix}.sizes.idx", dtype=np.int32)
        self.pointers = np.fromfile(f"{prefix}.pointers.idx", dtype=np.int64)  # in tokens
        self.tokens = np.memmap(f"{prefix}.bin", dtype=np.uint16, mode="r")
        self.seq_len = seq_len
        rng = np.random.default_rng(seed)
        self.doc_idx = rng.permutation(len(self.sizes)).astype(np.int32)
        # The window boundaries of the shuffled concatenation: (position in doc_idx, offset in that document).
        ends = np.cumsum(self.sizes[self.doc_idx], dtype=np.int64)
        windows = (int(ends[-1]) - 1) // seq_len if len(ends) else 0
        bounds = np.arange(windows + 1, dtype=np.int64) * seq_len
        where = np.searchsorted(ends, bounds, side="right")
        where = np.minimum(where, len(ends) - 1)
        self.sample_idx = np.empty((windows + 1, 2), dtype=np.int64)
        self.sample_idx[:, 0] = where
        self.sample_idx[:, 1] = bounds - (ends[where] - self.sizes[self.doc_idx[where]])
        self.shuffle_idx = rng.permutation(windows).astype(np.int64)

    @staticmethod
    def write(prefix: Path, tokens: np.ndarray, lengths: np.ndarray) -> None:
        tokens.tofile(f"{prefix}.bin")
        lengths.astype(np.int32).tofile(f"{prefix}.sizes.idx")
        (np.cumsum(lengths) - lengths).astype(np.int64).tofile(f"{prefix}.pointers.idx")

    def index_bytes(self) -> int:
        return self.doc_idx.nbytes + self.sample_idx.nbytes + self.shuffle_idx.nbytes

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window k: its tokens (a new array when it crosses documents) and its cu_seqlens."""
        j = int(self.shuffle_idx[k])
        (doc_first, offset_first), (doc_last, offset_last) = self.sample_idx[j:j + 2].tolist()
        doc_idx, pointers, sizes, tokens = self.doc_idx, self.pointers, self.sizes, self.tokens
        if doc_first == doc_last:
            start = int(pointers[doc_idx[doc_first]]) + offset_first
            return tokens[start:start + self.seq_len], np.array([0, self.seq_len], dtype=np.int32)
        pieces, cuts = [], [0]
        for position in range(doc_first, doc_last + 1):
            doc = int(doc_idx[position])
            begin = offset_first if position == doc_first else 0
            end = offset_last if position == doc_last else int(sizes[doc])
            if end <= begin:
                continue
            pieces.append(tokens[int(pointers[doc]) + begin:int(pointers[doc]) + end])
            cuts.append(cuts[-1] + end - begin)
        return np.concatenate(pieces), np.array(cuts, dtype=np.int32)


# ---------------------------------------------------------------------------- timing


def per_call_us(read, indices: list[int], runs: int = 5) -> float:
    """Best over ``runs`` of the mean time of ``read(i)`` over ``indices``, in microseconds (the best: the run
    least disturbed by the machine's other work)."""
    means = []
    for _ in range(runs):
        start = time.perf_counter()
        for i in indices:
            read(i)
        means.append((time.perf_counter() - start) / len(indices) * 1e6)
    return min(means)


def batch_vs_copy(dataset: PackedTokens, batches: int, size: int,
                  rng: np.random.Generator) -> tuple[float, float, float]:
    """Median us of get_batch (with and without boundaries) and of np.copyto one window at a time into a
    preallocated array. Interleaved: each round runs the three once, in a rotating order, each on its own fresh
    random windows (reading windows another method just read would find them in the CPU caches)."""
    values, seq_len, stride = dataset.tokens.values, dataset.seq_len, dataset.stride
    out = np.empty((size, seq_len), dtype=values.dtype)

    def copy_one_by_one(windows: np.ndarray) -> None:
        for row, first in zip(out, (windows * stride).tolist()):
            np.copyto(row, values[first:first + seq_len])

    methods = [dataset.get_batch, lambda windows: dataset.get_batch(windows, boundaries=False), copy_one_by_one]
    times: list[list[float]] = [[] for _ in methods]
    for round_ in range(batches):
        for k in range(len(methods)):
            method = (round_ + k) % len(methods)
            windows = rng.integers(0, len(dataset), size)
            start = time.perf_counter()
            methods[method](windows)
            times[method].append(time.perf_counter() - start)
    return tuple(statistics.median(t) * 1e6 for t in times)  # type: ignore[return-value]


def padding(tokens: RaggedMmap, lengths: np.ndarray, rng: np.random.Generator) -> tuple[int, float, float, float]:
    """(max_tokens, share of the token-budget sampler, of fixed random batches of its mean size, mean size)."""
    max_tokens = 1 << int(lengths.max() - 1).bit_length()
    report = TokenBudgetBatchSampler(tokens, max_tokens).padding_report()
    batch_size = max(1, round(len(lengths) / report.batches))
    shuffled = np.maximum(lengths[rng.permutation(len(lengths))], 1)
    padded = sum(int(chunk.max()) * len(chunk) for chunk in np.array_split(shuffled, -(-len(shuffled) // batch_size)))
    return max_tokens, report.padding_share, 1 - int(lengths.sum()) / padded, len(lengths) / report.batches


def run_peers(peers_python: Optional[str], command: str, work: Path, *options: str) -> dict[str, dict]:
    """Run ``_token_peers.py COMMAND`` with the peers' interpreter; its JSON lines by peer (empty without one)."""
    if not peers_python:
        return {}
    done = subprocess.run([peers_python, str(Path(__file__).with_name("_token_peers.py")), command, "--work",
                           str(work), *options], capture_output=True, text=True, cwd=work)
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith('{"peer"'):
            result = json.loads(line)
            found[result["peer"]] = result
    if not found:
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        found = {peer: {"peer": peer, "error": error} for peer in ("litdata", "mosaicml-streaming")}
    return found


def peer_row(result: Optional[dict], name: str, figures: list[str], missing: str) -> tuple[str, list]:
    """A table row for a peer: its figures, or why it did not run."""
    if result is None:
        return (f"{name}: not run ({missing})", ["-"] * len(figures))
    if "error" in result:
        return (f"{name}: failed ({result['error'][:150]})", ["-"] * len(figures))
    return (f"{name} {result['version']}", [result.get(key, "-") for key in figures])


NO_PEERS = "pass --peers-python: a virtualenv with litdata and mosaicml-streaming, benchmarks/make_peers_venv.sh"


def bench(name: str, tokens_array: np.ndarray, lengths: np.ndarray, root: Path, seq_len: int,
          reads: int, batches: int, peers_python: Optional[str], with_mds: bool) -> list[tuple[str, list]]:
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    tokens = RaggedMmap(root / f"{name}-map")
    tokens.extend_flat(tokens_array, lengths)
    ours_build = time.perf_counter() - start
    start = time.perf_counter()
    dataset = PackedTokens(RaggedMmap(root / f"{name}-map", mode="r"), seq_len)
    ours_open = time.perf_counter() - start

    start = time.perf_counter()
    MegatronStyle.write(root / f"{name}-megatron", tokens_array, lengths)
    megatron_write = time.perf_counter() - start
    start = time.perf_counter()
    megatron = MegatronStyle(root / f"{name}-megatron", seq_len)
    megatron_index = time.perf_counter() - start

    peers: dict[str, dict] = {}
    if peers_python:
        work = root / f"{name}-peers"
        work.mkdir()
        np.save(work / "tokens.npy", tokens_array)
        np.save(work / "lengths.npy", lengths)
        peers = run_peers(peers_python, "build", work, "--tokens", str(work / "tokens.npy"), "--lengths",
                          str(work / "lengths.npy"), "--block", "2049", *([] if with_mds else ["--no-mds"]))
        (work / "builds.json").write_text(json.dumps(peers))
        window = run_peers(peers_python, "window", work, "--seq-len", str(seq_len), "--reads", str(reads))
        for peer, result in window.items():
            peers.setdefault(peer, {}).update(result)
        (work / "tokens.npy").unlink()

    windows = rng.integers(0, min(len(dataset), len(megatron)), reads).tolist()
    ours_us = per_call_us(dataset.__getitem__, windows)
    megatron_us = per_call_us(megatron.__getitem__, windows)
    batch_us, stack_us, copy_us = batch_vs_copy(dataset, batches, 64, rng)
    max_tokens, budget_share, fixed_share, mean_batch = padding(tokens, lengths, rng)
    print(f"\n### {name}: {len(lengths):,} documents, {int(lengths.sum()):,} tokens, {len(dataset):,} windows "
          f"of {seq_len}")
    lit = peers.get("litdata")
    if lit is not None and "error" not in lit and "window_us" not in lit:
        lit = {"peer": "litdata", "error": "its window reads did not run"}
    print(markdown_table(["build (s)", "index build or open (s)", "index memory (MB)", "window (us)"], [
        ("mmap_ninja RaggedMmap + PackedTokens (window with cu_seqlens, doc ids)",
         [ours_build, ours_open, 0.0, ours_us]),
        ("Megatron-style IndexedDataset + NumPy sample index (window with cu_seqlens)",
         [megatron_write, megatron_index, megatron.index_bytes() / 1e6, megatron_us]),
        peer_row({**lit, "index_mb": lit.get("index_mb", 0.0)} if lit else None,
                 "LitData optimize + TokensLoader (tokens only, windows within a chunk)",
                 ["build_s", "open_s", "index_mb", "window_us"], NO_PEERS),
    ]))
    print()
    print(markdown_table(["time (us)", "x copyto"], [
        ("64 windows: PackedTokens.get_batch (with boundaries)", [batch_us, batch_us / copy_us]),
        ("64 windows: PackedTokens.get_batch(boundaries=False)", [stack_us, stack_us / copy_us]),
        ("64 windows: np.copyto one by one into a preallocated array", [copy_us, 1.0]),
    ]))
    print(f"\nbatch of 64 with boundaries / np.copyto one by one: {batch_us / copy_us:.2f}x (median of {batches} "
          f"interleaved rounds)")
    print()
    print(markdown_table(["padding share", "mean batch (samples)"], [
        (f"TokenBudgetBatchSampler, max_tokens={max_tokens:,}", [budget_share, mean_batch]),
        ("fixed-size random batches of the same mean size", [fixed_share, mean_batch]),
    ]))
    targets = [("one window with boundaries <= 10 us", ours_us <= 10),
               ("batch of 64 stacked within 1.2x np.copyto", stack_us <= 1.2 * copy_us),
               ("batch of 64 with boundaries within 1.2x np.copyto", batch_us <= 1.2 * copy_us),
               ("token-budget padding <= 5 %", budget_share <= 0.05)]
    return [(f"{name}: {goal}", ["PASS" if ok else "FAIL"]) for goal, ok in targets]


def lm_epoch(name: str, tokens_array: np.ndarray, root: Path, block: int, batch_size: int, rounds: int,
             peers_python: Optional[str]) -> None:
    """One shuffled epoch of packed ``block``-token blocks (inputs and labels: blocks taken every ``block - 1``
    tokens) through a DataLoader with 0 and 2 workers, ``rounds`` times each, the systems interleaved in each round:
    `PackedTokens` + `ResumableSampler` + its collate (the batch read at once, with boundaries and position ids),
    a Hugging Face ``datasets`` Dataset of the same blocks (the usual "group texts" layout: one row per block, built
    here with NumPy) read as NumPy and collated by PyTorch's default, and with ``peers_python`` LitData
    (``TokensLoader`` blocks of the documents' chunks from ``bench``'s build) and MosaicML streaming (an MDS
    dataset of the blocks), each epoch in a child process of the peers' interpreter."""
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.adapters.torch import ResumableSampler

    windows = PackedTokens(RaggedMmap(root / f"{name}-map", mode="r"), block, stride=block - 1)
    try:
        import datasets
    except ImportError:
        datasets = None
    hf, hf_build = None, 0.0
    if datasets is not None:
        start = time.perf_counter()
        count = (len(tokens_array) - block) // (block - 1) + 1
        starts = np.arange(count, dtype=np.int64) * (block - 1)
        blocks = tokens_array[starts[:, None] + np.arange(block)]
        hf = datasets.Dataset.from_dict({"input_ids": blocks.astype(np.int64)}).with_format("numpy")
        hf_build = time.perf_counter() - start
        del blocks
    work = root / f"{name}-peers"
    rows: list[tuple[str, list]] = []
    builds = json.loads((work / "builds.json").read_text()) if (work / "builds.json").exists() else {}
    for workers in (0, 2):
        times: dict[str, list[float]] = {}
        seen: dict[str, int] = {}
        results: dict[str, dict] = {}
        for _ in range(rounds):
            start = time.perf_counter()
            loader = DataLoader(windows, batch_size=batch_size, num_workers=workers,
                                collate_fn=PackedTokens.collate, sampler=ResumableSampler(windows, seed=0))
            seen["ours"] = sum(batch["input_ids"].shape[0] for batch in loader)
            times.setdefault("ours", []).append(time.perf_counter() - start)
            if hf is not None:
                start = time.perf_counter()
                loader = DataLoader(hf, batch_size=batch_size, num_workers=workers, shuffle=True,
                                    generator=torch.Generator().manual_seed(0))
                seen["hf"] = sum(batch["input_ids"].shape[0] for batch in loader)
                times.setdefault("hf", []).append(time.perf_counter() - start)
            if peers_python and work.exists():
                for peer, result in run_peers(peers_python, "epoch", work, "--block", str(block), "--batch-size",
                                              str(batch_size), "--workers", str(workers)).items():
                    results[peer] = result
                    if "error" not in result:
                        times.setdefault(peer, []).append(result["epoch_s"])
        median = {system: statistics.median(values) for system, values in times.items()}
        rows.append((f"PackedTokens + ResumableSampler + PackedTokens.collate (cu_seqlens, position ids), "
                     f"{workers} workers", [0.0, median["ours"], seen["ours"], seen["ours"] / median["ours"]]))
        if hf is not None:
            rows.append((f"Hugging Face datasets {datasets.__version__}, one row per block, {workers} workers",
                         [hf_build, median["hf"], seen["hf"], seen["hf"] / median["hf"]]))
        for peer, label in (("litdata", "LitData StreamingDataset + TokensLoader"),
                            ("mosaicml-streaming", "MosaicML streaming StreamingDataset (MDS, one row per block)")):
            result = results.get(peer)
            if result is not None and "error" not in result:
                build_s = builds.get(peer, {}).get("build_s", "-")
                rows.append((f"{label} {result['version']}, {workers} workers",
                             [build_s, median[peer], result["blocks"], result["blocks"] / median[peer]]))
            else:
                rows.append(peer_row(result, f"{label}, {workers} workers", ["-"] * 4, NO_PEERS))
    print(f"\n### {name}: one shuffled epoch of {block:,}-token blocks, batches of {batch_size}, median of {rounds} "
          f"interleaved rounds")
    print(markdown_table(["build (s)", "epoch (s)", "blocks", "blocks/s"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with text/*.txt (scripts/get_data.py)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many text files (0: all)")
    parser.add_argument("--synthetic-docs", type=int, default=1_000_000)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--reads", type=int, default=20_000, help="random windows per timing run")
    parser.add_argument("--batches", type=int, default=300, help="interleaved rounds of the batch-of-64 timing")
    parser.add_argument("--epoch-rounds", type=int, default=3, help="interleaved rounds of the LM epoch")
    parser.add_argument("--peers-python", default=None,
                        help="the Python of a virtualenv with litdata and mosaicml-streaming (benchmarks/"
                             "make_peers_venv.sh); without it the peers' rows say they did not run")
    parser.add_argument("--no-epoch", dest="epoch", action="store_false",
                        help="skip the LM epoch against Hugging Face datasets and the peers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_tokens_") as tmp:
        targets = []
        tokens, lengths = byte_corpus(args.data / "text", args.limit)
        targets += bench("real text, byte-level", tokens, lengths, Path(tmp), args.seq_len, args.reads, args.batches,
                         args.peers_python, with_mds=args.epoch)
        if args.epoch:
            lm_epoch("real text, byte-level", tokens, Path(tmp), 2049, 16, args.epoch_rounds, args.peers_python)
        del tokens
        tokens, lengths = synthetic_corpus(args.synthetic_docs)
        targets += bench("synthetic", tokens, lengths, Path(tmp), args.seq_len, args.reads, args.batches,
                         args.peers_python, with_mds=False)
        print("\n### Targets")
        print(markdown_table(["result"], targets))


if __name__ == "__main__":
    main()
