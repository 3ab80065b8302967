"""`PackedTokens`: fixed-length windows over the concatenation of a token map's documents, with their boundaries,
checked against a naive concatenate-and-slice oracle."""

import json
import os
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from mmap_ninja import RaggedMmap  # noqa: E402
from mmap_ninja.adapters.torch import PackedBatch, PackedTokens, ResumableSampler, collate_packed  # noqa: E402

from tests.support import write_header  # noqa: E402


def oracle(documents, seq_len, stride):
    """Every window as (tokens, cu_seqlens, doc_ids), from the concatenation sliced and labelled token by token."""
    lengths = [len(d) for d in documents]
    stream = np.concatenate([np.asarray(d, dtype=np.int64) for d in documents]) if documents else np.empty(0)
    owner = np.repeat(np.arange(len(documents)), lengths)
    windows = []
    start = 0
    while start + seq_len <= len(stream):
        owners = owner[start:start + seq_len]
        changes = [0] + [j for j in range(1, seq_len) if owners[j] != owners[j - 1]]
        windows.append((stream[start:start + seq_len], [*changes, seq_len], [int(owners[j]) for j in changes]))
        start += stride
    return windows


def build(path, lengths, dtype=np.int32):
    documents = [np.arange(n, dtype=dtype) + 1000 * i for i, n in enumerate(lengths)]
    return documents, RaggedMmap.from_lists(path, documents, dtype=dtype)


def check_against_oracle(dataset, documents):
    expected = oracle(documents, dataset.seq_len, dataset.stride)
    assert len(dataset) == len(expected)
    for k, (tokens, cu_seqlens, doc_ids) in enumerate(expected):
        item = dataset[k]
        np.testing.assert_array_equal(item["input_ids"], tokens)
        assert item["cu_seqlens"].dtype == np.int32 and item["cu_seqlens"].tolist() == cu_seqlens
        assert item["doc_ids"].dtype == np.int64 and item["doc_ids"].tolist() == doc_ids


@settings(max_examples=120, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=40), st.integers(1, 50), st.one_of(st.none(), st.integers(1, 60)))
def test_every_window_equals_the_oracle(tmp_path_factory, lengths, seq_len, stride):
    documents, tokens = build(tmp_path_factory.mktemp("p") / "m", lengths)
    dataset = PackedTokens(tokens, seq_len, stride=stride)
    total = sum(lengths)
    step = stride or seq_len
    assert len(dataset) == ((total - seq_len) // step + 1 if total >= seq_len else 0)
    check_against_oracle(dataset, documents)
    if len(dataset):
        windows = [*range(len(dataset)), 0, len(dataset) - 1]
        check_batch(dataset, windows)
    tokens.close()


def check_batch(dataset, windows):
    """get_batch equals collate_packed of the single windows."""
    batch = dataset.get_batch(windows)
    expected = collate_packed([dataset[k] for k in windows])
    np.testing.assert_array_equal(batch["input_ids"], expected["input_ids"].numpy())
    assert batch["input_ids"].dtype == dataset.tokens.dtype
    assert batch["cu_seqlens"].dtype == np.int32 and batch["cu_seqlens"].tolist() == expected["cu_seqlens"].tolist()
    assert batch["doc_ids"].tolist() == expected["doc_ids"].tolist()
    assert batch["max_seqlen"] == expected["max_seqlen"]
    tensors = collate_packed(batch)
    for key in ("input_ids", "cu_seqlens", "doc_ids", "position_ids"):
        assert torch.equal(tensors[key], expected[key]), key


def check_items_of_batch(dataset, windows):
    """The batch read at once (what the DataLoader gets from __getitems__) holds the single items, in order, and
    collates to the same tensors as they do, its tokens handed over without a copy."""
    batch = dataset.__getitems__(windows)
    assert isinstance(batch, PackedBatch) and len(batch) == len(windows)
    for j, k in enumerate(windows):
        item, single = batch[j], dataset[k]
        assert item.keys() == single.keys()
        np.testing.assert_array_equal(item["input_ids"], single["input_ids"])
        assert item["input_ids"].dtype == dataset.dtype
        assert item["cu_seqlens"].dtype == np.int32 and item["cu_seqlens"].tolist() == single["cu_seqlens"].tolist()
        assert item["doc_ids"].dtype == np.int64 and item["doc_ids"].tolist() == single["doc_ids"].tolist()
    assert [i["doc_ids"].tolist() for i in batch[::-1]] == [dataset[k]["doc_ids"].tolist() for k in windows[::-1]]
    wanted = torch.from_numpy(np.empty(0, dataset.dtype)).dtype  # single items are views in the stored dtype
    tensors, expected = collate_packed(batch), collate_packed([dataset[k] for k in windows], dtype=wanted)
    assert tensors.keys() == expected.keys() and tensors["max_seqlen"] == expected["max_seqlen"]
    for key in ("input_ids", "cu_seqlens", "doc_ids", "position_ids"):
        assert tensors[key].dtype == expected[key].dtype and torch.equal(tensors[key], expected[key]), key
    assert np.shares_memory(tensors["input_ids"].numpy(), batch.arrays["input_ids"])  # no copy of the tokens


@settings(max_examples=120, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=30), st.integers(1, 40), st.one_of(st.none(), st.integers(1, 50)),
       st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=12))
def test_a_batch_read_at_once_equals_its_windows_read_one_by_one(tmp_path_factory, lengths, seq_len, stride, picks):
    _, tokens = build(tmp_path_factory.mktemp("b") / "m", lengths, dtype=np.uint16)
    dataset = PackedTokens(tokens, seq_len, stride=stride)
    if len(dataset):
        windows = [p % (2 * len(dataset)) - len(dataset) for p in picks]  # negative ones too, and repeats
        check_items_of_batch(dataset, windows)
        check_batch(dataset, windows)
        wide = PackedTokens(tokens, seq_len, stride=stride, dtype=np.int64)
        assert wide.get_batch(windows)["input_ids"].dtype == np.int64
        check_items_of_batch(wide, windows)
    tokens.close()


def test_batches_of_a_map_of_many_documents_find_the_same_boundaries(tmp_path):
    """Past 2**15 documents a batch's boundaries are searched in two steps (a sparse copy of the offsets, then
    level by level for all rows at once): every row still equals its window read alone, the last ones included."""
    lengths = np.random.default_rng(5).integers(0, 6, 150_000)  # empty documents among them
    lengths[-1] = 9  # the last windows end in a long last document
    tokens = RaggedMmap(tmp_path / "m")
    tokens.extend_flat(np.arange(int(lengths.sum())) % 65_000, lengths)
    for seq_len, stride in ((7, 3), (64, 64), (1, 1)):
        dataset = PackedTokens(tokens, seq_len, stride=stride)
        windows = [0, 1, len(dataset) - 1, len(dataset) - 2, *np.random.default_rng(seq_len).integers(0, len(dataset),
                                                                                                        300).tolist()]
        check_items_of_batch(dataset, windows)
        check_batch(dataset, windows)


def oracle_rows(lengths, starts, seq_len):
    """(cu_seqlens flattened as a batch's, doc_ids) of the windows at token ``starts``, labelled token by token from
    the document of every token of the concatenation (the naive oracle, for maps too large to slice every window)."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    cuts, ids = [0], []
    for row, start in enumerate(starts):
        owners = owner[start:start + seq_len]
        changes = [0, *np.flatnonzero(owners[1:] != owners[:-1]) + 1]
        cuts.extend(row * seq_len + j for j in changes[1:])
        cuts.append((row + 1) * seq_len)
        ids.extend(int(owners[j]) for j in changes)
    return cuts, ids


@pytest.mark.parametrize("documents", [2**15 - 1, 2**15, 3 * 2**15 + 5, 300_001])
@pytest.mark.parametrize("seq_len, stride", [(64, 64), (50, 7), (5, 9), (300, 299)])
def test_batches_past_the_coarse_search_threshold_equal_single_reads_and_the_oracle(tmp_path, documents, seq_len,
                                                                                    stride):
    """Maps of up to 2**15 offsets are searched at once; past that, the batch search starts from every 8th, 16th,
    64th offset (a sample of at most 2**13 offsets kept in memory). Windows across many documents, empty ones among
    them (and runs of them at the very end and start), stride below, equal to and above seq_len; the first and last
    windows, repeats and negative indices. Every row equals the window read alone and the naive oracle."""
    rng = np.random.default_rng(documents + seq_len)
    lengths = rng.integers(0, 8, documents)
    lengths[:3] = 0
    lengths[-5:] = [4, 0, 0, 11, 0]
    tokens = RaggedMmap(tmp_path / "m")
    tokens.extend_flat(np.arange(int(lengths.sum())) % 65_000, lengths)
    dataset = PackedTokens(tokens, seq_len, stride=stride)
    windows = [0, 1, len(dataset) - 1, -1, -2, 5, 5, *rng.integers(0, len(dataset), 200).tolist()]
    check_items_of_batch(dataset, windows)
    check_batch(dataset, windows)
    batch = dataset.get_batch(windows)
    starts = [(k % len(dataset)) * stride for k in windows]
    assert (batch["cu_seqlens"].tolist(), batch["doc_ids"].tolist()) == oracle_rows(lengths, starts, seq_len)
    everything = dataset.get_batch(np.arange(len(dataset)))
    assert (everything["cu_seqlens"].tolist(), everything["doc_ids"].tolist()) == oracle_rows(
        lengths, np.arange(len(dataset)) * stride, seq_len)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=60), st.integers(1, 30),
       st.one_of(st.none(), st.integers(1, 40)), st.sampled_from([2, 3, 5]))
def test_the_coarse_batch_search_equals_the_oracle_at_every_step(tmp_path_factory, lengths, seq_len, stride, entries):
    """The two-step batch search with its sample of the offsets made tiny (2, 3 or 5 entries instead of 2**13), so
    that maps of a few documents take it with every step size, the last documents held by the clamped last block."""
    from mmap_ninja.adapters import _tokens

    documents, tokens = build(tmp_path_factory.mktemp("c") / "m", lengths)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_tokens, "_COARSE_ENTRIES", entries)
        patch.setattr(_tokens, "_ONE_STEP_ENTRIES", 0)
        dataset = PackedTokens(tokens, seq_len, stride=stride)
        if len(dataset):
            windows = [*range(len(dataset)), len(dataset) - 1, 0]
            batch = dataset.get_batch(windows)
            if len(lengths) + 1 > entries:
                assert dataset._coarse is not None  # the two-step search ran
            expected = oracle(documents, seq_len, dataset.stride)
            cuts, ids = [0], []
            for row, k in enumerate(windows):  # the rows flattened as a batch's boundaries are
                _, cu_seqlens, doc_ids = expected[k]
                cuts.extend(row * seq_len + cut for cut in cu_seqlens[1:])
                ids.extend(doc_ids)
            assert batch["cu_seqlens"].tolist() == cuts and batch["doc_ids"].tolist() == ids
            check_batch(dataset, windows)
    tokens.close()


def test_dtype_widens_batches_only_when_asked(tmp_path):
    _, tokens = build(tmp_path / "m", [7, 0, 12, 5], dtype=np.uint16)
    stored = PackedTokens(tokens, 5, stride=3)
    assert stored.dtype == np.uint16 and stored.get_batch([0, 2])["input_ids"].dtype == np.uint16
    assert collate_packed(stored.__getitems__([0, 2]))["input_ids"].dtype == torch.uint16
    wide = PackedTokens(tokens, 5, stride=3, dtype=torch.int64)
    assert wide.dtype == np.int64
    batch = collate_packed(wide.__getitems__([0, 2]))
    assert batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["input_ids"], collate_packed(stored.__getitems__([0, 2]), dtype=torch.int64)["input_ids"])
    assert pickle.loads(pickle.dumps(wide)).get_batch([1])["input_ids"].dtype == np.int64
    assert wide[1]["input_ids"].dtype == np.uint16  # a single item stays a view of the mapping
    with pytest.raises(TypeError, match=r"tokens of dtype uint16 do not convert safely to dtype=int8"):
        PackedTokens(tokens, 5, dtype=np.int8)


def test_many_tiny_documents_in_one_window_take_the_vectorized_path(tmp_path):
    lengths = [1, 0, 0, 2, 1, 0, 3] * 20 + [50]
    documents, tokens = build(tmp_path / "m", lengths)
    dataset = PackedTokens(tokens, 64, stride=5)
    check_against_oracle(dataset, documents)
    check_batch(dataset, list(range(len(dataset))))
    documents, tokens = build(tmp_path / "n", [1, 2, 1, 3] * 50)  # more than 64 documents, none empty
    dataset = PackedTokens(tokens, 200, stride=7)
    check_against_oracle(dataset, documents)
    assert len(dataset[0]["doc_ids"]) > 64


def test_get_batch_into_out_and_bad_batches(tmp_path):
    _, tokens = build(tmp_path / "m", [5, 0, 9, 3, 30], dtype=np.uint16)
    dataset = PackedTokens(tokens, 8, stride=3)
    check_batch(dataset, [3, -1, 0, 0, 7])
    out = np.zeros((2, 8), dtype=np.int64)
    batch = dataset.get_batch([1, 2], out=out)
    assert batch["input_ids"] is out
    assert dataset.get_batch([1, 2], boundaries=False).keys() == {"input_ids"}
    np.testing.assert_array_equal(dataset.get_batch([1, 2], boundaries=False)["input_ids"], out)
    np.testing.assert_array_equal(out, np.stack([dataset[1]["input_ids"], dataset[2]["input_ids"]]))
    with pytest.raises(ValueError, match=r"out must be a writable C-contiguous array of shape \(2, 8\)"):
        dataset.get_batch([1, 2], out=np.zeros((2, 9), np.int64))
    with pytest.raises(TypeError, match="do not convert safely"):
        dataset.get_batch([1, 2], out=np.zeros((2, 8), np.int8))
    with pytest.raises(IndexError, match=f"window {len(dataset)} is out of range"):
        dataset.get_batch([0, len(dataset)])
    with pytest.raises(TypeError, match="must be integers"):
        dataset.get_batch([0.5])


def test_windows_are_read_only_views_of_the_mapping(tmp_path):
    _, tokens = build(tmp_path / "m", [10, 20, 30])
    item = PackedTokens(tokens, 16)[1]
    assert np.shares_memory(item["input_ids"], tokens.values)
    assert not item["input_ids"].flags.writeable
    assert item["cu_seqlens"].tolist() == [0, 14, 16] and item["doc_ids"].tolist() == [1, 2]


def test_inputs_and_shifted_labels(tmp_path):
    documents, tokens = build(tmp_path / "m", [7, 9, 4])
    dataset = PackedTokens(tokens, 5, stride=4)  # seq_len = L + 1, stride = L
    stream = np.concatenate(documents)
    for k in range(len(dataset)):
        ids = dataset[k]["input_ids"]
        np.testing.assert_array_equal(ids[:-1], stream[4 * k:4 * k + 4])
        np.testing.assert_array_equal(ids[1:], stream[4 * k + 1:4 * k + 5])
    assert len(dataset) == (20 - 5) // 4 + 1


def test_bad_arguments_and_out_of_range_windows_are_named(tmp_path):
    _, tokens = build(tmp_path / "m", [3, 4])
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        PackedTokens(tokens, 0)
    with pytest.raises(ValueError, match=r"seq_len must fit int32 cu_seqlens \(at most 2\*\*31 - 1\), got 2147483648"):
        PackedTokens(tokens, 2**31)
    with pytest.raises(ValueError, match="stride must be a positive integer, got -1"):
        PackedTokens(tokens, 2, stride=-1)
    dataset = PackedTokens(tokens, 3)
    assert len(dataset) == 2
    np.testing.assert_array_equal(dataset[-1]["input_ids"], dataset[1]["input_ids"])
    with pytest.raises(IndexError, match=r"window 2 is out of range: 2 windows of 3 tokens \(stride 3\) fit in 7"):
        dataset[2]
    assert len(PackedTokens(tokens, 8)) == 0
    images = RaggedMmap.from_lists(tmp_path / "img", [np.zeros((2, 2), np.uint8)])
    with pytest.raises(ValueError, match=r"1-D token sequences; .*img holds samples with \[2\] dimensions"):
        PackedTokens(images, 2)
    with pytest.raises(TypeError, match="needs a RaggedMmap of token sequences"):
        PackedTokens([np.arange(3)], 2)


def test_non_integer_parameters_and_boolean_indices_are_refused(tmp_path):
    _, tokens = build(tmp_path / "m", [3, 4])
    with pytest.raises(TypeError, match=r"seq_len must be a positive integer \(an int\), got float 2.0"):
        PackedTokens(tokens, 2.0)
    with pytest.raises(TypeError, match=r"stride must be a positive integer \(an int\), got float 1.5"):
        PackedTokens(tokens, 2, stride=1.5)
    with pytest.raises(TypeError, match=r"seq_len must be a positive integer \(an int\), got bool True"):
        PackedTokens(tokens, True)
    assert PackedTokens(tokens, np.int64(2), stride=np.uint8(1)).stride == 1  # NumPy integers are ints
    dataset = PackedTokens(tokens, 2)
    for flag in (True, np.True_):
        with pytest.raises(TypeError, match=r"not by the boolean True|not by bool"):
            dataset[flag]
    with pytest.raises(TypeError, match="not by the boolean True"):
        dataset.window_start(True)
    with pytest.raises(TypeError, match="not by the boolean False"):
        dataset.__getitems__([0, 1])[False]  # a row of a batch, likewise


def test_a_sharded_map_is_refused_with_a_way_out(tmp_path):
    from mmap_ninja import merge, open_existing

    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"part{k}", [np.arange(10, dtype=np.int32)]).close()
    sharded = merge(tmp_path / "sharded", [tmp_path / "part0", tmp_path / "part1"])
    with pytest.raises(TypeError, match=r"not a sharded map .* one PackedTokens per shard"):
        PackedTokens(open_existing(tmp_path / "sharded"), 4)
    joined = torch.utils.data.ConcatDataset([PackedTokens(sharded.shard(k), 4) for k in range(2)])
    assert len(joined) == 4 and joined[2]["input_ids"].tolist() == [0, 1, 2, 3]


def test_a_compressed_map_is_refused(tmp_path):
    pytest.importorskip("lz4")
    tokens = RaggedMmap.from_lists(tmp_path / "m", [np.arange(9, dtype=np.int32)], codec="lz4")
    with pytest.raises(TypeError, match="compressed"):
        PackedTokens(tokens, 4)


def test_appends_after_opening_are_not_seen_and_a_pickle_keeps_the_snapshot(tmp_path):
    documents, tokens = build(tmp_path / "m", [5, 6])
    dataset = PackedTokens(tokens, 4)
    tokens.append(np.arange(100, dtype=np.int32))
    assert len(dataset) == 2
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000
    assert len(copy) == 2 and copy.documents == 2
    check_against_oracle(copy, documents)
    assert len(PackedTokens(RaggedMmap(tmp_path / "m"), 4)) == 27


def test_collate_flattens_cu_seqlens_without_repeated_boundaries(tmp_path):
    _, tokens = build(tmp_path / "m", [3, 10, 2, 9], dtype=np.uint16)
    dataset = PackedTokens(tokens, 6)  # windows: [0..6) [6..12) [12..18) [18..24)
    items = [dataset[k] for k in range(4)]
    batch = collate_packed(items)  # input_ids in the stored dtype unless another is asked for
    assert batch["input_ids"].shape == (4, 6) and batch["input_ids"].dtype == torch.uint16
    assert collate_packed(items, dtype=torch.int64)["input_ids"].dtype == torch.int64
    np.testing.assert_array_equal(batch["input_ids"].numpy(), np.stack([i["input_ids"] for i in items]))
    expected = [0]
    for row, item in enumerate(items):
        expected += [c + 6 * row for c in item["cu_seqlens"][1:].tolist()]
    assert batch["cu_seqlens"].dtype == torch.int32 and batch["cu_seqlens"].tolist() == expected
    assert len(set(expected)) == len(expected) and expected[-1] == 24
    assert batch["max_seqlen"] == max(np.diff(expected)) and isinstance(batch["max_seqlen"], int)
    assert batch["doc_ids"].tolist() == [d for i in items for d in i["doc_ids"].tolist()]
    positions = batch["position_ids"].reshape(-1).tolist()
    for a, b in zip(expected, expected[1:]):
        assert positions[a:b] == list(range(b - a))
    assert PackedTokens.collate(items)["cu_seqlens"].tolist() == expected
    with pytest.raises(ValueError, match="empty batch"):
        collate_packed([])


def test_dataloader_workers_read_windows(tmp_path):
    documents, tokens = build(tmp_path / "m", [30, 1, 0, 45, 12, 70])
    dataset = PackedTokens(tokens, 16, stride=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=PackedTokens.collate)
    batches = list(loader)
    rows = torch.cat([batch["input_ids"] for batch in batches]).numpy()
    np.testing.assert_array_equal(rows, np.stack([w[0] for w in oracle(documents, 16, 8)]))
    for k, batch in enumerate(batches):  # the batches sent by the workers hold the right values
        expected = collate_packed([dataset[i] for i in range(3 * k, min(3 * k + 3, len(dataset)))])
        for key in ("input_ids", "cu_seqlens", "doc_ids", "position_ids"):
            assert torch.equal(batch[key], expected[key]), key
    narrow = collate_packed([dataset[0], dataset[1]], dtype=torch.int32)
    assert narrow["input_ids"].dtype == torch.int32 and narrow["cu_seqlens"].dtype == torch.int32
    assert torch.equal(narrow["input_ids"].long(), collate_packed([dataset[0], dataset[1]])["input_ids"])
    assert narrow["position_ids"].dtype == torch.int64 and narrow["doc_ids"].dtype == torch.int64


def test_collated_batch_crosses_processes_small_and_rebuilds_position_ids(tmp_path):
    """A collated batch pickles (as a DataLoader worker sends it) to its tokens and boundaries by value: no int64
    position ids and no shared-memory segments; they are rebuilt from cu_seqlens on arrival, equal to the original."""
    from multiprocessing.reduction import ForkingPickler

    _, tokens = build(tmp_path / "m", [300, 1, 0, 450, 120, 700], dtype=np.uint16)
    dataset = PackedTokens(tokens, 257, stride=256)
    batch = collate_packed(dataset.__getitems__([4, 0, 2, 1]))
    sent = bytes(ForkingPickler.dumps(batch))
    assert len(sent) < batch["input_ids"].numel() * 2 + 1024  # the uint16 tokens, not 8 bytes per position
    received = pickle.loads(sent)
    assert isinstance(received, dict) and list(received) == list(batch)
    for key in ("input_ids", "cu_seqlens", "doc_ids", "position_ids"):
        assert received[key].dtype == batch[key].dtype and torch.equal(received[key], batch[key]), key
    assert received["max_seqlen"] == batch["max_seqlen"]
    tensors = [value for value in (*batch.values(), *received.values()) if isinstance(value, torch.Tensor)]
    assert not any(tensor.is_shared() for tensor in tensors)  # no shared-memory segment (one fd passing each)
    # Keys a wrapping collate_fn adds or replaces travel as they are.
    batch["labels"] = batch["input_ids"].long()
    batch["position_ids"] = torch.zeros(4, 257, dtype=torch.int64)
    received = pickle.loads(ForkingPickler.dumps(batch))
    assert torch.equal(received["labels"], batch["labels"]) and not received["position_ids"].any()


def test_collate_without_position_ids(tmp_path):
    _, tokens = build(tmp_path / "m", [3, 10, 2, 9], dtype=np.uint16)
    dataset = PackedTokens(tokens, 6)
    batch = collate_packed(dataset.__getitems__([0, 1, 2]), position_ids=False)
    assert "position_ids" not in batch
    full = collate_packed(dataset.__getitems__([0, 1, 2]))
    for key in ("input_ids", "cu_seqlens", "doc_ids", "max_seqlen"):
        assert torch.equal(torch.as_tensor(batch[key]), torch.as_tensor(full[key])), key
    assert "position_ids" not in pickle.loads(pickle.dumps(batch))


SPARSE = pytest.mark.skipif(sys.platform == "win32", reason="sparse files of gigabytes made with truncate and pwrite")


@SPARSE
def test_windows_past_two_to_the_31_tokens(tmp_path):
    """A map of 2**31 + 10_000 int8 tokens (a sparse data file: a few marked bytes, the rest holes) in 4 documents."""
    path = tmp_path / "big"
    RaggedMmap.from_lists(path, [np.zeros(1, np.int8)] * 4, dtype=np.int8).close()
    total = 2**31 + 10_000
    bounds = [0, 1000, 2**31 + 10, 2**31 + 10, total]  # document 2 is empty
    header = json.loads((path / "header.json").read_text())
    columns = header["columns"]
    columns["data"]["length"], columns["dims"]["length"] = total, 4
    np.asarray(bounds, dtype="<i8").tofile(path / "offsets.bin")
    np.arange(5, dtype="<i8").tofile(path / "shape_offsets.bin")
    np.diff(bounds).astype("<i8").tofile(path / "dims.bin")
    marks = {999: 1, 1000: 2, 2**31 - 1: 3, 2**31 + 9: 4, 2**31 + 10: 5, total - 1: 6}
    with open(path / "data.bin", "r+b") as f:
        f.truncate(total)
        for position, value in marks.items():
            os.pwrite(f.fileno(), bytes([value]), position)
    write_header(path, header)
    tokens = RaggedMmap(path, mode="r")
    assert tokens.window(1, 2**31 - 1001, 2).tolist() == [3, 0]
    assert tokens.window(3, 9989, 1).tolist() == [6]
    seq_len = 4096
    dataset = PackedTokens(tokens, seq_len, stride=seq_len - 1)
    assert len(dataset) == (total - seq_len) // (seq_len - 1) + 1 > 2**19
    k = (2**31 + 9) // (seq_len - 1)  # the window holding the boundary past 2**31
    start = k * (seq_len - 1)
    item = dataset[k]
    assert item["cu_seqlens"].tolist() == [0, 2**31 + 10 - start, seq_len] and item["doc_ids"].tolist() == [1, 3]
    assert item["input_ids"][2**31 + 9 - start] == 4 and item["input_ids"][2**31 + 10 - start] == 5
    last = dataset[-1]
    assert last["doc_ids"].tolist() == [3] and last["cu_seqlens"].tolist() == [0, seq_len]
    first = dataset[0]
    assert first["cu_seqlens"].tolist() == [0, 1000, seq_len] and first["doc_ids"].tolist() == [0, 1]
    assert first["input_ids"][999] == 1 and first["input_ids"][1000] == 2
    assert dataset[(2**31 - 5000) // (seq_len - 1)]["doc_ids"].tolist() == [1]
    check_batch(dataset, [k, 0, -1, k - 1])


@SPARSE
def test_batches_past_two_to_the_31_tokens_in_a_map_of_many_documents(tmp_path):
    """2**15 + 100 documents (past the two-step search threshold) holding 2**31 + 2**24 int8 tokens (a sparse data
    file): batches of windows around token 2**31 and at the end equal the windows read alone and the oracle."""
    documents = 2**15 + 100
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 600, documents)
    lengths[4000:4010] = 0  # empty documents next to the long one
    lengths[4010] = 2**31 - int(lengths[:4010].sum()) - 1000  # ends 1000 tokens before 2**31
    lengths[-1] = 2**31 + 2**24 - int(lengths[:-1].sum())
    assert lengths.min() >= 0 and lengths.sum() == 2**31 + 2**24
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    path = tmp_path / "big"
    RaggedMmap.from_lists(path, [np.zeros(1, np.int8)] * documents, dtype=np.int8).close()
    header = json.loads((path / "header.json").read_text())
    header["columns"]["data"]["length"] = int(bounds[-1])
    bounds.astype("<i8").tofile(path / "offsets.bin")
    lengths.astype("<i8").tofile(path / "dims.bin")
    with open(path / "data.bin", "r+b") as f:
        f.truncate(int(bounds[-1]))
    write_header(path, header)
    tokens = RaggedMmap(path, mode="r")
    seq_len, stride = 4096, 4095
    dataset = PackedTokens(tokens, seq_len, stride=stride)
    near = (2**31 - 1000) // stride
    windows = [near - 1, near, near + 1, 2**31 // stride, -1, 0, *rng.integers(0, len(dataset), 50).tolist()]
    starts = [(k % len(dataset)) * stride for k in windows]
    batch = dataset.get_batch(windows)
    cuts, ids = [0], []
    for row, start in enumerate(starts):  # the oracle from the offsets: every document overlapping the window
        inside = np.flatnonzero((lengths > 0) & (bounds[:-1] < start + seq_len) & (bounds[1:] > start)).tolist()
        cuts.extend(row * seq_len + int(bounds[d]) - start for d in inside[1:])
        cuts.append((row + 1) * seq_len)
        ids.extend(inside)
    assert batch["cu_seqlens"].tolist() == cuts and batch["doc_ids"].tolist() == ids
    assert batch["doc_ids"][0] == 4010 and batch["doc_ids"].max() > 4010  # documents on both sides of 2**31
    check_items_of_batch(dataset, windows)


@pytest.mark.parametrize("workers", [0, 2])
def test_windows_resume_exactly_through_stateful_dataloader(tmp_path, workers):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    _, tokens = build(tmp_path / "m", [int(n) for n in np.random.default_rng(5).integers(0, 60, 80)])
    dataset = PackedTokens(tokens, 17, stride=16)

    def loader():
        return stateful.StatefulDataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=PackedTokens.collate,
                                           sampler=ResumableSampler(dataset, seed=3))

    full = [batch["doc_ids"].tolist() + batch["input_ids"].reshape(-1).tolist() for batch in loader()]
    for saved_after in (0, 3, len(full) - 1):
        first, seen = loader(), []
        iterator = iter(first)
        for _ in range(saved_after):
            batch = next(iterator)
            seen.append(batch["doc_ids"].tolist() + batch["input_ids"].reshape(-1).tolist())
        state = first.state_dict()
        del iterator
        second = loader()
        second.load_state_dict(state)
        rest = [batch["doc_ids"].tolist() + batch["input_ids"].reshape(-1).tolist() for batch in second]
        assert seen + rest == full


def test_blending_corpora_blends_windows(tmp_path):
    from mmap_ninja import blend

    _, a = build(tmp_path / "a", [40, 7, 30])
    _, b = build(tmp_path / "b", [100, 3])
    sources = [PackedTokens(a, 8), PackedTokens(b, 8)]
    mixed = blend(sources, [0.25, 0.75], seed=1, length=40)
    assert len(mixed) == 40
    counts = [0, 0]
    for i in range(len(mixed)):
        k, local = mixed.source_of(i)
        counts[k] += 1
        item, expected = mixed[i], sources[k][local]
        for key in ("input_ids", "cu_seqlens", "doc_ids"):
            np.testing.assert_array_equal(item[key], expected[key])
    assert abs(counts[0] - 10) <= 2
    loader = torch.utils.data.DataLoader(mixed, batch_size=8, num_workers=2, collate_fn=PackedTokens.collate)
    assert sum(batch["input_ids"].shape[0] for batch in loader) == 40


@SPARSE
def test_opening_reads_no_index_at_1e11_tokens_and_1e9_documents(tmp_path):
    """Sparse files: 10**9 documents (all empty but the last: 8 GB of offsets that are holes) holding 10**11 int8
    tokens. Building any per-document or per-window index would need gigabytes; opening and reading windows touch a
    few pages."""
    path = tmp_path / "huge"
    RaggedMmap.from_lists(path, [np.zeros(1, np.int8)], dtype=np.int8).close()
    documents, total = 10**9, 10**11
    header = json.loads((path / "header.json").read_text())
    columns = header["columns"]
    columns["data"]["length"], columns["dims"]["length"] = total, documents
    columns["offsets"]["length"] = columns["shape_offsets"]["length"] = documents + 1
    for name, size in (("data", total), ("offsets", 8 * (documents + 1)), ("shape_offsets", 8 * (documents + 1)),
                       ("dims", 8 * documents)):
        with open(path / f"{name}.bin", "r+b") as f:
            f.truncate(0)
            f.truncate(size)
    with open(path / "offsets.bin", "r+b") as f:
        os.pwrite(f.fileno(), np.int64(total).tobytes(), 8 * documents)
    last_end = (total - 4096) // 4095 * 4095 + 4096  # the end of the last window of 4096 tokens, stride 4095
    with open(path / "data.bin", "r+b") as f:
        os.pwrite(f.fileno(), bytes([7]), last_end - 1)
    write_header(path, header)
    tokens = RaggedMmap(path, mode="r")
    dataset = PackedTokens(tokens, 4096, stride=4095)
    assert len(dataset) == (total - 4096) // 4095 + 1
    last = dataset[-1]
    assert last["doc_ids"].tolist() == [documents - 1] and last["cu_seqlens"].tolist() == [0, 4096]
    assert last["input_ids"][-1] == 7 and dataset.total_tokens == total
    assert pickle.loads(pickle.dumps(dataset))[len(dataset) // 2]["doc_ids"].tolist() == [documents - 1]
    batch = dataset.get_batch([-1, 0, len(dataset) // 2])  # the batch search: a sparse sample of the offsets
    assert batch["doc_ids"].tolist() == [documents - 1] * 3 and batch["cu_seqlens"].tolist() == [0, 4096, 8192, 12288]
