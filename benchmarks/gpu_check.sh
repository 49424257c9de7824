#!/usr/bin/env bash
# The GPU check: goals 1-4 of docs/performance.md on a GPU (fp32 and bf16, with and without torch.compile), then
# a 96^3 / feature-size-48 pre-training run through `p2g pretrain`. Numbers, the card's name and the versions go
# to one file. The whole check stays under 8 minutes: every part runs under the time that is left.
#
#   benchmarks/gpu_check.sh [--out FILE] [--budget SECONDS]    # on a GPU machine, from the repository root
#   benchmarks/gpu_check.sh --dry-run [--out FILE]             # the same parts on the CPU at tiny sizes (CI)
#
# PYTHON picks the interpreter (default .venv/bin/python, else python3).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out="gpu_check-$(date -u +%Y%m%d-%H%M).txt"
budget=
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out) out="$2"; shift ;;
        --budget) budget="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (use --dry-run, --out FILE, --budget SECONDS)" >&2; exit 2 ;;
    esac
    shift
done
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
# the CPU of a CI machine is slower and shared: the dry run gets three times the time per part
scale=$([ $dry -eq 1 ] && echo 3 || echo 1)
[ -n "$budget" ] || budget=$((470 * scale))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
failed=0

if [ $dry -eq 1 ]; then
    # one thread: on a shared CI machine two OpenMP threads wait on each other whenever one is descheduled
    export OMP_NUM_THREADS=1
    device=cpu; size=tiny; repeats=1; predict_repeats=1; precisions="fp32"; compile_pass=""
    predict_shape="--shape 64 64 64"; loop_steps="--loop-steps 2"; preset="$root/configs/tiny-cpu.yaml"; demo_spacing=""
    card="dry run on the CPU: $("$py" -c 'import platform; print(platform.processor() or platform.machine())')"
else
    "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "gpu_check.sh: no CUDA device is visible to $py; run with --dry-run on a CPU" >&2; exit 2; }
    device=cuda; size=paper; repeats=3; predict_repeats=2; precisions="fp32 bf16"; compile_pass="--compile"
    predict_shape=""; loop_steps=""; preset="$root/configs/brats23-transfer.yaml"; demo_spacing="--spacing 1.5"
    card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1)
    [ -n "$card" ] || card=$("$py" -c 'import torch; print(torch.cuda.get_device_name(0))')
fi

# section TITLE SECONDS COMMAND...: run under min(SECONDS, time left), output into the file
section() {
    local title=$1 limit=$(($2 * scale)); shift 2
    local left=$((budget - (SECONDS - start)))
    [ "$limit" -gt "$left" ] && limit=$left
    {
        echo
        echo "### $title"
        if [ "$limit" -le 5 ]; then
            echo "skipped: the ${budget} s budget is spent"
        else
            timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | grep -v '^USDT'
            local rc=${PIPESTATUS[0]}
            [ "$rc" -eq 0 ] || { echo "exit $rc (124: stopped at the ${limit} s limit)"; failed=$((failed + 1)); }
        fi
    } >>"$out"
}

{
    echo "# p2gmed GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "card: $card"
    "$py" -c 'import torch, monai, platform; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, MONAI {monai.__version__}, Python {platform.python_version()}")'
    echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "mode: $([ $dry -eq 1 ] && echo dry-run || echo full), budget ${budget} s"
} >"$out"

bench="$root/benchmarks"

# a real run: built-in brains, the preset's ROI and feature size, a few steps through p2g pretrain
run_pretrain() {
    "$py" -m p2gmed data make-demo --out "$work/brain" --kind brain --subjects 4 $demo_spacing >/dev/null || return 1
    local steps=$([ $dry -eq 1 ] && echo 2 || echo 6)
    "$py" -m p2gmed pretrain --data "$work/brain" --out "$work/run" --config "$preset" --max-steps $steps \
        --set train.device=$device --set train.checkpoint_every=0 --set data.val_fraction=0 \
        >/dev/null 2>"$work/pretrain.err" || { tail -5 "$work/pretrain.err"; return 1; }
    "$py" - "$work/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
print(f"{len(rows)} steps; first {rows[0]['seconds']:.2f} s (warm-up), then median "
      f"{sorted(later)[len(later) // 2]:.2f} s/step; loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}")
PY
}
export -f run_pretrain
export py work dry demo_spacing preset device

# the parts in order of importance, so that a slow card loses the least useful ones to the budget
section "1+3. pre-training step vs plain MONAI, FLOP/s ($size)" 90 \
    "$py" "$bench/bench_step.py" --device $device --size $size --repeats $repeats --precision $precisions
section "5. p2g pretrain, $(basename "$preset")" 90 bash -c run_pretrain
section "2. p2g predict vs MONAI sliding window ($size)" 110 \
    "$py" "$bench/bench_predict.py" --device $device --size $size --repeats $predict_repeats $predict_shape
section "4. data loading fraction ($size)" 50 \
    "$py" "$bench/bench_data.py" --device $device --size $size --repeats $repeats $loop_steps
section "4. peak memory, activation checkpointing ($size)" 50 \
    "$py" "$bench/bench_memory.py" --device $device --size $size
if [ -n "$compile_pass" ]; then
    section "1+3. the step with torch.compile" 120 \
        "$py" "$bench/bench_step.py" --device $device --size $size --repeats $repeats --precision $precisions --compile
fi

echo >>"$out"
echo "total: $((SECONDS - start)) s, $failed part(s) failed" >>"$out"
echo "gpu_check.sh: wrote $out ($((SECONDS - start)) s, $failed part(s) failed)"
[ $failed -eq 0 ]
