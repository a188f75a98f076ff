#!/usr/bin/env bash
# An aarch64 Python with torch, for running the backbone under qemu-aarch64 on an x86 machine:
#   tools/aarch64_sysroot.sh [OUT]        (default OUT: build/aarch64; needs root and apt-get)
#   qemu-aarch64 -L OUT/sysroot -cpu max OUT/sysroot/usr/bin/python3.11 script.py
# with OUT/site on sys.path. tests/test_cpu_support.py::test_real_aarch64_cpu uses it.
# Debian's arm64 python3.11 (its packages unpacked, not installed), torch 2.10.0: the newest
# CPU-only aarch64 wheel on PyPI (2.11 on are CUDA builds whose NVIDIA libraries PyPI does not
# all have for aarch64), numpy and torch's pure-Python dependencies, at this venv's versions (the
# test stubs out mmengine).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/aarch64}
PIP=${PIP:-.venv/bin/pip}
TORCH_AARCH64=2.10.0
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libgomp1"
PURE="typing-extensions sympy mpmath networkx jinja2 markupsafe fsspec filelock"

command -v qemu-aarch64 >/dev/null || { echo "no qemu-aarch64 (apt install qemu-user)"; exit 1; }
command -v apt-get >/dev/null || { echo "needs Debian's apt-get for the arm64 python"; exit 1; }
rm -rf "$OUT.partial" && mkdir -p "$OUT.partial/debs"
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -qq
packages=$(for deb in $DEBS; do printf '%s:arm64 ' "$deb"; done)
(cd "$OUT.partial/debs" && apt-get download -qq $packages 2>/dev/null)
for deb in "$OUT.partial"/debs/*.deb; do dpkg-deb -x "$deb" "$OUT.partial/sysroot"; done

# This venv's versions of the pure-Python packages (numpy too, as an aarch64 wheel).
frozen=$("$PIP" freeze 2>/dev/null)
pins="torch==$TORCH_AARCH64"
for name in numpy $PURE; do
    pin=$(printf '%s\n' "$frozen" | grep -i -E "^${name//-/[-_]}==" || true)
    pins="$pins ${pin:-$name}"
done
"$PIP" install -q --no-deps --target "$OUT.partial/site" --python-version 3.11 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --only-binary=:all: $pins
PYTHONPATH="$OUT.partial/site" qemu-aarch64 -L "$OUT.partial/sysroot" -cpu max \
    "$OUT.partial/sysroot/usr/bin/python3.11" -c "import torch; print('torch', torch.__version__)"
rm -rf "$OUT" "$OUT.partial/debs" && mv "$OUT.partial" "$OUT"
