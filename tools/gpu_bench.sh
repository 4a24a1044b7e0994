#!/usr/bin/env bash
# Issue 8's side-by-side benchmark: runs our gpu_bench example binary (one or more builds, e.g.
# `--features cuda,f16` and `--features cuda`) and the PyTorch reference
# (tools/gpu_bench_reference.py) on the same machine in one go, on the same UNet config (ours
# prints it, the reference builds the network from it), then pairs their lines by workload and
# dtype and prints the ratio ours/torch of the median times (<= 1.0 is the goal) and, for the
# training step, of the peak memory.
#
# Usage: tools/gpu_bench.sh [--tiny] [--reps N] [--warmup N] [--sampling-steps N]
#                           [--out DIR] [--compile] OURS_BIN [OURS_BIN ...]
# Environment: PYTHON, the interpreter with torch, diffusers==0.42.1 and peft (default python3).
#
# Output: the raw lines of both sides, then one line per pair:
#   pair NAME dtype=f16 cidm_ms=.. torch_ms=.. ratio=.. [cidm_mib=.. torch_mib=.. mem_ratio=..]
# Everything (lines, logs, JSON, the UNet config) is also kept in --out (default: a new
# temporary directory, printed at the end).
set -euo pipefail

config=sd15
reps=10
warmup=3
steps=50
out=""
compile=()
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) config=tiny ;;
        --reps) reps="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --sampling-steps) steps="$2"; shift ;;
        --out) out="$2"; shift ;;
        --compile) compile=(--compile) ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "gpu_bench.sh: unknown option $1" >&2; exit 2 ;;
        *) bins+=("$1") ;;
    esac
    shift
done
if [ ${#bins[@]} -eq 0 ]; then
    echo "gpu_bench.sh: give the path of at least one built gpu_bench binary" >&2
    exit 2
fi
for bin in "${bins[@]}"; do
    [ -x "$bin" ] || { echo "gpu_bench.sh: $bin is not an executable" >&2; exit 2; }
done
python="${PYTHON:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"
[ -n "$out" ] || out="$(mktemp -d)"
mkdir -p "$out"

{
    echo "# date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# config: $config, warmup $warmup, reps $reps, sampling steps $steps"
    if command -v nvidia-smi > /dev/null; then
        echo "# gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
    fi
    echo "# cpu: $(grep -m 1 'model name' /proc/cpuinfo 2> /dev/null | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    "$python" -c 'import torch, diffusers, peft; print("# torch", torch.__version__, "diffusers", diffusers.__version__, "peft", peft.__version__, "cuda", torch.version.cuda)'
} | tee "$out/header.txt"

"${bins[0]}" --config "$config" --print-config > "$out/unet_config.json"

status=0
: > "$out/lines.txt"
index=0
for bin in "${bins[@]}"; do
    index=$((index + 1))
    echo "# ours ($bin)"
    "$bin" --config "$config" --warmup "$warmup" --reps "$reps" --sampling-steps "$steps" \
        --json "$out/cidm_$index.json" 2> "$out/cidm_$index.log" | tee -a "$out/lines.txt" || status=1
done
echo "# torch"
"$python" "$here/gpu_bench_reference.py" --unet-config "$out/unet_config.json" \
    --warmup "$warmup" --reps "$reps" --sampling-steps "$steps" "${compile[@]}" \
    --json "$out/torch.json" 2> "$out/torch.log" | tee -a "$out/lines.txt" || status=1

echo "# ours / torch (median times; memory where both report it)"
awk '
    function field(key,    i, kv) {
        for (i = 3; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == key) return substr($i, length(key) + 2)
        }
        return ""
    }
    ($1 == "cidm" || $1 == "torch") && field("median_ms") != "" {
        key = $2 " dtype=" field("dtype")
        if (!(key in seen)) { seen[key] = 1; order[n++] = key }
        ms[$1, key] = field("median_ms")
        mib[$1, key] = field("peak_mib")
        mem[$1, key] = field("mem")
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
            print line
        }
    }
' "$out/lines.txt" | tee "$out/pairs.txt"
grep -h 'error=' "$out/lines.txt" || true
echo "# results in $out"
exit $status
