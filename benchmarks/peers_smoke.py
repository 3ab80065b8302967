"""Check that every peer of the epoch harness imports and round-trips a few images (run with the peer venv).

    benchmarks/.venv-peers/bin/python benchmarks/peers_smoke.py [--ready FILE]

For each peer (HF ``datasets``, LitData, MosaicML streaming, webdataset, torchvision) it writes three small JPEGs
with the peer's own writer into a temporary directory, reads them back through the peer's reader with its default
decoder, and checks the decoded sizes. One line per peer goes to stdout (and to ``--ready``): ``NAME: ok VERSION``
or ``NAME: FAILED <reason>``. The exit status is 0 when every peer but torchvision works (torchvision's PyPI wheel
is built against CUDA torch and cannot load on CPU torch; the harness reimplements its crop rule instead).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any, Callable

SIZES = [(40, 30), (64, 48), (33, 57)]  # (width, height)


def import_mosaic_streaming() -> Any:
    """``import streaming`` without its ``streaming.vision`` subpackage.

    ``streaming/__init__.py`` imports ``streaming.vision``, which imports torchvision; torchvision's PyPI wheel links
    CUDA torch and fails to import on CPU torch. The harness never uses ``streaming.vision`` (only ``MDSWriter`` and
    ``StreamingDataset``), so an empty placeholder module stands in for it when torchvision cannot be imported.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:
        sys.modules.setdefault("streaming.vision", types.ModuleType("streaming.vision"))
    import streaming

    return streaming


def jpeg_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def decoded_size(image: Any) -> tuple[int, int]:
    """(width, height) of a PIL image or an HWC/CHW array or tensor."""
    if hasattr(image, "size") and isinstance(image.size, tuple):
        return image.size  # type: ignore[no-any-return]
    shape = tuple(image.shape)
    return (shape[1], shape[0]) if shape[-1] in (1, 3, 4) else (shape[2], shape[1])


def check_datasets(work: Path) -> str:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": jpeg_bytes(w, h), "path": None} for w, h in SIZES], "label": [0, 1, 2]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(work / "hf"))
    loaded = datasets.load_from_disk(str(work / "hf"))
    assert [decoded_size(loaded[i]["image"]) for i in range(3)] == SIZES
    return str(datasets.__version__)


def _litdata_sample(index: int) -> dict[str, Any]:
    width, height = SIZES[index]
    return {"image": jpeg_bytes(width, height), "label": index}


def check_litdata(work: Path) -> str:
    """JPEG bytes stored as ``bytes`` and decoded with Pillow by the reader.

    LitData's own JPEG serializer decodes with ``torchvision.io`` only (0.2.45 and later; 0.2.43's Pillow fallback
    misreads the bytes), so without torchvision the harness stores the encoded bytes and decodes them itself.
    """
    import litdata
    from PIL import Image

    litdata.optimize(fn=_litdata_sample, inputs=list(range(3)), output_dir=str(work / "lit"), chunk_bytes="64MB",
                     num_workers=1, mode="overwrite")
    loaded = litdata.StreamingDataset(str(work / "lit"))
    sizes = [Image.open(io.BytesIO(loaded[i]["image"])).size for i in range(3)]
    assert sorted(sizes) == sorted(SIZES), sizes
    return str(litdata.__version__) + " (its JPEG serializer needs torchvision: store JPEG bytes, decode with Pillow)"


def check_mosaic(work: Path) -> str:
    from PIL import Image

    streaming = import_mosaic_streaming()
    with streaming.MDSWriter(out=str(work / "mds"), columns={"image": "jpeg", "label": "int"}) as writer:
        for index, (width, height) in enumerate(SIZES):
            writer.write({"image": Image.open(io.BytesIO(jpeg_bytes(width, height))), "label": index})
    loaded = streaming.StreamingDataset(local=str(work / "mds"), shuffle=False, batch_size=1)
    assert [decoded_size(loaded[i]["image"]) for i in range(3)] == SIZES
    streaming.base.util.clean_stale_shared_memory()
    note = "" if "torchvision" in sys.modules else (
        " (plain `import streaming` fails without torchvision: import it as peers_smoke.import_mosaic_streaming does,"
        " with an empty sys.modules['streaming.vision'] first)")
    return str(streaming.__version__) + note


def check_webdataset(work: Path) -> str:
    import webdataset

    shard = work / "wds-000000.tar"
    with webdataset.TarWriter(str(shard)) as writer:
        for index, (width, height) in enumerate(SIZES):
            writer.write({"__key__": f"{index:06d}", "jpg": jpeg_bytes(width, height), "cls": index})
    loaded = webdataset.WebDataset(str(shard), shardshuffle=False, empty_check=False).decode("pil")
    assert [decoded_size(sample["jpg"]) for sample in loaded] == SIZES
    return str(webdataset.__version__)


def check_torchvision(work: Path) -> str:
    try:
        import torchvision
    except ModuleNotFoundError:
        raise RuntimeError("not installed: PyPI's torchvision wheels link libtorch_cuda and need CUDA torch (CPU "
                           "wheels are on PyTorch's own index only); the harness has its own crop rule") from None
    from PIL import Image
    from torchvision.transforms import RandomResizedCrop

    image = Image.open(io.BytesIO(jpeg_bytes(64, 48)))
    assert RandomResizedCrop(16)(image).size == (16, 16)
    return str(torchvision.__version__)


CHECKS: dict[str, Callable[[Path], str]] = {
    "datasets": check_datasets,
    "litdata": check_litdata,
    "mosaicml-streaming": check_mosaic,
    "webdataset": check_webdataset,
    "torchvision": check_torchvision,
}

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ready", help="also write the lines to this file")
    parser.add_argument("--only", choices=sorted(CHECKS), help="check this peer only")
    args = parser.parse_args()
    lines = []
    failed_required = False
    checks = dict(CHECKS)
    if args.only:
        checks = {args.only: CHECKS[args.only]}
    for name, check in checks.items():
        with tempfile.TemporaryDirectory(prefix="peers-smoke-") as tmp:
            try:
                lines.append(f"{name}: ok {check(Path(tmp))}")
            except BaseException as error:  # the line reports it
                if isinstance(error, KeyboardInterrupt):
                    raise
                reason = traceback.format_exception_only(type(error), error)[-1].strip()
                lines.append(f"{name}: FAILED {reason}")
                failed_required |= name != "torchvision"
        print(lines[-1], flush=True)
    if args.ready:
        Path(args.ready).write_text("\n".join(lines) + "\n")
    return 1 if failed_required else 0


if __name__ == "__main__":
    sys.exit(main())
