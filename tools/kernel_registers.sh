#!/usr/bin/env bash
# Registers per thread, spills and occupancy of the attention kernels as NVIDIA's compiler
# builds them, on a machine without a GPU: the `cuda_sources` example of cidm-kernels writes
# the CUDA C++ that CubeCL's CUDA runtime would compile (it needs a wgpu adapter, Mesa's
# lavapipe is enough), then tools/kernel_registers.py compiles each with NVRTC and ptxas and
# prints one line per kernel, head width and dtype:
#   kernel=flash_backward_dkdv head_dim=80 dtype=f16 registers=.. spill_stores=.. spill_loads=..
#       stack=.. shared_bytes=.. warps_per_sm=..
#
# Usage: tools/kernel_registers.sh [--arch 90a] [--out DIR] [--head-dims 40,64,80,160]
#                                  [--dtypes f16,f32]
#   --arch: the sm_ version to compile for (default 90a: H100/H200, as CubeCL compiles there).
#   --out: where the sources, PTX and registers.tsv go (default target/kernel-registers).
# Environment: CIDM_ATTENTION_HELD_VALUES, as for a run of the kernels (how many values of rows
# a thread holds before a row is split; default 128), e.g. 64 to see a finer split;
# PYTHON, an interpreter with the pip packages nvidia-cuda-nvrtc-cu12 and
# nvidia-cuda-nvcc-cu12; unset, a virtual environment with them (version 12.9, about 130 MB
# downloaded once) is made in target/kernel-registers-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=90a
out=target/kernel-registers
example_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift ;;
        --out) out="$2"; shift ;;
        --head-dims|--dtypes) example_args+=("$1" "$2"); shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "${PYTHON:-}" ]; then
    venv=target/kernel-registers-venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "nvidia-cuda-nvrtc-cu12==12.9.86" \
            "nvidia-cuda-nvcc-cu12==12.9.86" "nvidia-cuda-runtime-cu12==12.9.79"
    fi
    PYTHON="$venv/bin/python"
fi

rm -rf "$out"
cargo run --quiet -p cidm-kernels --features cuda-source --example cuda_sources -- \
    --out "$out" "${example_args[@]}" > /dev/null
"$PYTHON" tools/kernel_registers.py "$out" --arch "$arch"
