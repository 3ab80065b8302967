#!/usr/bin/env bash
# Build the peer virtualenv of the epoch harness (benchmarks/bench_epochs.py) from benchmarks/constraints-peers.txt.
#
#   bash benchmarks/make_peers_venv.sh [VENV]        # default VENV: benchmarks/.venv-peers (git-ignored)
#
# CPU torch 2.13.0 goes in first (a wheel in a folder on PIP_FIND_LINKS, else from the index at TORCH_INDEX_URL: set
# it to PyTorch's CPU wheel index), so that no later requirement pulls CUDA torch. The peers' own requirements are installed from the constraints file; litdata,
# mosaicml-streaming and webdataset then go in with --no-deps (mosaicml-streaming's pins - numpy<2.2,
# transformers<5, torchvision - cannot hold next to CPU torch 2.13 and datasets 5). mmap_ninja itself is not
# installed: the harness runs this tree's src/ on PYTHONPATH. Last, benchmarks/peers_smoke.py writes one line per
# peer (does it import and round-trip three JPEGs) to VENV/READY.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-peers}"
constraints="$here/constraints-peers.txt"
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# a wheel on PIP_FIND_LINKS first, without reaching any index; else TORCH_INDEX_URL
"$py" -m pip install --quiet --no-index --no-deps -c "$constraints" "torch==2.13.0+cpu" 2>/dev/null \
    || "$py" -m pip install --quiet -c "$constraints" --index-url "${TORCH_INDEX_URL:?no CPU torch wheel on PIP_FIND_LINKS: set TORCH_INDEX_URL}" \
        "torch==2.13.0+cpu"
"$py" -m pip install --quiet -c "$constraints" \
    torch filelock typing-extensions sympy networkx jinja2 fsspec \
    numpy pillow simplejpeg pyspng zstandard xxhash psutil tqdm py-spy \
    datasets pyarrow \
    lightning-utilities filelock boto3 requests urllib3 tifffile obstore \
    brotli python-snappy zstd catalogue "transformers" \
    braceexpand pyyaml
"$py" -m pip install --quiet --no-deps -c "$constraints" litdata mosaicml-streaming webdataset
(cd "${TMPDIR:-/tmp}" && "$py" "$here/peers_smoke.py" --ready "$venv/READY")
echo "peer venv ready: $venv (see $venv/READY)"
