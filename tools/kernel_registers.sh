#!/usr/bin/env bash
# Registers per thread, spills and occupancy of cidm-kernels' kernels as NVIDIA's compiler
# builds them, on a machine without a GPU, and whether it takes every one of them: the
# `cuda_sources` example of cidm-kernels writes the CUDA C++ that CubeCL's CUDA runtime would
# compile (it needs a wgpu adapter, Mesa's lavapipe is enough), then tools/kernel_registers.py
# compiles each with NVRTC and ptxas and prints one line per kernel, variant and dtype:
#   kernel=flash_backward_dkdv dtype=f16 head_dim=80 units_per_row=4 tile_rows=50
#       registers=.. spill_stores=.. spill_loads=.. stack=.. shared_bytes=.. warps_per_sm=..
#   kernel=group_norm_apply dtype=f16 silu=true x_last=false registers=.. ...
# or `error="..."` for a kernel the compiler rejects (exit status 1 then).
#
# Usage: tools/kernel_registers.sh [--arch 90a] [--out DIR] [--kernels attention,fused-ops]
#                                  [--head-dims 40,64,80,160] [--dtypes f16,f32]
#   --arch: the sm_ version to compile for (default 90a: H100/H200, as CubeCL compiles there).
#   --out: where the sources, PTX and registers.tsv go (default target/kernel-registers).
#   --kernels: the attention's (at each head width), the fused ops' (GroupNorm, LayerNorm,
#   GEGLU and the split sums, every variant), or both (default).
#   --setup-only: set up the virtual environment below (if PYTHON is unset) and stop; exit
#   status 1 if pip could not install it (CI tells that apart from a kernel NVRTC rejects).
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
setup_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift ;;
        --out) out="$2"; shift ;;
        --setup-only) setup_only=true ;;
        --kernels|--head-dims|--dtypes) example_args+=("$1" "$2"); shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "${PYTHON:-}" ]; then
    venv=target/kernel-registers-venv
    # `.installed` marks a finished install: a failed one is removed and tried again next time.
    if [ ! -e "$venv/.installed" ]; then
        rm -rf "$venv"
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet \
            "nvidia-cuda-nvrtc-cu12==12.9.86" "nvidia-cuda-nvcc-cu12==12.9.86" \
            "nvidia-cuda-runtime-cu12==12.9.79"; }; then
            rm -rf "$venv"
            echo "could not set up $venv (python3 with venv, and pip's access to PyPI)" >&2
            exit 1
        fi
        touch "$venv/.installed"
    fi
    PYTHON="$venv/bin/python"
fi
if $setup_only; then
    exit 0
fi

rm -rf "$out"
cargo run --quiet -p cidm-kernels --features cuda-source --example cuda_sources -- \
    --out "$out" "${example_args[@]}" > /dev/null
"$PYTHON" tools/kernel_registers.py "$out" --arch "$arch"
