#!/usr/bin/env bash
# Packs what one run of tools/gpu_bench.sh needs on a GPU machine that has a Python with torch
# (and numpy) but no Rust toolchain, maybe no network, and a limit on what can be copied to it:
# - the two CUDA builds of the gpu_bench example (f16 and f32), stripped and xz-compressed
#   (about 51 MB each stripped, 7 MB compressed; Python's lzma unpacks them there, no xz needed);
# - with --wheels PYTHON_VERSION (the GPU machine's, e.g. 3.12): the x86_64 Linux wheels of
#   diffusers 0.42.1 and of its dependencies except torch's own stack and numpy (about 22 MB),
#   and with --peft also of peft 0.21.2 and its own (about 47 MB in all); without peft the
#   reference writes its LoRA layers in torch;
# - built_from: the commit (`git describe --dirty`) and CUDA version the builds were made from;
# - run.sh, which unpacks the binaries, installs from the wheels what the machine lacks and runs
#   tools/gpu_bench.sh on the two builds with the options it is given.
#
# Usage: tools/gpu_bench_pack.sh [--out DIR] [--cuda VERSION] [--wheels PYTHON_VERSION] [--peft]
#   DIR defaults to target/gpu-pack. --cuda (e.g. 13.0: the "CUDA Version" nvidia-smi prints
#   there) is the CUDA whose driver API and NVRTC the builds call. Without it cudarc takes
#   this machine's nvcc version or, with no nvcc, the newest it knows (13.4 for cudarc
#   0.19), whose entry points and structures a machine with an older driver may lack.
#   PYTHON (default python3) is the interpreter whose pip resolves and downloads the wheels
#   here.
# Then, on the GPU machine, from the repository root (with tools/ and DIR copied there):
#   DIR/run.sh --deadline 540 --warmup 2 --reps 5 --profile --out results
set -euo pipefail

out=target/gpu-pack
cuda=""
wheels=""
peft=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift ;;
        --cuda) cuda="$2"; shift ;;
        --wheels) wheels="$2"; shift ;;
        --peft) peft=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_bench_pack.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
# Only what an earlier pack left there: DIR may hold other files.
rm -rf "$out/wheels" "$out/bin" "$out/run.sh" "$out/built_from" "$out"/gpu_bench_*.xz
mkdir -p "$out"

if [ -n "$cuda" ]; then
    if ! [[ "$cuda" =~ ^([0-9]+)\.([0-9])$ ]]; then
        echo "gpu_bench_pack.sh: --cuda takes MAJOR.MINOR, e.g. 13.0" >&2
        exit 2
    fi
    # cudarc's spelling: 13.0 is 13000.
    export CUDARC_CUDA_VERSION="${BASH_REMATCH[1]}0${BASH_REMATCH[2]}0"
fi

# What the builds are made of, for run.sh to print in the results' header and for a later
# look at the pack to tell whether it is still current.
echo "$(git describe --always --dirty 2> /dev/null || echo unknown) cuda ${cuda:-default}" \
    > "$out/built_from"
for build in f16:cuda,f16 f32:cuda; do
    name="gpu_bench_${build%%:*}"
    cargo build --release --example gpu_bench -p cidm --features "${build#*:}"
    strip -o "$out/$name" target/release/examples/gpu_bench
    xz -9 --force "$out/$name"
done

if [ -n "$wheels" ]; then
    requirements=("diffusers==0.42.1")
    [ "$peft" = 0 ] || requirements+=("peft==0.21.2")
    platform=(--only-binary=:all: --python-version "$wheels"
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
    # Resolve the whole dependency tree for that Python, then download all of it but what a
    # torch installation brings (torch, its CUDA libraries and its own dependencies) and numpy.
    "$python" -m pip install --quiet --dry-run --ignore-installed "${platform[@]}" \
        --target "$out/resolve" --report "$out/resolved.json" "${requirements[@]}"
    mapfile -t pins < <("$python" - "$out/resolved.json" <<'PY'
import json, sys
torch_stack = {"torch", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
               "setuptools", "numpy"}
for item in json.load(open(sys.argv[1]))["install"]:
    name = item["metadata"]["name"].lower()
    if name in torch_stack or name.startswith(("nvidia", "cuda")):
        continue
    print(f"{name}=={item['metadata']['version']}")
PY
    )
    "$python" -m pip download --quiet --no-deps "${platform[@]}" -d "$out/wheels" "${pins[@]}"
    printf '%s\n' "${requirements[@]}" > "$out/wheels/requirements.txt"
    rm -rf "$out/resolve" "$out/resolved.json"
fi

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Unpacks the two gpu_bench builds next to this script, installs from wheels/ what the Python
# lacks, and runs tools/gpu_bench.sh (from the repository root) on both builds with the
# options given here. PYTHON: the interpreter with torch (default python3).
set -euo pipefail
pack="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
mkdir -p "$pack/bin"
for packed in "$pack"/gpu_bench_*.xz; do
    bin="$pack/bin/$(basename "$packed" .xz)"
    "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$packed" "$bin"
    chmod +x "$bin"
done
if [ -f "$pack/wheels/requirements.txt" ]; then
    # Only what is missing: installed packages that satisfy the pins stay as they are.
    "$python" -m pip install --quiet --no-index --find-links "$pack/wheels" \
        -r "$pack/wheels/requirements.txt" \
        || echo "# installing the wheels failed: the reference may not run" >&2
fi
exec env PYTHON="$python" CIDM_BUILT_FROM="$(cat "$pack/built_from")" tools/gpu_bench.sh "$@" \
    "$pack/bin/gpu_bench_f16" "$pack/bin/gpu_bench_f32"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
