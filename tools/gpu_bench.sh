#!/usr/bin/env bash
# Issue 8's side-by-side benchmark: runs our gpu_bench example binary (one or more builds, e.g.
# `--features cuda,f16` and `--features cuda`) and the PyTorch reference
# (tools/gpu_bench_reference.py) on the same machine in one go, on the same UNet config (ours
# prints it, the reference builds the network from it), then pairs their lines by workload and
# dtype and prints the ratio ours/torch of the median times (<= 1.0 is the goal) and, for the
# training step, of the peak memory.
#
# Usage: tools/gpu_bench.sh [--tiny] [--reps N] [--warmup N] [--sampling-steps N]
#                           [--only LIST] [--dtypes LIST] [--deadline SECONDS]
#                           [--out DIR] [--compile] [--profile] [--held-values LIST]
#                           OURS_BIN [OURS_BIN ...]
# Environment: PYTHON, the interpreter with torch, diffusers==0.42.1 and peft (default python3);
# CUDA_PATH, the CUDA toolkit our CUDA builds compile their kernels against (found if unset:
# see cuda_environment below).
#
# Order: two rounds, the goal's two workloads (step, train) first and then the others, each
# round the first build of ours, the reference (--dtypes, e.g. f16, limits its dtypes), then
# the other builds; then the profiles. In the first round ours runs each workload in a process
# of its own: a failure that takes CubeCL's device thread down (the device out of memory, a
# kernel that does not launch) ends the process, and so would lose the other step too; a
# failed UNet step runs once more with CIDM_ATTENTION_TENSOR_CORES=0 (cidm-kernels' f16
# attention then skips cubek's tensor-core candidates). --only (train,step,sample,ewa-weights,ewa,regional,
# attention,group-norm,layer-norm,geglu,conv,linear) limits both sides to those workloads.
# --deadline stops every run that would end past that many seconds from the start (and skips
# the ones after it), so a session with a time limit still gets the pairs of what finished
# (the lines are kept as they come), the UNet step's and the LoRA step's first.
#
# Output: the raw lines of both sides, then one line per pair:
#   pair NAME dtype=f16 cidm_ms=.. torch_ms=.. ratio=.. [cidm_mib=.. torch_mib=.. mem_ratio=..
#       ... torch_reserved_mib=.. mem_ratio_reserved=..] (ours against torch's peak allocation,
#       then against its allocator's peak reservation: ours reads its pool's reservation)
# then, per run of ours, its attention calls through the f16 autotune and on tensor cores:
#   attention cidm_1_0_step tensor_core=.. tuned=..
# Everything (lines, logs, JSON, the UNet config) is also kept in --out (default: a new
# temporary directory, printed at the end).
#
# --held-values LIST (e.g. 64,1024): last, the first build's attention records once more
# under each CIDM_ATTENTION_HELD_VALUES (the most f32 values of rows one GPU thread of the
# attention kernels holds before a row is split over more threads; 128 by default, 1024
# splits no row), each record of ours against its time in the run above:
#   held attn_q1024_k1024_d80 dtype=f16 default_ms=.. held64_ms=.. ratio=..
# (kept in --out as held.txt).
#
# --profile: then profiles one repetition of the LoRA step and of the UNet step on both sides
# (ours with CubeCL's profiler, the reference with torch.profiler; after --warmup untimed
# runs) and prints, per build, `gpu_bench profile`'s comparison part by part:
#   profile NAME dtype=f16 part=conv cidm_ms=.. cidm_calls=.. torch_ms=.. torch_calls=.. ratio=..
#   top cidm|torch NAME dtype=f16 rank=1 ms=.. calls=.. share=..% name="..."
# (kept in --out as profile.txt, with both sides' raw profiles under profile/).
set -euo pipefail

config=sd15
reps=10
warmup=3
steps=50
out=""
only=()
dtypes=()
deadline=""
compile=()
profile=0
held_values=()
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) config=tiny ;;
        --reps) reps="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --sampling-steps) steps="$2"; shift ;;
        --only) IFS=, read -r -a only <<< "$2"; shift ;;
        --dtypes) dtypes=(--dtypes "$2"); shift ;;
        --deadline) deadline="$2"; shift ;;
        --out) out="$2"; shift ;;
        --compile) compile=(--compile) ;;
        --profile) profile=1 ;;
        --held-values) IFS=, read -r -a held_values <<< "$2"; shift ;;
        -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
        -*) echo "gpu_bench.sh: unknown option $1" >&2; exit 2 ;;
        *) bins+=("$1") ;;
    esac
    shift
done
if [ ${#bins[@]} -eq 0 ]; then
    echo "gpu_bench.sh: give the path of at least one built gpu_bench binary" >&2
    exit 2
fi
if [ -n "$deadline" ] && ! [[ "$deadline" =~ ^[0-9]+$ ]]; then
    echo "gpu_bench.sh: --deadline takes whole seconds" >&2
    exit 2
fi
for held in "${held_values[@]}"; do
    if ! [[ "$held" =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu_bench.sh: --held-values takes whole numbers from 1 on, comma-separated" >&2
        exit 2
    fi
done
for i in "${!bins[@]}"; do
    bin="${bins[$i]}"
    [ -x "$bin" ] || { echo "gpu_bench.sh: $bin is not an executable" >&2; exit 2; }
    # Absolute: the profiling runs start in directories of their own.
    bins[$i]="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
done
python="${PYTHON:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"
[ -n "$out" ] || out="$(mktemp -d)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
status=0

# Runs a command, under `timeout` with the seconds left before --deadline; refuses to start
# one with under 20 seconds left (returns 124, as timeout does).
bounded() {
    if [ -z "$deadline" ]; then
        "$@"
        return
    fi
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "# skipped (deadline): $*" >&2
        return 124
    fi
    timeout --kill-after=10 "$left" "$@"
}

# CubeCL's CUDA runtime opens NVRTC by name (libnvrtc.so, libnvrtc.so.13, .12, ...), so only
# where the loader finds it, and compiles its kernels against CUDA's headers under CUDA_PATH
# (default /usr/local/cuda). Where the loader's cache has no NVRTC, the folders of the CUDA
# toolkit and of PyTorch's CUDA wheels (site-packages/nvidia/*/lib) that hold one go on
# LD_LIBRARY_PATH; where /usr/local/cuda is missing, CUDA_PATH is set from nvcc's place or,
# without a toolkit, from the wheel folder that has cuda_fp16.h. Both only for our runs
# (ours_env, an `env` prefix), so that the reference loads PyTorch's libraries as it would
# alone; what was chosen goes in cuda_note, for the header.
ours_env=()
cuda_note=""
cuda_environment() {
    local toolkit="${CUDA_PATH:-}" dirs=() dir wheels
    if [ -z "$toolkit" ] && [ ! -d /usr/local/cuda ] && command -v nvcc > /dev/null; then
        toolkit="$(dirname "$(dirname "$(command -v nvcc)")")"
    fi
    wheels="$("$python" -c '
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for root in nvidia.__path__:
    for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(lib)' 2> /dev/null || true)"
    if ! ldconfig -p 2> /dev/null | grep -q 'libnvrtc\.so'; then
        for dir in "${toolkit:-/usr/local/cuda}/lib64" \
            "${toolkit:-/usr/local/cuda}/targets/x86_64-linux/lib" $wheels; do
            if compgen -G "$dir/libnvrtc.so*" > /dev/null; then
                dirs+=("$dir")
            fi
        done
        if [ ${#dirs[@]} -gt 0 ]; then
            ours_env+=("LD_LIBRARY_PATH=$(IFS=:; echo "${dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
        fi
    fi
    if [ -z "$toolkit" ] && [ ! -d /usr/local/cuda ]; then
        for dir in $wheels; do
            if [ -f "$(dirname "$dir")/include/cuda_fp16.h" ]; then
                toolkit="$(dirname "$dir")"
                break
            fi
        done
    fi
    if [ -n "$toolkit" ]; then
        ours_env+=("CUDA_PATH=$toolkit")
    fi
    if [ ${#ours_env[@]} -gt 0 ]; then
        ours_env=(env "${ours_env[@]}")
    fi
    cuda_note="# cuda for ours: CUDA_PATH=${toolkit:-/usr/local/cuda (default)}, nvrtc from"
    cuda_note+=" ${dirs[*]:-the ld.so cache (or nowhere)}"
}
cuda_environment

{
    echo "# date: $(date -u +%Y-%m-%dT%H:%MZ)"
    # The commit ours was built from: the pack's record (run.sh passes it on), else this
    # checkout's, which is that of binaries built here.
    echo "# ours built from: ${CIDM_BUILT_FROM:-$(git -C "$here" describe --always --dirty 2> /dev/null || echo unknown)}"
    echo "# config: $config, warmup $warmup, reps $reps, sampling steps $steps${only[*]:+, only ${only[*]}}"
    if command -v nvidia-smi > /dev/null; then
        echo "# gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
    fi
    echo "# cpu: $(grep -m 1 'model name' /proc/cpuinfo 2> /dev/null | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "$cuda_note"
    # Each package's version, or "missing" (without peft the reference writes its LoRA layers).
    "$python" -c '
import importlib, platform
def version(name):
    try:
        return importlib.import_module(name).__version__
    except ImportError:
        return "missing"
cuda = version("torch") != "missing" and importlib.import_module("torch").version.cuda
print("# python", platform.python_version(), "torch", version("torch"), "cuda", cuda,
      "diffusers", version("diffusers"), "peft", version("peft"))' || echo "# no python at $python"
} | tee "$out/header.txt"

"${ours_env[@]}" "${bins[0]}" --config "$config" --print-config > "$out/unet_config.json"

# The workloads of each round, comma-separated: those of --only (all by default) among the
# goal's two, then the others in their order. The reference's torch.compile step (--compile,
# or `compile` in --only) goes with the first round, on its side only.
[ ${#only[@]} -gt 0 ] || only=(step train sample ewa-weights ewa regional attention group-norm
    layer-norm geglu conv linear)
rounds=("" "")
for workload in "${only[@]}"; do
    case "$workload" in
        compile) compile=(--compile); continue ;;
        train|step) round=0 ;;
        *) round=1 ;;
    esac
    rounds[$round]+="${rounds[$round]:+,}$workload"
done

: > "$out/lines.txt"
# Build INDEX of ours on the workloads LIST of round ROUND (the first round's one process
# each, named after the workload).
ours() {
    local index="$1" list="$2" round="$3" bin="${bins[$(($1 - 1))]}" part parts
    if [ "$round" = 0 ]; then
        IFS=, read -r -a parts <<< "$list"
    else
        parts=("$list")
    fi
    for part in "${parts[@]}"; do
        local name="cidm_${index}_$round"
        [ "$round" != 0 ] || name+="_$part"
        echo "# ours ($bin): $part"
        local before
        before=$(wc -l < "$out/lines.txt")
        if ! bounded "${ours_env[@]}" "$bin" --config "$config" --warmup "$warmup" --reps "$reps" \
                --sampling-steps "$steps" --only "$part" --json "$out/$name.json" \
                2> "$out/$name.log" | tee -a "$out/lines.txt"; then
            status=1
            # The f16 UNet step's attention is autotuned against cubek's tensor-core kernels,
            # first run on this GPU here: should that fail, the goal's pair still comes, from
            # our own kernel alone (the pairing keeps a workload's last line with times). Not
            # for a build whose record says f32: the tensor cores only ever take f16.
            if [ "$part" = step ] \
                    && ! tail -n +"$((before + 1))" "$out/lines.txt" | grep -q ' dtype=f32 '; then
                echo "# ours ($bin): step again, CIDM_ATTENTION_TENSOR_CORES=0"
                bounded "${ours_env[@]}" env CIDM_ATTENTION_TENSOR_CORES=0 "$bin" \
                    --config "$config" --warmup "$warmup" --reps "$reps" --only step \
                    --json "$out/${name}_no_tensor_cores.json" \
                    2> "$out/${name}_no_tensor_cores.log" | tee -a "$out/lines.txt" || true
            fi
        fi
    done
}
for round in 0 1; do
    list="${rounds[$round]}"
    torch_list="$list"
    if [ "$round" = 0 ] && [ ${#compile[@]} -gt 0 ]; then
        torch_list+="${torch_list:+,}compile"
    fi
    if [ -n "$list" ]; then
        ours 1 "$list" "$round"
    fi
    if [ -n "$torch_list" ]; then
        echo "# torch: $torch_list"
        bounded "$python" "$here/gpu_bench_reference.py" --unet-config "$out/unet_config.json" \
            --warmup "$warmup" --reps "$reps" --sampling-steps "$steps" --only "$torch_list" \
            "${dtypes[@]}" "${compile[@]}" --json "$out/torch_$round.json" \
            2> "$out/torch_$round.log" | tee -a "$out/lines.txt" || status=1
    fi
    if [ -n "$list" ]; then
        for index in $(seq 2 ${#bins[@]}); do
            ours "$index" "$list" "$round"
        done
    fi
done

# awk: the value of KEY=value on a record line (after its side and name).
field_awk='
    function field(key,    i, kv) {
        for (i = 3; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == key) return substr($i, length(key) + 2)
        }
        return ""
    }'
echo "# ours / torch (median times; memory where both report it)"
awk "$field_awk"'
    ($1 == "cidm" || $1 == "torch") && field("median_ms") != "" {
        key = $2 " dtype=" field("dtype")
        if (!(key in seen)) { seen[key] = 1; order[n++] = key }
        ms[$1, key] = field("median_ms")
        mib[$1, key] = field("peak_mib")
        mem[$1, key] = field("mem")
        reserved[$1, key] = field("reserved_mib")
    }
    END {
        for (i = 0; i < n; i++) {
            key = order[i]
            if (!((("cidm", key) in ms) && (("torch", key) in ms))) continue
            line = sprintf("pair %s cidm_ms=%s torch_ms=%s ratio=%.2f", key,
                ms["cidm", key], ms["torch", key], ms["cidm", key] / ms["torch", key])
            if (mib["cidm", key] != "" && mib["torch", key] != "")
                line = line sprintf(" cidm_mib=%s torch_mib=%s mem_ratio=%.2f cidm_mem=%s torch_mem=%s",
                    mib["cidm", key], mib["torch", key], mib["cidm", key] / mib["torch", key],
                    mem["cidm", key], mem["torch", key])
            # Pool against pool: ours reads what its pool reserved, torch its allocator.
            if (mib["cidm", key] != "" && reserved["torch", key] != "")
                line = line sprintf(" torch_reserved_mib=%s mem_ratio_reserved=%.2f",
                    reserved["torch", key], mib["cidm", key] / reserved["torch", key])
            print line
        }
    }
' "$out/lines.txt" | tee "$out/pairs.txt"
grep -h 'error=' "$out/lines.txt" || true
# Per run of ours, the attention calls that went through the f16 autotune and those of them
# the tensor cores took: tuned with none on tensor cores means the autotune chose our kernel
# (or the device has none); none tuned, that no call reached it (f32, the switch off).
for json in "$out"/cidm_*.json; do
    [ -e "$json" ] || continue
    calls=$(grep -oE '"attention_(tuned|tensor_core)_calls": [0-9]+' "$json" \
        | sed -E 's/"attention_([a-z_]+)_calls": /\1=/' | tr '\n' ' ')
    echo "attention $(basename "$json" .json) ${calls% }"
done | tee "$out/attention_paths.txt"

if [ "$profile" = 1 ]; then
    echo "# kernel profiles: one repetition each, every kernel timed on the device"
    prof="$out/profile"
    mkdir -p "$prof"
    bounded "$python" "$here/gpu_bench_reference.py" --unet-config "$out/unet_config.json" \
        --only train,step "${dtypes[@]}" --warmup "$warmup" --reps 1 --profile-dir "$prof" \
        > "$prof/torch_lines.txt" 2> "$prof/torch.log" || status=1
    : > "$out/profile.txt"
    index=0
    for bin in "${bins[@]}"; do
        index=$((index + 1))
        for workload in train step; do
            # CubeCL reads cubecl.toml from the working directory: a kernel table per sync.
            dir="$prof/cidm_${index}_$workload"
            mkdir -p "$dir"
            printf '[profiling.logger]\nlevel = "basic"\nfile = "kernels.log"\nappend = false\n' \
                > "$dir/cubecl.toml"
            if ! (cd "$dir" && bounded "${ours_env[@]}" "$bin" --config "$config" --only "$workload" \
                    --warmup "$warmup" --reps 1 > record.txt 2> run.log); then
                echo "# profiling $workload with $bin failed or ran out of time (see $dir/run.log)"
                status=1
                continue
            fi
            if [ ! -f "$dir/kernels.log" ]; then
                echo "# $bin wrote no CubeCL profile (a CPU build has no CubeCL kernels)"
                continue
            fi
            name="$(awk '{ print $2; exit }' "$dir/record.txt")"
            dtype="$(sed -n 's/.* dtype=\([a-z0-9]*\).*/\1/p' "$dir/record.txt" | head -n 1)"
            "$bin" profile --workload "$name" --dtype "$dtype" --cidm "$dir/kernels.log" \
                --torch "$prof/torch_${name}_$dtype.json" | tee -a "$out/profile.txt" || status=1
        done
    done
fi
for held in "${held_values[@]}"; do
    echo "# ours (${bins[0]}): attention, CIDM_ATTENTION_HELD_VALUES=$held"
    bounded "${ours_env[@]}" env CIDM_ATTENTION_HELD_VALUES="$held" "${bins[0]}" \
        --config "$config" --warmup "$warmup" --reps "$reps" --only attention \
        --json "$out/held_$held.json" 2> "$out/held_$held.log" > "$out/held_$held.txt" \
        || status=1
    # The first file (the run above) gives each record's default time, the second this one.
    awk -v held="$held" "$field_awk"'
        $1 != "cidm" || $2 !~ /^attn_/ || field("median_ms") == "" { next }
        { key = $2 " dtype=" field("dtype") }
        FNR == NR { base[key] = field("median_ms"); next }
        key in base {
            printf "held %s default_ms=%s held%s_ms=%s ratio=%.2f\n", key, base[key], held,
                field("median_ms"), field("median_ms") / base[key]
        }
    ' "$out/lines.txt" "$out/held_$held.txt" | tee -a "$out/held.txt"
done
echo "# results in $out"
exit $status
