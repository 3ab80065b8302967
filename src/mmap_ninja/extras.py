"""Optional dependencies: which extra of ``pip install 'mmap_ninja[extra]'`` brings each one, and the ImportError
that says so when one is missing (instead of a bare ``ModuleNotFoundError`` deep inside an adapter)."""

from __future__ import annotations

__all__ = ["EXTRA_OF_MODULE", "missing_extra"]

EXTRA_OF_MODULE = {
    "torch": "torch",
    "pyarrow": "arrow",
    "datasets": "arrow",
    "fsspec": "s3",
    "s3fs": "s3",
    "dask": "dask",
    "distributed": "dask",
    "PIL": "images",
    "simplejpeg": "images",
    "pyspng": "png",
    "jpeglib": "baseline",
    "zstandard": "zstd",
    "lz4": "lz4",
    "xxhash": "xxhash",
}


def missing_extra(error: ImportError, user: str) -> ImportError:
    """The error to raise when importing ``user`` (a module or feature of ours) failed with ``error``: it names the
    extra that installs the missing package. An import error of anything else (a broken installation of a package
    that is present) is returned unchanged, so its own message is not hidden."""
    missing = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(missing)
    if extra is None:
        return error
    return ImportError(f"{user} needs the {missing!r} package, which is not installed: "
                       f"pip install 'mmap_ninja[{extra}]'", name=missing)
