#!/usr/bin/env bash
# GPU check: one call on a GPU machine verifies the engine on CUDA (docs/gpu.md):
#   build      engine-only build (-DOFT_ENGINE_ONLY=ON -DOFT_CUDA=ON), carried .debs if present
#   kernels    ctest -L gpu (CUDA kernels against the reference, per dtype)
#   selfcheck  the startup kernel self-check on cuda:0 in mode on (oft_train --cuda_kernels=on)
#   train      60 steps of models/default on CUDA, fp32 and bf16 autocast, against the CPU
#              run of the same seed (loss per step: fp32 rel <= 2e-3, bf16 rel <= 5e-2)
#   qoft       the same with the base in NF4 (QOFT), CUDA fp32 against CPU (rel <= 2e-3)
#   serving    engine on cuda:0: 8 adapters mixed == each alone, unmerged == merged (fp32);
#              serve_bench on CUDA (base, one adapter, 8 adapters mixed; bf16 like the server)
#   bench      oft_layer_bench 4096/32 bf16 at 512/2048/8192 tokens, train_step_bench at the
#              ~1.1B shape, model_bench; every timer stops after a device synchronisation
# Ends with one summary table; writes results.json and every log into $OUT (when set) or
# $BUILD_DIR/gpu-check. Exit status non-zero if any step failed.
#
# Needs: an NVIDIA GPU, nvcc (/usr/local/cuda/bin/nvcc or CUDACXX), cmake >= 3.25, ninja or
# make, a CUDA-enabled torch wheel (OFT_VENV; default .venv if it holds libtorch_cuda.so,
# else the prefix of `python3`, e.g. the lent machines' /opt/torch/.venv), and either the
# engine's Debian libraries or third_party_debs/ (scripts/fetch_gpu_debs.sh) carried along.
#
# Usage: scripts/gpu_check.sh
#   BUILD_DIR=build-gpu JOBS=$(nproc) OFT_VENV=...  as above
#   GPU_CHECK_DRY_RUN=1   no GPU: every GPU step prints its command and is "skipped (dry
#                         run)"; CPU reference runs still run. Implied when nvidia-smi
#                         finds no GPU.
#   GPU_CHECK_SKIP_BUILD=1  use the binaries already in $BUILD_DIR
#   TRAIN_THREADS=8         CPU threads of the CPU reference training runs
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD_DIR="${BUILD_DIR:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
RESULTS_DIR="${OUT:-$BUILD_DIR/gpu-check}"
mkdir -p "$RESULTS_DIR" || exit 1
RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)"
SUMMARY="$RESULTS_DIR/summary.tsv"
: >"$SUMMARY"
START=$(date +%s)

die() { echo "gpu_check: $*" >&2; exit 1; }

GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
DRY_RUN="${GPU_CHECK_DRY_RUN:-}"
if [ -z "$GPU_NAME" ]; then GPU_NAME="(no GPU found)"; DRY_RUN=1; fi

# record NAME STATUS DETAIL SECONDS
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"; }

# run_step NAME GPU(0|1) DETAIL-ON-SUCCESS CMD... : runs CMD with its output in NAME.log.
run_step() {
  local name="$1" gpu="$2" detail="$3"; shift 3
  local log="$RESULTS_DIR/$name.log" t0 rc
  if [ "$gpu" = 1 ] && [ -n "$DRY_RUN" ]; then
    echo "gpu_check: [dry run] $name: $*"
    printf '%s\n' "$*" >"$log"
    record "$name" "skipped (dry run)" "" 0
    return 0
  fi
  echo "gpu_check: $name: $*"
  t0=$(date +%s)
  "$@" >"$log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    record "$name" ok "$detail" $(( $(date +%s) - t0 ))
  else
    tail -n 15 "$log"
    record "$name" "FAILED (rc=$rc)" "see $log" $(( $(date +%s) - t0 ))
  fi
  return $rc
}

# ---- torch wheel and dependencies ---------------------------------------------------------
if [ -z "${OFT_VENV:-}" ]; then
  if compgen -G ".venv/lib/python3*/site-packages/torch/lib/libtorch_cuda.so" >/dev/null; then
    OFT_VENV="$PWD/.venv"
  else
    OFT_VENV="$(python3 -c 'import sys; print(sys.prefix)' 2>/dev/null)" ||
      die "no .venv with CUDA torch and no python3 to find one; set OFT_VENV"
  fi
fi
compgen -G "$OFT_VENV/lib/python3*/site-packages/torch/lib/libtorch_cuda.so" >/dev/null ||
  die "no CUDA-enabled torch under $OFT_VENV (set OFT_VENV)"
PY="$OFT_VENV/bin/python3"
[ -x "$PY" ] || PY=python3
echo "gpu_check: torch from $OFT_VENV; GPU: $GPU_NAME; results in $RESULTS_DIR"

ENGINE_CMAKE_ARGS=()
if compgen -G "third_party_debs/*.deb" >/dev/null; then
  mkdir -p "$BUILD_DIR"
  export BUILD_DIR
  # shellcheck source=scripts/engine_deps_env.sh
  source scripts/engine_deps_env.sh
  engine_deps_setup || die "cannot unpack third_party_debs"
fi

# ---- build ---------------------------------------------------------------------------------
TARGETS=(oft_cuda_ops_test oft_gathered_rotate_cuda_test nf4_cuda_test oft_self_check_test
         serving_engine_device_test
         oft_train_bin oft_generate oft_layer_bench model_bench train_step_bench serve_bench
         dp_scaling)
GENERATOR=(-G Ninja)
command -v ninja >/dev/null || GENERATOR=(-G "Unix Makefiles")
build() {
  cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DOFT_ENGINE_ONLY=ON \
    -DOFT_CUDA=ON -DOFT_VENV="$OFT_VENV" "${ENGINE_CMAKE_ARGS[@]}" &&
    cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"
}
if [ -n "${GPU_CHECK_SKIP_BUILD:-}" ]; then
  record build "skipped (GPU_CHECK_SKIP_BUILD)" "binaries of $BUILD_DIR" 0
elif ! run_step build 0 "engine-only, CUDA ON" build; then
  DRY_RUN="${DRY_RUN:-build failed}"
fi
BIN_TRAIN="$BUILD_DIR/tools/oft_train"
BENCH="$BUILD_DIR/bench"

# ---- kernel tests and self-check -----------------------------------------------------------
gpu_ctest() {  # LOG-NAME CTEST-ARGS...
  local log="$RESULTS_DIR/$1.log"; shift
  (cd "$BUILD_DIR" && ctest "$@" --output-on-failure --timeout 600) || return 1
  # A skipped test means the binary saw no GPU: not a pass here.
  ! grep -q "\*\*\*Skipped" "$log"
}
run_step kernels 1 "ctest -L gpu" gpu_ctest kernels -L gpu -E '^serving_engine_cuda_test$'
# The serving engine on cuda:0 (fp32, TF32 off, greedy): a mixed 8-adapter batch equals each
# request alone, and unmerged serving equals the merged export (tests/serving/engine_device_test.cc).
run_step serving_equiv 1 "8 adapters mixed == alone; unmerged == merged" \
  gpu_ctest serving_equiv -R '^serving_engine_cuda_test$'

TRAIN_ARGS=(--model_dir=models/default --train=data/sample/train.jsonl --max_steps=60
            --seed=1234 --threads="${TRAIN_THREADS:-8}")
train_run() {  # NAME DEVICE EXTRA...
  local name="$1" device="$2"; shift 2
  "$BIN_TRAIN" "${TRAIN_ARGS[@]}" --device="$device" --out="$RESULTS_DIR/adapter-$name" "$@" \
    >"$RESULTS_DIR/$name.events.jsonl"
}
selfcheck() {
  "$BIN_TRAIN" "${TRAIN_ARGS[@]}" --max_steps=1 --device=cuda:0 --cuda_kernels=on \
    --out="$RESULTS_DIR/adapter-selfcheck" >/dev/null || return 1
}
run_step selfcheck 1 "all kernels on cuda:0 pass (mode on)" selfcheck

# ---- training on CUDA against the CPU run of the same seed ----------------------------------
compare_losses() {  # REF RUN REL_TOL
  "$PY" - "$RESULTS_DIR/$1.events.jsonl" "$RESULTS_DIR/$2.events.jsonl" "$3" <<'EOF'
import json, sys
def losses(p):
    return [e["loss"] for e in map(json.loads, open(p)) if e.get("kind") == "step"]
ref, run, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
assert len(ref) == len(run) == 60, f"steps: cpu {len(ref)}, cuda {len(run)}"
worst = max(abs(a - b) / abs(a) for a, b in zip(ref, run))
print(f"max relative loss difference over 60 steps: {worst:.2e} (tolerance {tol:g}); "
      f"final loss cpu {ref[-1]:.4f} cuda {run[-1]:.4f}")
sys.exit(0 if worst <= tol else 1)
EOF
}
run_step train_cpu_fp32 0 "CPU reference, 60 steps" train_run cpu_fp32 cpu --dtype=fp32
run_step train_cuda_fp32 1 "" train_run cuda_fp32 cuda:0 --dtype=fp32 --bf16_autocast=false
run_step train_cuda_bf16 1 "" train_run cuda_bf16 cuda:0 --dtype=fp32 --bf16_autocast=true
run_step compare_fp32 1 "rel <= 2e-3" compare_losses cpu_fp32 cuda_fp32 2e-3
run_step compare_bf16 1 "rel <= 5e-2" compare_losses cpu_fp32 cuda_bf16 5e-2
run_step train_cpu_qoft 0 "CPU reference, NF4 base" train_run cpu_qoft cpu --dtype=fp32 --nf4
run_step train_cuda_qoft 1 "" train_run cuda_qoft cuda:0 --dtype=fp32 --nf4 --bf16_autocast=false
run_step compare_qoft 1 "rel <= 2e-3" compare_losses cpu_qoft cuda_qoft 2e-3

# ---- benchmarks (JSON lines; each binary syncs the device before stopping a timer) ---------
run_step bench_layer 1 "4096/32 bf16" \
  "$BENCH/oft_layer_bench" --device=cuda --dtype=bf16 --d=4096 --block=32 --tokens=512,2048,8192
run_step bench_train_step 1 "~1.1B shape, bf16" "$BENCH/train_step_bench" --device=cuda --dtype=bf16
run_step bench_model 1 "models/default" "$BENCH/model_bench" --model_dir=models/default --device=cuda
run_step bench_serve 1 "8 adapters mixed" "$BENCH/serve_bench" --device=cuda --requests=8 --tokens=64
# Data parallel over NCCL (issue 12): 1 vs 2 GPUs, target >= 1.8x at 2; with one GPU, one NCCL
# rank (the path runs, no scaling number).
GPU_COUNT=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
DP_RANKS=1; [ "${GPU_COUNT:-0}" -ge 2 ] && DP_RANKS=1,2
run_step bench_dp 1 "NCCL ranks $DP_RANKS" "$BENCH/dp_scaling" --device=cuda --ranks="$DP_RANKS" \
  --threads=4 --batch_size=32 --max_seq_len=512 --steps=40 --warmup=5

# ---- summary ---------------------------------------------------------------------------------
TOTAL=$(( $(date +%s) - START ))
"$PY" - "$SUMMARY" "$RESULTS_DIR" "$GPU_NAME" "$OFT_VENV" "$TOTAL" "${DRY_RUN:-}" <<'EOF'
import json, os, sys
summary, out, gpu, venv, total, dry = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(summary) if l.strip()]
benches = {}
for name in ("bench_layer", "bench_train_step", "bench_model", "bench_serve", "bench_dp"):
    p = os.path.join(out, name + ".log")
    if os.path.exists(p):
        benches[name] = [json.loads(l) for l in open(p) if l.strip().startswith("{")]
result = {"gpu": gpu, "torch_venv": venv, "seconds": int(total), "dry_run": bool(dry),
          "steps": [{"step": r[0], "status": r[1], "detail": r[2], "seconds": int(r[3])}
                    for r in rows],
          "benchmarks": benches}
json.dump(result, open(os.path.join(out, "results.json"), "w"), indent=1)
print("\n================ gpu_check summary ================")
print(f"GPU: {gpu}   torch: {venv}   total: {total} s" + ("   (DRY RUN: GPU steps skipped)" if dry else ""))
print(f"{'step':<22} {'status':<22} {'s':>5}  detail")
for r in rows:
    print(f"{r[0]:<22} {r[1]:<22} {r[3]:>5}  {r[2]}")
print(f"results: {os.path.join(out, 'results.json')}")
EOF
! grep -q "FAILED" "$SUMMARY"
