#!/usr/bin/env bash
# GPU check: builds the CUDA kernels (-DOFT_CUDA=ON), runs the GPU-labelled tests
# (ctest -L gpu: tests/oft/cuda_ops_test.cc, gathered_rotate_cuda_test.cc and
# tests/quant/nf4_cuda_test.cc, CUDA vs the CPU reference) and, if it builds,
# the layer benchmark on the GPU; ends with one summary table.
#
# What it expects (and what it does not do):
#   - An NVIDIA GPU, nvcc (/usr/local/cuda/bin/nvcc or CUDACXX), CMake >= 3.25, ninja, a C++20
#     compiler.
#   - A CUDA-enabled torch wheel. OFT_VENV picks its virtual environment (default: .venv if
#     it holds torch/lib/libtorch_cuda.so, else the prefix of the `python3` on PATH; on the
#     lent H100/H200 machines that is the machine's own PyTorch 2.11 cu130,
#     /opt/torch/.venv).
#   - It configures with -DOFT_KERNELS_ONLY=ON, which needs only Abseil, GoogleTest and
#     OpenSSL besides LibTorch (scripts/fetch_gpu_debs.sh downloads exactly those .debs). The lent GPU
#     machines have none of them and nothing can be fetched there. If they are missing from
#     the system, copy the .debs into third_party_debs/ (git-ignored; `apt-get download`
#     on a Debian 12 machine, together with their runtime library packages) and carry that
#     folder: they are unpacked with `dpkg-deb -x` into $BUILD_DIR/deps-root (never into /),
#     which is added to CMake's, pkg-config's and the loader's search paths. This is
#     best effort: Debian 12 builds of those libraries on another distribution can still
#     fail to link, and the script then stops at the configure or build step and says so.
#   - It builds only the targets it runs (the three gpu tests, oft_layer_bench), not the tree.
#
# Usage: scripts/gpu_check.sh            (BUILD_DIR=build-gpu JOBS=$(nproc) OFT_VENV=...)
# Exit status: non-zero if configure, build or any GPU test fails; a missing or failing
# benchmark is reported in the table but does not fail the check.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD_DIR="${BUILD_DIR:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
LOG_DIR="$BUILD_DIR/gpu-check-logs"
mkdir -p "$LOG_DIR"

die() { echo "gpu_check: $*" >&2; exit 1; }

command -v cmake >/dev/null || die "cmake not found"
GENERATOR=(-G Ninja)
command -v ninja >/dev/null || GENERATOR=(-G "Unix Makefiles")
if command -v nvidia-smi >/dev/null; then
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
else
  GPU_NAME="(nvidia-smi not found)"
fi

# The torch wheel.
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
echo "gpu_check: torch from $OFT_VENV; GPU: $GPU_NAME"

# Carried Debian packages, unpacked into a private root.
CMAKE_EXTRA=()
if compgen -G "third_party_debs/*.deb" >/dev/null; then
  DEPS_ROOT="$PWD/$BUILD_DIR/deps-root"
  mkdir -p "$DEPS_ROOT"
  for deb in third_party_debs/*.deb; do dpkg-deb -x "$deb" "$DEPS_ROOT" || die "cannot unpack $deb"; done
  MULTIARCH="usr/lib/x86_64-linux-gnu"
  export PKG_CONFIG_SYSROOT_DIR="$DEPS_ROOT"
  export PKG_CONFIG_PATH="$DEPS_ROOT/$MULTIARCH/pkgconfig:$DEPS_ROOT/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$DEPS_ROOT/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$DEPS_ROOT/usr;$DEPS_ROOT/$MULTIARCH/cmake"
                "-DOPENSSL_ROOT_DIR=$DEPS_ROOT/usr")
  echo "gpu_check: using $(find third_party_debs -maxdepth 1 -name "*.deb" | wc -l) carried .debs from $DEPS_ROOT"
fi

CONFIGURE=fail BUILD_TESTS=fail BUILD_BENCH=missing TESTS="not run" BENCH="not run"

echo "gpu_check: configuring $BUILD_DIR (OFT_CUDA=ON)"
if cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DOFT_CUDA=ON -DOFT_KERNELS_ONLY=ON \
     -DOFT_VENV="$OFT_VENV" "${CMAKE_EXTRA[@]}" >"$LOG_DIR/configure.log" 2>&1; then
  CONFIGURE=ok
else
  tail -n 40 "$LOG_DIR/configure.log"
fi

if [ "$CONFIGURE" = ok ]; then
  echo "gpu_check: building oft_cuda_ops_test oft_gathered_rotate_cuda_test nf4_cuda_test"
  if cmake --build "$BUILD_DIR" -j "$JOBS" --target oft_cuda_ops_test oft_gathered_rotate_cuda_test nf4_cuda_test >"$LOG_DIR/build.log" 2>&1; then
    BUILD_TESTS=ok
  else
    tail -n 40 "$LOG_DIR/build.log"
  fi
  # The benchmark is optional: build it if the target exists.
  if cmake --build "$BUILD_DIR" -j "$JOBS" --target oft_layer_bench >"$LOG_DIR/build_bench.log" 2>&1; then
    BUILD_BENCH=ok
  elif grep -q "unknown target" "$LOG_DIR/build_bench.log"; then
    BUILD_BENCH=missing
  else
    BUILD_BENCH=fail
  fi
fi

TEST_RC=1
if [ "$BUILD_TESTS" = ok ]; then
  echo "gpu_check: ctest -L gpu"
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 900) 2>&1 | tee "$LOG_DIR/ctest.log"
  TEST_RC=${PIPESTATUS[0]}
  TESTS="$(grep -E 'tests passed|tests failed' "$LOG_DIR/ctest.log" | tail -n1)"
  [ -n "$TESTS" ] || TESTS="no summary (rc=$TEST_RC)"
  # Skipped tests mean the binary saw no GPU: that is not a pass here.
  if grep -q "\*\*\*Skipped" "$LOG_DIR/ctest.log"; then
    TESTS="$TESTS; SKIPPED tests: no CUDA device visible?"
    TEST_RC=1
  fi
fi

BENCH_BIN="$BUILD_DIR/bench/oft_layer_bench"
if [ -x "$BENCH_BIN" ]; then
  echo "gpu_check: $BENCH_BIN --device=cuda"
  if "$BENCH_BIN" --device=cuda >"$LOG_DIR/bench.jsonl" 2>"$LOG_DIR/bench.err"; then
    BENCH=ok
  else
    BENCH="failed (see $LOG_DIR/bench.err)"
  fi
else
  BENCH="no binary ($BUILD_BENCH)"
fi

echo
echo "================ gpu_check summary ================"
printf '%-14s %s\n' "GPU" "$GPU_NAME" "torch" "$OFT_VENV" "configure" "$CONFIGURE" \
  "build tests" "$BUILD_TESTS" "ctest -L gpu" "$TESTS" "benchmark" "$BENCH"
if [ "$BENCH" = ok ]; then
  echo
  python3 - "$LOG_DIR/bench.jsonl" <<'EOF' || cat "$LOG_DIR/bench.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
cases = [r for r in rows if "impl" in r]
summ = {(r["dtype"], r["tokens"]): r for r in rows if r.get("summary")}
print(f"{'dtype':<6} {'tokens':>7} {'impl':<16} {'fwd+bwd ms':>11} {'extra peak MiB':>15}")
for r in cases:
    print(f"{r['dtype']:<6} {r['tokens']:>7} {r['impl']:<16} {r['fwd_bwd_ms']:>11.3f} "
          f"{r['extra_peak_bytes'] / 2**20:>15.1f}")
for (dt, t), s in summ.items():
    print(f"summary {dt} T={t}: weight/input-centric time "
          f"{s['weight_centric_over_input_centric_time']:.2f}x, input-centric/base "
          f"{s['input_centric_over_base_time']:.3f}x")
EOF
fi
echo "logs: $LOG_DIR"
[ "$CONFIGURE" = ok ] && [ "$BUILD_TESTS" = ok ] && [ "$TEST_RC" = 0 ]
