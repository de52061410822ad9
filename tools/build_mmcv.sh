#!/usr/bin/env bash
# mmcv 2.1.0 for torch 2.14: OpenMMLab publishes no wheel, so build one from the PyPI sdist once
# per machine and keep it in the zoo's cache folder (the one ops/_build.py uses for compiled
# kernels: $ZOO_CACHE_DIR, default ~/.cache/lkzoo), keyed by the mmcv, torch and Python versions.
# Prints the wheel's path, and nothing else, on stdout (progress goes to stderr). A second
# caller waits on a lock instead of building the same wheel again.
#   - torch 2.14's headers need C++20; mmcv's setup.py hard-codes -std=c++14/17 (mmcv#3341)
#   - its setup.py imports pkg_resources: setuptools<81, and no build isolation so it sees torch
#   - ~30 CPU-minutes for the 77 CPU op sources; nice'd so other work on the machine keeps going
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MMCV_VERSION=2.1.0
CACHE=${ZOO_CACHE_DIR:-$HOME/.cache/lkzoo}/wheels
key=$("$PY" -c "import sys, torch; print(f'torch{torch.__version__.split(\"+\")[0]}-cp{sys.version_info[0]}{sys.version_info[1]}')")
dest=$CACHE/mmcv-$MMCV_VERSION-$key
mkdir -p "$CACHE"

cached() { compgen -G "$dest/mmcv-$MMCV_VERSION-*.whl" | head -n 1; }

if wheel=$(cached) && [ -n "$wheel" ]; then
    echo "build_mmcv: using the cached $wheel" >&2
    echo "$wheel"
    exit 0
fi

exec 9>"$CACHE/mmcv-$MMCV_VERSION-$key.lock"
if ! flock -n 9; then
    echo "build_mmcv: another process is building mmcv $MMCV_VERSION; waiting for it" >&2
    flock 9
fi
if wheel=$(cached) && [ -n "$wheel" ]; then  # built by the process we waited for
    echo "$wheel"
    exit 0
fi

"$PY" -m pip install -q "setuptools<81" >&2
work=$(mktemp -d "$CACHE/build-mmcv-XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$work/sdist" >&2
tar -xzf "$work"/sdist/mmcv-$MMCV_VERSION.tar.gz -C "$work"
src=$work/mmcv-$MMCV_VERSION
sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$src/setup.py"
if grep -q -E -- '-std=c\+\+1[47]' "$src/setup.py" || ! grep -q -- '-std=c++20' "$src/setup.py"; then
    echo "build_mmcv: could not switch $src/setup.py to -std=c++20" >&2
    exit 1
fi
echo "build_mmcv: building mmcv $MMCV_VERSION for $key (first time on this machine, ~15-40 min)" >&2
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} nice -n 10 \
    "$PY" -m pip wheel -q --no-build-isolation --no-deps "$src" -w "$work/wheel" >&2
mkdir -p "$work/out"
mv "$work"/wheel/mmcv-$MMCV_VERSION-*.whl "$work/out/"
rm -rf "$dest"
mv "$work/out" "$dest"  # appears whole or not at all
echo "build_mmcv: built in $(( $(date +%s) - start )) s" >&2
cached
