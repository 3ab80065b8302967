"""``python -m benchmarks``: the seed's two tables on real data, micro-benchmarks and targets, ours beside
mmap_ninja 0.9.0. Every measurement runs in a fresh process (see `_worker`); results go to ``--out``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import _env, peers
from benchmarks._env import Runner, log
from benchmarks._tables import fmt, markdown_table, why

MB = 1e6


@dataclass
class Sizes:
    text_limit: int | None  # documents of the corpus (None: all)
    text_iters: int  # passes over the corpus in the text table
    image_limit: int | None
    image_warm_passes: int
    tokens: int  # 1-D int32 sequences for random access
    random_reads: int
    batches: int  # 256-item batches
    grow_total: int  # the map grown batch by batch (and opened) at this size
    grow_batch: int
    upstream_grow_budget_s: float
    build_image_limit: int | None
    build_tokens: int
    build_repeats: int
    peers: peers.PeerSizes  # the rows against pyarrow, a raw writer and the floor


FULL = Sizes(text_limit=None, text_iters=100, image_limit=None, image_warm_passes=2, tokens=1_000_000,
             random_reads=200_000, batches=200, grow_total=10_000_000, grow_batch=100_000,
             upstream_grow_budget_s=60.0, build_image_limit=600, build_tokens=1_000_000, build_repeats=3,
             peers=peers.FULL_PEERS)
QUICK = Sizes(text_limit=40, text_iters=2, image_limit=8, image_warm_passes=1, tokens=3_000, random_reads=2_000,
              batches=5, grow_total=30_000, grow_batch=5_000, upstream_grow_budget_s=5.0, build_image_limit=8,
              build_tokens=3_000, build_repeats=1, peers=peers.QUICK_PEERS)
SECTIONS = ["text", "images", "micro", *peers.SECTIONS]

TEXT_COLUMNS = ["Initial load (s)", "Time for {iters} iterations (s)", "Memory: RSS growth (MB)",
                "Memory: anon growth (MB)", "Disk usage (MB)"]
TEXT_ROWS = ["in_memory", "read_from_disk", "mmap_ninja", "mmap_ninja zstd", "mmap_ninja 0.9.0",
             "pyarrow large_string (mmap)"]
IMAGE_COLUMNS = ["Initial load (s)", "Cold pass (s)", "Warm pass (s)", "Warm pass (GB/s)",
                 "Memory: RSS growth (MB)", "Memory: anon growth (MB)", "Disk usage (MB)"]
IMAGE_ROWS = ["in_memory", "ragged_mmap", "ImagesMmap", "ImagesMmap baseline_jpeg", "ragged_mmap 0.9.0",
              "imread_from_disk"]


# ---------------------------------------------------------------------------------------------- sections


class Bench:
    def __init__(self, args, sizes: Sizes, runner: Runner, data: Path, work: Path, out: Path):
        self.args, self.sizes, self.run, self.data, self.work, self.out = args, sizes, runner, data, work, out
        self.results = {}
        self.notes = []
        self.peers = peers.PeerSections(runner, sizes.peers, self, work)

    def map_path(self, kind: str) -> Path:
        """Our map of ``kind`` (strings, images or tokens), built as the tables build it unless it exists."""
        s = self.sizes
        path = self.work / {"strings": "text_ours", "images": "images_ours", "tokens": "tokens_ours"}[kind]
        if (path / "header.json").exists():
            return path
        log(f"building the {kind} map")
        if kind == "strings":
            spec = {"kind": "strings", "source": {"type": "text_dir", "path": str(self.data / "text")},
                    "limit": s.text_limit, "batch_size": 10_000}
        elif kind == "images":
            spec = {"kind": "ragged", "source": {"type": "image_dir", "path": str(self.data / "images")},
                    "limit": s.image_limit, "batch_size": 256}
        else:
            spec = {"kind": "ragged", "source": {"type": "tokens", "n": s.tokens, "seed": 0}, "batch_size": 100_000}
        built = self.run({"task": "build", "impl": "ours", "path": str(path), **spec})
        if why(built):
            raise SystemExit(f"could not build the {kind} map: {built}")
        self.results.setdefault("builds", {})[kind] = built
        return path

    # ---- text table (a)

    def text_table(self) -> str:
        s, text_dir = self.sizes, str(self.data / "text")
        up_map, arrow_file = self.work / "text_upstream", self.work / "text.arrow"
        ours_map = self.map_path("strings")
        build = {"ours": self.results.get("builds", {}).get("strings", {})}
        build["upstream"] = self.run({"task": "build", "impl": "upstream", "kind": "strings", "path": str(up_map),
                                      "source": {"type": "our_map", "path": str(ours_map)}, "batch_size": 10_000},
                                     upstream=True)
        build["arrow"] = self.run({"task": "build_arrow", "source": str(ours_map), "path": str(arrow_file),
                                   "rows_per_batch": 1024})
        zstd_map = self.work / "text_zstd"
        build["zstd"] = self.run({"task": "build", "impl": "ours", "kind": "strings", "path": str(zstd_map),
                                  "source": {"type": "our_map", "path": str(ours_map)}, "batch_size": 10_000,
                                  "codec": "zstd"})
        source_disk = _env.disk_usage_files(sorted(Path(text_dir).glob("*.txt"))[:s.text_limit])
        rows, raw = [], {}
        specs = [("in_memory", {"impl": "in_memory"}, False, source_disk),
                 ("read_from_disk", {"impl": "read_from_disk"}, False, source_disk),
                 ("mmap_ninja", {"impl": "ours", "path": str(ours_map)}, False, build["ours"].get("disk_bytes")),
                 ("mmap_ninja zstd", {"impl": "ours", "path": str(zstd_map)}, False, build["zstd"].get("disk_bytes")),
                 ("mmap_ninja 0.9.0", {"impl": "upstream", "path": str(up_map)}, True,
                  build["upstream"].get("disk_bytes")),
                 ("pyarrow large_string (mmap)", {"impl": "arrow", "path": str(arrow_file)}, False,
                  build["arrow"].get("disk_bytes"))]
        for name, spec, upstream, disk in specs:
            log(f"text table: {name}")
            r = self.run({"task": "text_row", "text_dir": text_dir, "limit": s.text_limit, "iters": s.text_iters,
                          **spec}, upstream=upstream)
            raw[name] = r
            if why(r):
                rows.append((name, [why(r)] * 4 + [None]))
                continue
            rows.append((name, [r["load_s"], r["iter_s"], r["total"]["rss_mb"], r["total"]["anon_mb"],
                                None if disk is None else disk / MB]))
        chars = {name: r.get("chars") for name, r in raw.items() if not why(r)}
        self.results["text"] = {"rows": raw, "build": build, "chars_per_pass": chars}
        columns = [c.format(iters=s.text_iters) for c in TEXT_COLUMNS]
        n = next((r["n"] for r in raw.values() if "n" in r), None)
        agree = len(set(chars.values())) <= 1
        same = (f"all rows read the same {next(iter(chars.values()), 0)} characters per pass" if agree
                else f"ROWS DISAGREE: {chars}")
        table = markdown_table(columns, rows)
        note = (f"{n} documents from `{text_dir}`; every pass sums `len()` of every document ({same}). "
                f"Load: `in_memory` reads every .txt, `read_from_disk` lists the directory, the maps open; pyarrow "
                f"opens the IPC file with `pa.memory_map` and iterates record batches of 1024 rows with "
                f"`to_pylist()`. Memory is the growth of RSS (page cache mapped in included) and of anonymous "
                f"memory (heap only) from before load to after the last pass, each row in a fresh process. "
                f"Disk is allocated bytes (like `du`). Hugging Face `datasets` was not installed: it pulls "
                f"pandas, fsspec, huggingface-hub and others, and stores Arrow files read the same way as the "
                f"pyarrow row. Build times (s): ours {fmt(build['ours'].get('build_s'))}, 0.9.0 "
                f"{fmt(build['upstream'].get('build_s'))} (from strings in RAM), arrow "
                f"{fmt(build['arrow'].get('build_s'))}, zstd {fmt(build['zstd'].get('build_s'))} (`codec=\"zstd\"`: "
                f"level 3 with a dictionary trained on the first batches; every read decompresses one document).")
        return table + "\n\n" + note

    # ---- image table (b)

    def image_table(self) -> str:
        s, image_dir = self.sizes, str(self.data / "images")
        up_map = self.work / "images_upstream"
        ours_map = self.map_path("images")
        build = {"ours": self.results.get("builds", {}).get("images", {})}
        build["upstream"] = self.run({"task": "build", "impl": "upstream", "kind": "ragged", "path": str(up_map),
                                      "source": {"type": "our_map", "path": str(ours_map)}, "batch_size": 256},
                                     upstream=True)
        images_map = self.work / "images_encoded"
        build["images"] = self.run({"task": "build", "impl": "ours", "kind": "images", "path": str(images_map),
                                    "source": {"type": "image_files", "path": image_dir}, "limit": s.image_limit,
                                    "batch_size": 256})
        baseline_map = self.work / "images_baseline"
        build["baseline"] = self.run({"task": "build", "impl": "ours", "kind": "images", "path": str(baseline_map),
                                      "source": {"type": "image_files", "path": image_dir}, "limit": s.image_limit,
                                      "batch_size": 256, "options": {"baseline_jpeg": True}})
        max_bytes = self.max_sample_bytes(ours_map)
        source_disk = _env.disk_usage_files(_env.image_paths(Path(image_dir))[:s.image_limit])
        specs = [("in_memory", {"impl": "in_memory"}, False, source_disk),
                 ("ragged_mmap", {"impl": "ours", "path": str(ours_map)}, False, build["ours"].get("disk_bytes")),
                 ("ImagesMmap", {"impl": "ours", "path": str(images_map), "map_kind": "images"}, False,
                  build["images"].get("disk_bytes")),
                 ("ImagesMmap baseline_jpeg", {"impl": "ours", "path": str(baseline_map), "map_kind": "images"},
                  False, build["baseline"].get("disk_bytes")),
                 ("ragged_mmap 0.9.0", {"impl": "upstream", "path": str(up_map)}, True,
                  build["upstream"].get("disk_bytes")),
                 ("imread_from_disk", {"impl": "imread_from_disk"}, False, source_disk)]
        rows, raw = [], {}
        for name, spec, upstream, disk in specs:
            log(f"image table: {name}")
            r = self.run({"task": "image_row", "image_dir": image_dir, "limit": s.image_limit,
                          "max_sample_bytes": max_bytes,
                          "warm_passes": 1 if spec["impl"] == "imread_from_disk" else s.image_warm_passes,
                          **spec}, upstream=upstream)
            raw[name] = r
            if why(r):
                rows.append((name, [why(r)] * 6 + [None]))
                continue
            rows.append((name, [r["load_s"], r["cold_s"], r["warm_s"], r["bytes"] / r["warm_s"] / 1e9,
                                r["total"]["rss_mb"], r["total"]["anon_mb"], None if disk is None else disk / MB]))
        memcpy = self.run({"task": "memcpy", "nbytes": max(1, max((r.get("bytes", 0) for r in raw.values()),
                                                                   default=1))})
        self.results["images"] = {"rows": raw, "build": build, "memcpy": memcpy}
        n = next((r["n"] for r in raw.values() if "n" in r), None)
        nbytes = next((r["bytes"] for r in raw.values() if "bytes" in r), 0)
        table = markdown_table(IMAGE_COLUMNS, rows)
        note = (f"{n} pictures (JPEG and PNG, as scripts/get_data.py ships them) from `{image_dir}`, decoded "
                f"with Pillow to uint8 HxWx3 ({nbytes / MB:,.0f} MB decoded). "
                f"A pass copies every sample into one preallocated buffer, so every pixel is read (the seed's "
                f"own benchmark only created views and never read pixels, which is why its ragged_mmap "
                f"iteration took 0.06 s). Cold: the files of the row (map files or JPEGs) were fsynced and "
                f"dropped from the page cache with `posix_fadvise(POSIX_FADV_DONTNEED)` first (in_memory has "
                f"nothing to drop); warm: best of the passes after it. For reference, one `np.copyto` of "
                f"{memcpy.get('bytes', 0) / MB:,.0f} MB in RAM runs at {fmt(memcpy.get('gb_s'))} GB/s. "
                f"Memory: growth from before load to after the passes, fresh process per row; a map's RSS "
                f"includes the page-cache pages it mapped, its anonymous memory does not. Build (s): ours "
                f"{fmt(build['ours'].get('build_s'))} (decoding the pictures), 0.9.0 "
                f"{fmt(build['upstream'].get('build_s'))} (from the decoded arrays in RAM), ImagesMmap "
                f"{fmt(build['images'].get('build_s'))} (copying the files' bytes), ImagesMmap baseline_jpeg "
                f"{fmt(build['baseline'].get('build_s'))} (progressive JPEGs rewritten losslessly as baseline ones, "
                f"each checked to decode to the same pixels). `ImagesMmap` keeps the encoded "
                f"files and decodes on read (`channels=3`: uint8 RGB like imread; simplejpeg for JPEG and pyspng "
                f"for PNG when installed, else Pillow), so its passes decode every image, one thread.")
        return table + "\n\n" + note

    def max_sample_bytes(self, ours_map: Path) -> int:
        import numpy as np

        header = json.loads((ours_map / "header.json").read_text())
        offsets = np.fromfile(ours_map / "offsets.bin", dtype="<i8", count=header["columns"]["offsets"]["length"])
        return int(np.diff(offsets).max())

    # ---- micro-benchmarks (c)

    def micro(self) -> str:
        s = self.sizes
        parts = []
        # token sequences: 1-D int32, built once by us, copied into 0.9.0's format
        tok_up = self.work / "tokens_upstream"
        tok_ours = self.map_path("tokens")
        tb = {"ours": self.results.get("builds", {}).get("tokens", {})}
        tb["upstream"] = self.run({"task": "build", "impl": "upstream", "kind": "ragged", "path": str(tok_up),
                                   "source": {"type": "our_map", "path": str(tok_ours)}, "batch_size": 100_000},
                                  upstream=True)
        self.results["tokens_build"] = tb

        maps = {"strings": (self.work / "text_ours", self.work / "text_upstream"),
                "tokens": (tok_ours, tok_up),
                "images": (self.work / "images_ours", self.work / "images_upstream")}
        random = {}
        for kind, (ours, up) in maps.items():
            k = "strings" if kind == "strings" else "ragged"
            common = {"task": "random", "kind": k, "reads": s.random_reads, "seed": 7, "repeats": 5,
                      "batches": s.batches if kind == "tokens" else 0, "our_map": str(ours)}
            log(f"random access: {kind}")
            random[kind] = {"ours": self.run({**common, "impl": "ours", "path": str(ours)}),
                            "upstream": self.run({**common, "impl": "upstream", "path": str(up)}, upstream=True),
                            "in_memory": self.run({**common, "impl": "in_memory", "path": str(ours)})}
            if kind == "strings":
                random[kind]["bytes_decode"] = {"us_per_item": random[kind]["ours"].get("decode_us_per_item")}
                random[kind]["arrow"] = self.run({**common, "impl": "arrow", "path": str(self.work / "text.arrow")})
        self.results["random"] = random
        rows = []
        labels = [("in_memory", "in RAM (list)"), ("bytes_decode", "bytes.decode of in-RAM bytes (*)"),
                  ("ours", "mmap_ninja"), ("upstream", "mmap_ninja 0.9.0"), ("arrow", "pyarrow `arr[i].as_py()`")]
        for key, label in labels:
            cells = []
            for kind in maps:
                r = random[kind].get(key)
                cells.append(None if r is None else (why(r) or r["us_per_item"]))
            rows.append((label, cells))
        rows.append(("speed-up of ours over 0.9.0", [ratio(random[k]["upstream"], random[k]["ours"], "us_per_item")
                                                     for k in maps]))
        n = {k: random[k]["ours"].get("n") for k in maps}
        parts.append("### Random access, one item at a time (µs/item, best of 5 runs of "
                     f"{s.random_reads:,} random indices)\n\n"
                     + markdown_table([f"strings (n={n['strings']:,})", f"int32 token sequences (n={n['tokens']:,})",
                                       f"images (n={n['images']:,})"], rows)
                     + "\n\n(*) measured in the mmap_ninja process, its runs interleaved with the map's, so that "
                       "the string target's ratio is not skewed by load from other work between processes. "
                       "Strings return a `str`; token sequences and images return a view (no pixel is read). "
                       "Token sequences: lengths uniform in 1..64, ids < 50,000, generated with a fixed seed.")

        t_ours, t_up = random["tokens"]["ours"], random["tokens"]["upstream"]
        rows = [("mmap_ninja", [t_ours.get("batch_list_us"), t_ours.get("batch_padded_us"),
                                t_ours.get("batch_get_batch_us")]),
                ("mmap_ninja 0.9.0", [t_up.get("batch_list_us", why(t_up)), t_up.get("batch_padded_us", why(t_up)),
                                      "no such API" if not why(t_up) else why(t_up)]),
                ("speed-up", [ratio(t_up, t_ours, "batch_list_us"), ratio(t_up, t_ours, "batch_padded_us"),
                              None])]
        parts.append(f"### One read of 256 random token sequences (µs per batch, mean of {s.batches} batches, "
                     f"after one untimed run of the same batches)\n\n"
                     + markdown_table(["as a list `m[idx]`", "padded into one int32 array (same Python loop)",
                                       "padded with `m.get_batch(idx, pad_value=0)`"], rows)
                     + "\n\nThe targets use the first two columns (the same benchmark code on both sides).")

        parts.append(self.growth())
        parts.append(self.build_throughput())
        parts.append(self.pickles())
        return "\n\n".join(parts)

    def growth(self) -> str:
        s = self.sizes
        ours, up = self.work / "grow_ours", self.work / "grow_upstream"
        common = {"task": "grow", "batch": s.grow_batch, "n_total": s.grow_total, "min_len": 1, "max_len": 8}
        log(f"growing maps to {s.grow_total:,} items")
        g = {"ours": self.run({**common, "impl": "ours", "path": str(ours), "budget_s": 1e9}),
             "upstream": self.run({**common, "impl": "upstream", "path": str(up),
                                   "budget_s": s.upstream_grow_budget_s}, upstream=True)}
        opened = {"ours": self.run({"task": "open", "impl": "ours", "kind": "ragged", "path": str(ours)}),
                  "upstream": self.run({"task": "open", "impl": "upstream", "kind": "ragged", "path": str(up)},
                                       upstream=True)}
        self.results["growth"] = g
        self.results["open"] = opened
        self.plot_growth(g)
        rows = []
        for key, label in (("ours", "mmap_ninja"), ("upstream", "mmap_ninja 0.9.0")):
            r, o = g[key], opened[key]
            if why(r):
                rows.append((label, [why(r)] * 7))
                continue
            first, last = first_last(r["times"])
            rows.append((label, [r["n"], 1e3 * first, 1e3 * last, last / first if first else None, slope(r),
                                 None if why(o) else 1e3 * o["open_s"], None if why(o) else o["rss_mb"]]))
        up = g["upstream"]
        cap = (f"0.9.0 was stopped after {s.upstream_grow_budget_s:g} s of extends, at {up.get('n', 0):,} items, "
               f"because every extend re-opens its index files and allocates an `np.arange(n)`, so its cost "
               f"grows with n; its open time and RSS are measured at that size."
               if up.get("capped") else "0.9.0 reached the full size.")
        return (f"### Growing a map of 1-D int32 sequences (lengths 1..8) to {s.grow_total:,} items in extends of "
                f"{s.grow_batch:,}, then opening it\n\n"
                + markdown_table(["items", "first extends (ms, median of 10)", "last extends (ms, median of 10)",
                                  "last / first", "least-squares slope (ms per extend, per 1M items)",
                                  "open (ms)", "open: RSS growth (MB)"], rows)
                + f"\n\n{cap} Open is timed in a fresh process with the modules already imported. Plot: "
                  f"`extend_growth.png`.")

    def build_throughput(self) -> str:
        s = self.sizes
        rows, raw = [], {}
        specs = [("images (decoded, in RAM)", {"kind": "images", "source": str(self.work / "images_ours"),
                                               "limit": s.build_image_limit}),
                 ("strings (text corpus)", {"kind": "strings", "source": str(self.work / "text_ours")}),
                 ("int32 token sequences (default batch_size)", {"kind": "tokens", "n": s.build_tokens}),
                 (f"int32 token sequences (batch_size={s.build_tokens // 10:,})",
                  {"kind": "tokens", "n": s.build_tokens, "batch_size": s.build_tokens // 10})]
        for name, spec in specs:
            log(f"build throughput: {name}")
            work = _env.fresh_dir(self.work / "build_tp")
            r = self.run({"task": "build_throughput", "workdir": str(work), "repeats": s.build_repeats, **spec})
            raw[name] = r
            if why(r):
                rows.append((name, [why(r)] * 6))
                continue
            rows.append((name, [r["n"], r["bytes"] / MB, r["one_buffer_mb_s"], r["plain_mb_s"], r["build_mb_s"],
                                r["build_mb_s"] / r["plain_mb_s"]]))
        self.results["build_throughput"] = raw
        return ("### Build throughput: `from_lists` / `from_strings` from samples in RAM vs. plain sequential "
                f"writes of the same bytes (MB/s, best of {s.build_repeats})\n\n"
                + markdown_table(["samples", "MB", "one write of all bytes", "plain: one `f.write` per sample",
                                  "mmap_ninja build", "build / plain"], rows)
                + "\n\nThe plain baseline writes each sample's bytes (UTF-8-encoding each string) with a buffered "
                  "`f.write` to one file; neither side fsyncs. The target compares against it. The builds use "
                  "the library's default `batch_size` (16,384 samples per commit for ragged maps, 10,000 "
                  "for strings) unless the row says otherwise; every commit publishes a new header (write and "
                  "atomic rename) and remaps the columns.")

    def pickles(self) -> str:
        rows, raw = [], {}
        for kind, ours, up in (("strings", "text_ours", "text_upstream"), ("ragged", "images_ours",
                                                                          "images_upstream")):
            o = self.run({"task": "pickle", "impl": "ours", "kind": kind, "path": str(self.work / ours)})
            u = self.run({"task": "pickle", "impl": "upstream", "kind": kind, "path": str(self.work / up)},
                         upstream=True)
            raw[kind] = {"ours": o, "upstream": u}
            rows.append((kind, [o.get("bytes", o.get("error")), u.get("bytes") or u.get("error") or why(u)]))
        self.results["pickle"] = raw
        return "### `len(pickle.dumps(m))` (bytes)\n\n" + markdown_table(["mmap_ninja", "mmap_ninja 0.9.0"], rows)

    # ---- plots

    def footer(self) -> str:
        machine = _env.machine_markdown(self.results["machine"])
        return "\n".join(textwrap.wrap(f"made by: {self.args.command}  |  {machine}", 220)[:2])

    def plot_growth(self, g: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
        for ax, key, label in ((axes[0], "ours", "mmap_ninja (this repo)"), (axes[1], "upstream", "mmap_ninja 0.9.0")):
            r = g[key]
            if not why(r) and r["times"]:
                ax.plot([x / 1e6 for x in r["sizes"]], [1e3 * t for t in r["times"]], ".-", ms=3)
            ax.set_title(label + (" (capped)" if r.get("capped") else ""))
            ax.set_xlabel("map size after the extend (million items)")
            ax.set_ylabel(f"extend of {self.sizes.grow_batch:,} items (ms)")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.suptitle("Time of each extend batch while the map grows")
        fig.text(0.01, 0.01, self.footer(), fontsize=6)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(self.out / "extend_growth.png", dpi=110)
        plt.close(fig)

    def plot_tables(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        text = self.results.get("text", {}).get("rows", {})
        names = [n for n in TEXT_ROWS if n in text and not why(text[n])]
        axes[0].barh(names, [text[n]["iter_s"] for n in names])
        axes[0].set_xscale("log")
        axes[0].set_xlabel(f"{self.sizes.text_iters} passes over the text corpus (s, log)")
        images = self.results.get("images", {}).get("rows", {})
        names = [n for n in IMAGE_ROWS if n in images and not why(images[n])]
        y = range(len(names))
        axes[1].barh([i + 0.2 for i in y], [images[n]["cold_s"] for n in names], height=0.4, label="cold")
        axes[1].barh([i - 0.2 for i in y], [images[n]["warm_s"] for n in names], height=0.4, label="warm")
        axes[1].set_yticks(list(y), names)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("one full pass copying every image (s, log)")
        axes[1].legend()
        random = self.results.get("random", {})
        kinds = [k for k in ("strings", "tokens", "images") if k in random]
        for offset, key, label in ((0.2, "ours", "mmap_ninja"), (-0.2, "upstream", "0.9.0")):
            vals = [random[k][key].get("us_per_item", 0) for k in kinds]
            axes[2].barh([i + offset for i in range(len(kinds))], vals, height=0.4, label=label)
        axes[2].set_yticks(list(range(len(kinds))), kinds)
        axes[2].set_xlabel("random access (µs/item)")
        axes[2].legend()
        for ax in axes:
            ax.grid(alpha=0.3, axis="x")
        for ax in axes[:2]:  # log axes: ticks at 1, 2 and 5 of each decade, as plain numbers (minor ones overlap)
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        fig.text(0.01, 0.01, self.footer(), fontsize=6)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(self.out / "tables.png", dpi=110)
        plt.close(fig)

    # ---- targets (d)

    def targets(self) -> tuple:
        R = self.results
        rows = []

        def add(name, target, measured, passed):
            rows.append((name, [target, measured, "n/a" if passed is None else ("PASS" if passed else "FAIL")]))

        rnd = R.get("random", {})
        if rnd:  # the micro-benchmarks ran
            st = rnd.get("strings", {})
            x = ratio(st.get("ours", {}), st.get("bytes_decode", {}), "us_per_item")
            add("string random read vs `bytes.decode` of in-RAM bytes (same process)", "<= 1.25x",
                f"{fmt(x)}x ({fmt(st.get('ours', {}).get('us_per_item'))} vs "
                f"{fmt(st.get('bytes_decode', {}).get('us_per_item'))} µs)", None if x is None else x <= 1.25)
            for kind, label, need in (("tokens", "token-sequence random read vs 0.9.0", 8),
                                      ("images", "image random read vs 0.9.0", 5)):
                r = rnd.get(kind, {})
                x = ratio(r.get("upstream", {}), r.get("ours", {}), "us_per_item")
                add(label, f">= {need}x faster", f"{fmt(x)}x", None if x is None else x >= need)
            t = rnd.get("tokens", {})
            x = ratio(t.get("upstream", {}), t.get("ours", {}), "batch_list_us")
            add("256-item batch (list) vs 0.9.0", ">= 8x faster", f"{fmt(x)}x", None if x is None else x >= 8)
            x = ratio(t.get("upstream", {}), t.get("ours", {}), "batch_padded_us")
            add("256-item batch (padded) vs 0.9.0", ">= 8x faster", f"{fmt(x)}x", None if x is None else x >= 8)
        o = R.get("open", {}).get("ours", {})
        if o:
            n = o.get("n")
            add(f"open at {fmt(n) if n else '?'} items: time", "< 5 ms",
                f"{fmt(1e3 * o['open_s'])} ms" if "open_s" in o else why(o),
                o["open_s"] < 0.005 if "open_s" in o else None)
            add(f"open at {fmt(n) if n else '?'} items: RSS growth", "< 5 MB",
                f"{fmt(o['rss_mb'])} MB" if "rss_mb" in o else why(o), o["rss_mb"] < 5 if "rss_mb" in o else None)
        g = R.get("growth", {}).get("ours", {})
        if g.get("times"):
            first, last = first_last(g["times"])
            add(f"last extend at {g['n']:,} items vs first (median of 10 each)", "<= 1.25x",
                f"{fmt(last / first)}x ({fmt(1e3 * last)} vs {fmt(1e3 * first)} ms; fit slope "
                f"{fmt(slope(g))} ms per 1M items)", last / first <= 1.25)
        for name, r in R.get("build_throughput", {}).items():
            if not why(r):
                x = r["build_mb_s"] / r["plain_mb_s"]
                add(f"build throughput, {name}, vs plain write", ">= 70%", f"{100 * x:.0f}%", x >= 0.7)
        images = R.get("images", {}).get("rows", {})
        ours, mem = images.get("ragged_mmap", {}), images.get("in_memory", {})
        if not why(ours) and not why(mem) and ours and mem:
            x = mem["warm_s"] / ours["warm_s"]
            add("warm full image pass vs the same copies from RAM", ">= 70%",
                f"{100 * x:.0f}% ({ours['bytes'] / ours['warm_s'] / 1e9:.2f} vs "
                f"{mem['bytes'] / mem['warm_s'] / 1e9:.2f} GB/s)", x >= 0.7)
        for kind, r in R.get("pickle", {}).items():
            b = r["ours"].get("bytes")
            add(f"pickle of a {kind} map", "< 2 KB", f"{b} bytes" if b is not None else why(r["ours"]),
                None if b is None else b < 2048)
        for name, target, measured, passed in self.peers.targets():
            add(name, target, measured, passed)
        return markdown_table(["target", "measured", "pass?"], rows), rows


def ratio(slow: dict, fast: dict, key: str) -> float | None:
    if not slow or not fast or key not in slow or key not in fast or not fast[key]:
        return None
    return slow[key] / fast[key]


def slope(r: dict) -> float | None:
    """How much one extend slows down per million items already in the map (ms), by least squares."""
    import numpy as np

    if len(r["times"]) < 3:
        return None
    return float(np.polyfit(np.asarray(r["sizes"]) / 1e6, np.asarray(r["times"]) * 1e3, 1)[0])


def first_last(times: list[float]) -> tuple:
    import statistics

    k = min(10, max(1, len(times) // 4))
    return statistics.median(times[:k]), statistics.median(times[-k:])


# ---------------------------------------------------------------------------------------------- main


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--data", help="directory with text/*.txt and images/*.jpg (default: ./data, fetched with "
                                  "scripts/get_data.py when that script exists)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds; upstream only if its "
                                                        "virtualenv already exists")
    p.add_argument("--out", default=str(_env.HERE / "results"), help="where tables, JSON and PNGs go")
    p.add_argument("--work", help="scratch directory for the maps (default: OUT/work, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the scratch maps")
    p.add_argument("--no-upstream", action="store_true", help="skip mmap_ninja 0.9.0")
    p.add_argument("--only", choices=SECTIONS, action="append",
                   help="run only these sections (repeatable; the maps they read are built first); the "
                        "targets then cover what ran")
    p.add_argument("--src", help="the source tree whose mmap_ninja is measured as ours (default: this "
                                 "repository's src), e.g. a scratch copy with a proposed change")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    args.command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in argv)
    sizes = QUICK if args.quick else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = _env.fresh_dir(Path(args.work).resolve() if args.work else out / "work")
    started = time.time()
    machine = _env.machine_info()
    upstream = None if args.no_upstream else _env.upstream_python(install=not args.quick)
    data, data_how = _env.prepare_data(args.data, args.quick, work)
    runner = Runner(upstream, profile_dir=out, ours_src=Path(args.src).resolve() if args.src else None)
    bench = Bench(args, sizes, runner, data, work, out)
    bench.results["machine"] = machine
    versions = {"ours": runner({"task": "version"}),
                "upstream": runner({"task": "version"}, upstream=True)}
    bench.results["versions"] = versions
    sections = args.only or SECTIONS
    md = ["# mmap_ninja benchmarks\n",
          f"Command: `{args.command}`{' (quick mode: tiny sizes, figures mean nothing)' if args.quick else ''}",
          _env.machine_markdown(machine),
          f"mmap_ninja (this repo): {versions['ours'].get('version')} from `{versions['ours'].get('file')}`; "
          f"upstream: {versions['upstream'].get('version', versions['upstream'].get('skipped'))}"
          f"{' in ' + str(_env.UPSTREAM_VENV) if upstream else ''}.",
          f"Data: {data_how}. Every row runs in a fresh process; ratios compare figures of this one run."]
    if "text" in sections:
        md += ["## Text: the seed's first table", bench.text_table()]
    if "images" in sections:
        md += ["## Images: the seed's second table", bench.image_table()]
    if "micro" in sections and "images" in sections and "text" in sections:
        md += ["## Micro-benchmarks", bench.micro()]
    elif "micro" in sections:
        md += ["## Micro-benchmarks", "(skipped: needs the text and image maps; run without --only)"]
    if "text" in sections and "images" in sections:
        bench.plot_tables()
    chosen = [name for name in peers.SECTIONS if name in sections]
    if chosen:
        md += ["## Against pyarrow, a raw writer and the floor (issues 8 and 10)"]
        md += [getattr(bench.peers, name)() for name in chosen]
        bench.results["peers"] = bench.peers.results
        bench.peers.plot(out, bench.footer())
    table, rows = bench.targets()
    bench.results["targets"] = [{"target": name, "goal": c[0], "measured": c[1], "pass": c[2]} for name, c in rows]
    elapsed = time.time() - started
    bench.results["elapsed_s"] = elapsed
    bench.results["command"] = args.command
    bench.results["sizes"] = asdict(sizes)
    md += ["## Targets (measured in this run)", table,
           f"Total time {elapsed:.0f} s; load average at the end "
           f"{', '.join(f'{x:.2f}' for x in __import__('os').getloadavg())} (2 shared cores: other work may "
           f"have run beside these measurements)."]
    text = "\n\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(bench.results, indent=1, default=str))
    (out / "calls.json").write_text(json.dumps(runner.calls, indent=1, default=str))
    print(text)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return bench.results
