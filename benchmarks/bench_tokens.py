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
import statistics
import tempfile
import time
from pathlib import Path

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
    preallocated array, interleaved on the same random windows."""
    values, seq_len, stride = dataset.tokens.values, dataset.seq_len, dataset.stride
    out = np.empty((size, seq_len), dtype=values.dtype)
    batched, stacked, copied = [], [], []
    for _ in range(batches):
        windows = rng.integers(0, len(dataset), size)
        start = time.perf_counter()
        dataset.get_batch(windows)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset.get_batch(windows, boundaries=False)
        stacked.append(time.perf_counter() - start)
        start = time.perf_counter()
        for row, first in zip(out, (windows * stride).tolist()):
            np.copyto(row, values[first:first + seq_len])
        copied.append(time.perf_counter() - start)
    return tuple(statistics.median(times) * 1e6 for times in (batched, stacked, copied))  # type: ignore[return-value]


def padding(tokens: RaggedMmap, lengths: np.ndarray, rng: np.random.Generator) -> tuple[int, float, float, float]:
    """(max_tokens, share of the token-budget sampler, of fixed random batches of its mean size, mean size)."""
    max_tokens = 1 << int(lengths.max() - 1).bit_length()
    report = TokenBudgetBatchSampler(tokens, max_tokens).padding_report()
    batch_size = max(1, round(len(lengths) / report.batches))
    shuffled = np.maximum(lengths[rng.permutation(len(lengths))], 1)
    padded = sum(int(chunk.max()) * len(chunk) for chunk in np.array_split(shuffled, -(-len(shuffled) // batch_size)))
    return max_tokens, report.padding_share, 1 - int(lengths.sum()) / padded, len(lengths) / report.batches


def bench(name: str, tokens_array: np.ndarray, lengths: np.ndarray, root: Path, seq_len: int,
          reads: int) -> list[tuple[str, list]]:
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

    windows = rng.integers(0, min(len(dataset), len(megatron)), reads).tolist()
    ours_us = per_call_us(dataset.__getitem__, windows)
    megatron_us = per_call_us(megatron.__getitem__, windows)
    batch_us, stack_us, copy_us = batch_vs_copy(dataset, 200, 64, rng)
    max_tokens, budget_share, fixed_share, mean_batch = padding(tokens, lengths, rng)
    print(f"\n### {name}: {len(lengths):,} documents, {int(lengths.sum()):,} tokens, {len(dataset):,} windows "
          f"of {seq_len}")
    print(markdown_table(["build (s)", "index build or open (s)", "index memory (MB)", "window (us)"], [
        ("mmap_ninja RaggedMmap + PackedTokens", [ours_build, ours_open, 0.0, ours_us]),
        ("Megatron-style IndexedDataset + NumPy sample index", [megatron_write, megatron_index,
                                                                 megatron.index_bytes() / 1e6, megatron_us]),
    ]))
    print()
    print(markdown_table(["time (us)", "x copyto"], [
        ("64 windows: PackedTokens.get_batch (with boundaries)", [batch_us, batch_us / copy_us]),
        ("64 windows: PackedTokens.get_batch(boundaries=False)", [stack_us, stack_us / copy_us]),
        ("64 windows: np.copyto one by one into a preallocated array", [copy_us, 1.0]),
    ]))
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


def lm_epoch(name: str, tokens_array: np.ndarray, root: Path, block: int, batch_size: int) -> None:
    """One shuffled epoch of packed ``block``-token blocks (inputs and labels: ``block - 1`` tokens apart) through a
    DataLoader with 0 and 2 workers: `PackedTokens` + `ResumableSampler` + its collate (with boundaries and
    position ids), against a Hugging Face ``datasets`` Dataset of the same blocks (the usual "group texts" layout:
    one row per block, built here with NumPy) read as NumPy and collated by PyTorch's default."""
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.adapters.torch import ResumableSampler

    rows: list[tuple[str, list]] = []
    windows = PackedTokens(RaggedMmap(root / f"{name}-map", mode="r"), block, stride=block - 1)
    try:
        import datasets
    except ImportError:
        datasets = None
    hf = None
    if datasets is not None:
        start = time.perf_counter()
        count = (len(tokens_array) - block) // (block - 1) + 1
        starts = np.arange(count, dtype=np.int64) * (block - 1)
        blocks = tokens_array[starts[:, None] + np.arange(block)]
        hf = datasets.Dataset.from_dict({"input_ids": blocks.astype(np.int64)}).with_format("numpy")
        hf_build = time.perf_counter() - start
        del blocks
    for workers in (0, 2):
        start = time.perf_counter()
        loader = DataLoader(windows, batch_size=batch_size, num_workers=workers, collate_fn=PackedTokens.collate,
                            sampler=ResumableSampler(windows, seed=0))
        seen = sum(batch["input_ids"].shape[0] for batch in loader)
        rows.append((f"PackedTokens + ResumableSampler, {workers} workers", [0.0, time.perf_counter() - start, seen]))
        if hf is not None:
            start = time.perf_counter()
            loader = DataLoader(hf, batch_size=batch_size, num_workers=workers, shuffle=True,
                                generator=torch.Generator().manual_seed(0))
            seen = sum(batch["input_ids"].shape[0] for batch in loader)
            rows.append((f"Hugging Face datasets {datasets.__version__}, {workers} workers",
                         [hf_build, time.perf_counter() - start, seen]))
    print(f"\n### {name}: one shuffled epoch of {block:,}-token blocks, batches of {batch_size}")
    print(markdown_table(["build (s)", "epoch (s)", "blocks"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with text/*.txt (scripts/get_data.py)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many text files (0: all)")
    parser.add_argument("--synthetic-docs", type=int, default=1_000_000)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--reads", type=int, default=20_000, help="random windows per timing run")
    parser.add_argument("--no-epoch", dest="epoch", action="store_false",
                        help="skip the LM epoch against Hugging Face datasets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_tokens_") as tmp:
        targets = []
        tokens, lengths = byte_corpus(args.data / "text", args.limit)
        targets += bench("real text, byte-level", tokens, lengths, Path(tmp), args.seq_len, args.reads)
        if args.epoch:
            lm_epoch("real text, byte-level", tokens, Path(tmp), 2049, 16)
        del tokens
        tokens, lengths = synthetic_corpus(args.synthetic_docs)
        targets += bench("synthetic", tokens, lengths, Path(tmp), args.seq_len, args.reads)
        print("\n### Targets")
        print(markdown_table(["result"], targets))


if __name__ == "__main__":
    main()
