"""Registers, spills and occupancy of the attention kernels' CUDA builds, read off NVIDIA's
compiler without a GPU.

Reads the folder the `cuda_sources` example of cidm-kernels wrote (one `.cu` per kernel, head
width and dtype, and `kernels.tsv`), compiles each source as CubeCL's CUDA runtime does (NVRTC
with `--gpu-architecture=sm_<arch>`, the CUDA headers' include path and `-lineinfo`), then the
PTX with `ptxas -v` for the same architecture (what the driver does when it loads the PTX), and
prints one line per kernel:

  kernel=flash_forward head_dim=40 dtype=f16 units_per_row=1 tile_rows=64 registers=128
      spill_stores=0 spill_loads=0 stack=0 shared_bytes=20480 warps_per_sm=16

`warps_per_sm` is the occupancy the registers and shared memory allow, with the limits of
sm_90 (H100, H200): 64K registers allocated 256 per warp, 228 KiB of shared memory with 1 KiB
reserved per block, at most 32 blocks and 64 warps per multiprocessor. The lines also go to
`registers.tsv` in the folder.

Needs the pip packages nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12 (NVRTC, the CUDA
headers and ptxas); tools/kernel_registers.sh sets them up.

Usage: python kernel_registers.py SOURCES_DIR [--arch 90a]
"""

import argparse
import csv
import ctypes
import glob
import os
import re
import subprocess
import sys

ROWS_PER_CUBE = 64  # rows of an attention kernel's cube, each of units_per_row units
REGISTERS_PER_SM = 65536
REGISTER_UNIT_PER_WARP = 256
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED_PER_BLOCK = 1024
MAX_BLOCKS_PER_SM = 32
MAX_WARPS_PER_SM = 64


def nvidia_dir(package):
    import importlib

    module = importlib.import_module(f"nvidia.{package}")
    return list(module.__path__)[0]


def load_nvrtc():
    libs = sorted(glob.glob(os.path.join(nvidia_dir("cuda_nvrtc"), "lib", "libnvrtc.so.*")))
    if not libs:
        sys.exit("libnvrtc.so not found: pip install nvidia-cuda-nvrtc-cu12")
    return ctypes.CDLL(libs[0])


def nvrtc_ptx(nvrtc, source, options):
    program = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, None, 0, None, None))
    encoded = [option.encode() for option in options]
    status = nvrtc.nvrtcCompileProgram(
        program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded)
    )
    size = ctypes.c_size_t()
    if status != 0:
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        raise RuntimeError(log.value.decode(errors="replace"))
    check(nvrtc, nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(program, ptx))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return ptx.value


def check(nvrtc, status):
    if status != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(nvrtc.nvrtcGetErrorString(status).decode())


def ptxas_info(ptxas, ptx_path, arch):
    out = subprocess.run(
        [ptxas, "-v", f"-arch=sm_{arch}", ptx_path, "-o", os.devnull],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    frame = re.search(
        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", out
    )
    registers = re.search(r"Used (\d+) registers", out)
    if not frame or not registers:
        raise RuntimeError(f"unexpected ptxas output:\n{out}")
    stack, stores, loads = (int(x) for x in frame.groups())
    return int(registers.group(1)), stores, loads, stack


def warps_per_sm(registers, shared_bytes, threads_per_block):
    warps_per_block = -(-threads_per_block // 32)
    per_warp = -(-registers * 32 // REGISTER_UNIT_PER_WARP) * REGISTER_UNIT_PER_WARP
    by_registers = REGISTERS_PER_SM // (per_warp * warps_per_block)
    by_shared = SHARED_PER_SM // (shared_bytes + SHARED_RESERVED_PER_BLOCK)
    by_warps = MAX_WARPS_PER_SM // warps_per_block
    return min(by_registers, by_shared, by_warps, MAX_BLOCKS_PER_SM) * warps_per_block


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources")
    parser.add_argument("--arch", default="90a", help="sm_ version, e.g. 90a (H100/H200), 80")
    args = parser.parse_args()

    nvrtc = load_nvrtc()
    include = os.path.join(nvidia_dir("cuda_runtime"), "include")
    ptxas = os.path.join(nvidia_dir("cuda_nvcc"), "bin", "ptxas")
    options = [f"--gpu-architecture=sm_{args.arch}", f"--include-path={include}", "-lineinfo"]

    with open(os.path.join(args.sources, "kernels.tsv")) as manifest:
        kernels = list(csv.DictReader(manifest, delimiter="\t"))
    columns = ["kernel", "head_dim", "dtype", "units_per_row", "tile_rows", "registers", "spill_stores", "spill_loads",
               "stack", "shared_bytes", "warps_per_sm"]
    rows = []
    for kernel in kernels:
        path = os.path.join(args.sources, kernel["file"])
        with open(path, "rb") as source:
            ptx = nvrtc_ptx(nvrtc, source.read(), options)
        ptx_path = path[: -len(".cu")] + ".ptx"
        with open(ptx_path, "wb") as out:
            out.write(ptx)
        registers, stores, loads, stack = ptxas_info(ptxas, ptx_path, args.arch)
        shared = int(kernel["shared_bytes"])
        units = int(kernel["units_per_row"])
        row = dict(kernel=kernel["kernel"], head_dim=kernel["head_dim"], dtype=kernel["dtype"],
                   units_per_row=units, tile_rows=kernel["tile_rows"], registers=registers, spill_stores=stores, spill_loads=loads, stack=stack,
                   shared_bytes=shared, warps_per_sm=warps_per_sm(registers, shared, ROWS_PER_CUBE * units))
        rows.append(row)
        print(" ".join(f"{c}={row[c]}" for c in columns), flush=True)
    with open(os.path.join(args.sources, "registers.tsv"), "w") as out:
        out.write("\t".join(columns) + "\n")
        for row in rows:
            out.write("\t".join(str(row[c]) for c in columns) + "\n")


if __name__ == "__main__":
    main()
