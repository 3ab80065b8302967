"""Pretrain a tiny byte-level causal transformer on packed windows of real text, with document boundaries.

    python examples/train_packed.py --data /path/to/texts --steps 50 --workers 2

``--data`` is a folder of text files (found recursively). Each file becomes one document of byte tokens plus an
end-of-document token (256) in a `RaggedMmap` (uint16). `PackedTokens` with
``seq_len = L + 1`` and ``stride = L`` cuts the concatenation of all documents into windows of inputs and
next-token labels, with no index file; `TokenBudgetBatchSampler` is not needed here because every window has the
same length. The collate gives ``cu_seqlens`` (FlashAttention's boundaries of the documents in the flattened
batch): on a GPU they go straight to ``flash_attn_varlen_func``; on the CPU this example turns them into a
block-diagonal causal mask for ``scaled_dot_product_attention``, so no token attends across a document boundary,
and the loss skips the labels that start a new document. DataLoader workers read the windows from the page cache
(the dataset pickles as the map's path). Needs ``pip install mmap_ninja[torch]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mmap_ninja import RaggedMmap
from mmap_ninja.adapters.torch import PackedTokens

END_OF_DOCUMENT = 256


def build_tokens(data: Path, out: Path, limit: int) -> RaggedMmap:
    """Every file's bytes and an end-of-document token, as one uint16 document each."""
    paths = [p for p in sorted(data.rglob("*")) if p.is_file()][:limit or None]
    documents = [np.append(np.frombuffer(p.read_bytes(), dtype=np.uint8), END_OF_DOCUMENT).astype(np.uint16)
                 for p in paths]
    if not documents:
        raise SystemExit(f"no files in {data}")
    return RaggedMmap.from_lists(out / "tokens", documents, dtype=np.uint16, overwrite=True)


def segments(cu_seqlens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The segment (document piece) of every token of the ``(B, L)`` batch, from the flattened cu_seqlens."""
    flat = torch.arange(shape[0] * shape[1])
    return (torch.searchsorted(cu_seqlens.long(), flat, right=True) - 1).reshape(shape)


class TinyCausalLM(nn.Module):
    def __init__(self, vocab: int = END_OF_DOCUMENT + 1, width: int = 64, heads: int = 4, context: int = 4096):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape
        x = self.embed(tokens) + self.position(positions)
        q, k, v = self.qkv(self.norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        same_document = segment[:, :, None] == segment[:, None, :]  # block-diagonal: cu_seqlens' segments
        mask = (causal & same_document)[:, None]
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, -1))
        x = x + self.mlp(x)
        return self.head(self.norm(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of text files")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256, help="tokens of context (each window is one more)")
    parser.add_argument("--limit", type=int, default=3000, help="at most this many files")
    parser.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--maps", type=Path, default=None, help="where to build the map (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.maps or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tokens = build_tokens(args.data, root, args.limit)
        windows = PackedTokens(tokens, args.seq_len + 1, stride=args.seq_len)
        print(f"built a map of {len(tokens)} documents, {windows.total_tokens} tokens in "
              f"{time.perf_counter() - t0:.2f} s: {windows}")
        if not len(windows):
            raise SystemExit(f"fewer than {args.seq_len + 1} tokens in {args.data}")
        sampler = RandomSampler(windows, replacement=True, num_samples=args.steps * args.batch_size)
        loader = DataLoader(windows, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=PackedTokens.collate,
                            multiprocessing_context=args.start_method if args.workers else None)
        model = TinyCausalLM(context=args.seq_len + 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        seen, loss_value, t0 = 0, math.nan, time.perf_counter()
        for step, batch in enumerate(loader):
            ids, positions = batch["input_ids"].long(), batch["position_ids"]  # stored uint16, widened here
            segment = segments(batch["cu_seqlens"], ids.shape)
            logits = model(ids[:, :-1], positions[:, :-1], segment[:, :-1])
            labels = ids[:, 1:].clone()
            labels[positions[:, 1:] == 0] = -100  # the first token of a document is not predicted from the last
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(ids)
            loss_value = loss.item()
            if step % 10 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  loss {loss_value:.4f}  documents in batch {len(batch['doc_ids'])}  "
                      f"max_seqlen {batch['max_seqlen']}")
        elapsed = time.perf_counter() - t0
        print(f"samples_seen={seen} final_loss={loss_value:.6f} tokens_per_s={seen * args.seq_len / elapsed:.0f}")
        tokens.close()
    return seen, loss_value


if __name__ == "__main__":
    main()
