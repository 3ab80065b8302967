"""The peers' side of ``bench_tokens.py``: LitData (``optimize`` + ``TokensLoader``) and MosaicML streaming
(``MDSWriter`` + ``StreamingDataset``) on the same tokens, run by the peers' own interpreter (a separate virtualenv
with CPU torch: ``benchmarks/make_peers_venv.sh`` on the peers branch; ``--peers-python`` of ``bench_tokens.py``).

    python _token_peers.py build  --tokens T.npy --lengths L.npy --work DIR --block 2049
    python _token_peers.py window --work DIR --seq-len 4096 --reads 20000
    python _token_peers.py epoch  --work DIR --block 2049 --batch-size 16 --workers 0

Each command prints one JSON object per peer on its own line: ``{"peer": ..., <figures>}`` or
``{"peer": ..., "error": why}``. ``build`` writes LitData's chunks (one item per document, its tokens as a
uint16 tensor, as litgpt prepares a corpus) and an MDS dataset of blocks of ``block`` tokens taken every
``block - 1`` tokens (llm-foundry's concatenated-tokens layout, one row per block); ``window`` times random reads of
LitData's ``TokensLoader`` blocks of ``seq_len`` tokens; ``epoch`` times one shuffled epoch of ``block``-token
blocks through each peer's loader with ``workers`` DataLoader workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

DOCUMENTS_PER_ITEM_CALL = 256


def import_streaming() -> Any:
    """``import streaming`` without ``streaming.vision`` (it imports torchvision, whose PyPI wheels need CUDA torch);
    only ``MDSWriter`` and ``StreamingDataset`` are used."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # any failure to import it: stand in for the subpackage
        sys.modules.setdefault("streaming.vision", types.ModuleType("streaming.vision"))
    import streaming

    return streaming


def _documents(span: tuple[str, str, int, int]) -> Any:
    """LitData's ``fn``: the documents ``[first, stop)`` of the token file, one uint16 tensor each."""
    import torch

    tokens_path, lengths_path, first, stop = span
    tokens = np.load(tokens_path, mmap_mode="r")
    lengths = np.load(lengths_path, mmap_mode="r")
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    for doc in range(first, stop):
        yield torch.from_numpy(np.array(tokens[starts[doc]:starts[doc + 1]]))


def build(args: argparse.Namespace) -> None:
    tokens = np.load(args.tokens, mmap_mode="r")
    lengths = np.load(args.lengths)
    work = Path(args.work)
    try:
        import litdata
        from litdata.streaming.item_loader import TokensLoader

        spans = [(args.tokens, args.lengths, first, min(first + DOCUMENTS_PER_ITEM_CALL, len(lengths)))
                 for first in range(0, len(lengths), DOCUMENTS_PER_ITEM_CALL)]
        start = time.perf_counter()
        litdata.optimize(fn=_documents, inputs=spans, output_dir=str(work / "litdata"), chunk_bytes="64MB",
                         num_workers=1, item_loader=TokensLoader(), mode="overwrite")
        seconds = time.perf_counter() - start
        index = sum(p.stat().st_size for p in (work / "litdata").glob("*.json"))
        print(json.dumps({"peer": "litdata", "version": litdata.__version__, "build_s": seconds,
                          "index_mb": index / 1e6}), flush=True)
    except Exception as error:  # reported in the table row
        print(json.dumps({"peer": "litdata", "error": f"{type(error).__name__}: {error}"}), flush=True)
    if not args.mds:
        return
    try:
        streaming = import_streaming()
        start = time.perf_counter()
        block, step = args.block, args.block - 1
        count = (len(tokens) - block) // step + 1 if len(tokens) >= block else 0
        with streaming.MDSWriter(out=str(work / "mds"), columns={"tokens": f"ndarray:uint16:{block}"},
                                 size_limit=1 << 26) as writer:
            for k in range(count):
                writer.write({"tokens": np.asarray(tokens[k * step:k * step + block])})
        seconds = time.perf_counter() - start
        print(json.dumps({"peer": "mosaicml-streaming", "version": streaming.__version__, "build_s": seconds,
                          "blocks": count}), flush=True)
    except Exception as error:
        print(json.dumps({"peer": "mosaicml-streaming", "error": f"{type(error).__name__}: {error}"}), flush=True)


def window(args: argparse.Namespace) -> None:
    try:
        import litdata
        from litdata.streaming.item_loader import TokensLoader

        start = time.perf_counter()
        dataset = litdata.StreamingDataset(str(Path(args.work) / "litdata"),
                                           item_loader=TokensLoader(block_size=args.seq_len), shuffle=False)
        dataset[0]
        opened = time.perf_counter() - start
        picks = np.random.default_rng(1).integers(0, len(dataset), args.reads).tolist()
        for k in picks[:200]:  # open every chunk's mapping first
            dataset[k]
        best = float("inf")
        for _ in range(args.runs):
            start = time.perf_counter()
            for k in picks:
                dataset[k]
            best = min(best, (time.perf_counter() - start) / len(picks) * 1e6)
        print(json.dumps({"peer": "litdata", "version": litdata.__version__, "window_us": best, "open_s": opened,
                          "windows": len(dataset)}), flush=True)
    except Exception as error:
        print(json.dumps({"peer": "litdata", "error": f"{type(error).__name__}: {error}"}), flush=True)


def epoch(args: argparse.Namespace) -> None:
    import torch

    work = Path(args.work)
    try:
        import litdata
        from litdata.streaming.item_loader import TokensLoader

        start = time.perf_counter()
        dataset = litdata.StreamingDataset(str(work / "litdata"), item_loader=TokensLoader(block_size=args.block),
                                           shuffle=True, seed=0)
        loader = litdata.StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
        seen = sum(len(batch) for batch in loader)
        print(json.dumps({"peer": "litdata", "version": litdata.__version__, "epoch_s": time.perf_counter() - start,
                          "blocks": seen}), flush=True)
    except Exception as error:
        print(json.dumps({"peer": "litdata", "error": f"{type(error).__name__}: {error}"}), flush=True)
    try:
        streaming = import_streaming()
        streaming.base.util.clean_stale_shared_memory()
        start = time.perf_counter()
        dataset = streaming.StreamingDataset(local=str(work / "mds"), shuffle=True, shuffle_seed=0,
                                             batch_size=args.batch_size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
        seen = sum(len(batch["tokens"]) for batch in loader)
        print(json.dumps({"peer": "mosaicml-streaming", "version": streaming.__version__,
                          "epoch_s": time.perf_counter() - start, "blocks": seen}), flush=True)
    except Exception as error:
        print(json.dumps({"peer": "mosaicml-streaming", "error": f"{type(error).__name__}: {error}"}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "window", "epoch"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--tokens")
    parser.add_argument("--lengths")
    parser.add_argument("--block", type=int, default=2049)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-mds", dest="mds", action="store_false", help="build: LitData's chunks only")
    args = parser.parse_args()
    {"build": build, "window": window, "epoch": epoch}[args.command](args)


if __name__ == "__main__":
    main()
