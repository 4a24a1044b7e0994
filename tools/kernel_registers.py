"""Registers, spills and occupancy of cidm-kernels' CUDA builds, read off NVIDIA's compiler
without a GPU.

Reads the folder the `cuda_sources` example of cidm-kernels wrote (one `.cu` per kernel,
variant and dtype, and `kernels.tsv`), compiles each source as CubeCL's CUDA runtime does
(NVRTC with `--gpu-architecture=sm_<arch>`, the CUDA headers' include path and `-lineinfo`),
then the PTX with `ptxas -v` for the same architecture (what the driver does when it loads
the PTX), and prints one line per kernel, with the variant's settings after its dtype:

  kernel=flash_forward dtype=f16 head_dim=40 units_per_row=1 tile_rows=64 registers=127
      spill_stores=0 spill_loads=0 stack=0 shared_bytes=20480 warps_per_sm=16

A source that NVRTC or ptxas rejects prints `kernel=.. dtype=.. ... error="..."` (the first
line of the compiler's log; the whole log goes to `<file>.log`), the others still run, and the
exit status is 1.

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
    columns = ["kernel", "dtype", "settings", "registers", "spill_stores", "spill_loads", "stack",
               "shared_bytes", "warps_per_sm", "error"]
    rows = []
    for kernel in kernels:
        path = os.path.join(args.sources, kernel["file"])
        shared = int(kernel["shared_bytes"])
        row = dict(kernel=kernel["kernel"], dtype=kernel["dtype"], settings=kernel["settings"],
                   registers="", spill_stores="", spill_loads="", stack="", shared_bytes=shared,
                   warps_per_sm="", error="")
        try:
            with open(path, "rb") as source:
                ptx = nvrtc_ptx(nvrtc, source.read(), options)
            ptx_path = path[: -len(".cu")] + ".ptx"
            with open(ptx_path, "wb") as out:
                out.write(ptx)
            registers, stores, loads, stack = ptxas_info(ptxas, ptx_path, args.arch)
            row.update(registers=registers, spill_stores=stores, spill_loads=loads, stack=stack,
                       warps_per_sm=warps_per_sm(registers, shared, int(kernel["cube_units"])))
        except (RuntimeError, subprocess.CalledProcessError) as err:
            log = err.stderr if isinstance(err, subprocess.CalledProcessError) else str(err)
            with open(path[: -len(".cu")] + ".log", "w") as out:
                out.write(log)
            first = next((line for line in log.splitlines() if line.strip()), "failed")
            row["error"] = first.replace('"', "'")
        rows.append(row)
        fields = [f"kernel={row['kernel']}", f"dtype={row['dtype']}"]
        fields += row["settings"].split()
        if row["error"]:
            fields.append(f'error="{row["error"]}"')
        else:
            fields += [f"{c}={row[c]}" for c in columns[3:-1]]
        print(" ".join(fields), flush=True)
    with open(os.path.join(args.sources, "registers.tsv"), "w") as out:
        out.write("\t".join(columns) + "\n")
        for row in rows:
            out.write("\t".join(str(row[c]) for c in columns) + "\n")
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"{failed} of {len(rows)} kernels did not compile", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
