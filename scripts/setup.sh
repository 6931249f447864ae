#!/usr/bin/env bash
# Install the project on a fresh Debian/Ubuntu machine with Python 3.10+.
#   scripts/setup.sh          # the campaign tool (CPU torch, tblite, dask, zarr, ...)
#   scripts/setup.sh --test   # plus test tools, dpdata, GPAW (compiled against Debian's libxc/OpenBLAS/FFTW) and SLURM
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[test,gpaw,deepmd]"
    # GPAW builds against these; do not install Debian's gpaw package (its MPI breaks the pip build).
    # chromium and its driver: the browser tests of the campaign page (nothing is downloaded at test time).
    if ! dpkg -s libxc-dev libopenblas-dev libfftw3-dev chromium chromium-driver >/dev/null 2>&1; then
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=600 libxc-dev libopenblas-dev libfftw3-dev chromium chromium-driver
    fi
    as_root bash scripts/slurm_localhost.sh install
fi

# The CPU wheel first: a bare "torch" requirement would pull gigabytes of CUDA packages.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".$extras"
echo "setup done: $(command -v campaign)"
