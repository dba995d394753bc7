#!/usr/bin/env bash
# Installs the pinned CUDA compiler toolchain from PyPI (no GPU, driver or root needed) into one
# directory and prints the environment that points the build at it:
#   eval "$(scripts/cuda-toolchain.sh [DIR])"
# nvcc 13.0.88 (the lent GPU machines run driver 580, CUDA 13.0, which loads its cubins and
# JIT-compiles its PTX), with nvvm, crt and the runtime headers of the same release, CCCL (not a
# declared dependency of the nvcc wheel, but CUDA 13's headers need it), the CUTLASS/CuTe headers,
# and cuobjdump (13.2.51, the oldest wheel there is; it reads 13.0 fatbins) for the build check.
# All in ONE `pip --target`: separate runs do not merge the shared `nvidia/` folder.
set -euo pipefail
dir=${1:-${TMPDIR:-/tmp}/dsv4-cuda-13.0.88}
if [ ! -x "$dir/nvidia/cu13/bin/nvcc" ] || [ ! -x "$dir/nvidia/cu13/bin/cuobjdump" ]; then
    python3 -m pip install --quiet --no-cache-dir --no-deps --disable-pip-version-check --target "$dir" \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cutlass==4.2.0.0 \
        nvidia-cuda-cuobjdump==13.2.51 >&2
fi
echo "export CUDA_HOME='$dir/nvidia/cu13' NVCC='$dir/nvidia/cu13/bin/nvcc' CUTLASS_DIR='$dir/cutlass_library/source'"
echo "export PATH='$dir/nvidia/cu13/bin':\"\$PATH\""
