#!/usr/bin/env bash
# Proves the engine-only build path of GPU machines here: a clean build dir configured with
# -DOFT_ENGINE_ONLY=ON -DOFT_CUDA=ON using only the carried .debs (third_party_debs/, see
# scripts/fetch_gpu_debs.sh) and the venv's LibTorch, then compiled.
#   scripts/engine_only_check.sh [subset|full]      (BUILD_DIR=build-engine-check)
# subset (ctest engine_only_build): configure + compile a representative set of objects:
#   one per dependency (RE2 + OpenSSL in server/common, PCRE2 + nlohmann in the tokenizer,
#   Abseil everywhere), the CUDA kernels through nvcc (nf4_kernels.cu, gathered_rotate_kernels.cu),
#   LibTorch CUDA host code (ops_cuda.cc, nf4_cuda.cc), c10d + gloo headers (c10d_collective.cc),
#   and GoogleTest (self_check_test.cc).
#   The full compile takes ~30 min on 2 cores, too long for CI.
# full (make engine-check): configure + build every target of the engine-only tree, linked.
# "Clean environment": when this runs as root and `unshare -m` works, the system copies of
# these libraries (and of gRPC, protobuf, SQLite, prometheus-cpp) are hidden by empty mounts
# for the whole run, so nothing can come from /usr; otherwise the CMake cache is checked to
# point into the private root. Exit 0 ok, 1 failure, 77 skipped (no nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-subset}"
BUILD_DIR="${BUILD_DIR:-build-engine-check}"
NVCC="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
[ -x "$NVCC" ] || { echo "engine_only_check: no nvcc at $NVCC: skipped"; exit 77; }

# Hide the system copies (first pass re-executes itself in a private mount namespace).
HIDE_DIRS=(/usr/include/absl /usr/include/gtest /usr/include/gmock /usr/include/re2
           /usr/include/nlohmann /usr/include/openssl /usr/include/x86_64-linux-gnu/openssl
           /usr/lib/x86_64-linux-gnu/cmake /usr/lib/x86_64-linux-gnu/pkgconfig /usr/share/pkgconfig
           /usr/include/grpc /usr/include/grpcpp /usr/include/google/protobuf /usr/include/prometheus
           /usr/include/unicode /usr/include/gloo)
HIDE_FILES=(/usr/include/pcre2.h /usr/include/sqlite3.h)
if [ -z "${OFT_ENGINE_CHECK_INNER:-}" ] && [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
  export OFT_ENGINE_CHECK_INNER=1
  exec unshare -m bash -c '
    for d in '"${HIDE_DIRS[*]}"'; do [ -d "$d" ] && mount -t tmpfs none "$d"; done
    for f in '"${HIDE_FILES[*]}"'; do [ -f "$f" ] && mount --bind /dev/null "$f"; done
    exec "$0" "$@"' "$0" "$@"
fi
HIDDEN=no
[ -n "${OFT_ENGINE_CHECK_INNER:-}" ] && HIDDEN=yes
echo "engine_only_check: system copies hidden: $HIDDEN"

rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR"
export BUILD_DIR
# shellcheck source=scripts/engine_deps_env.sh
source scripts/engine_deps_env.sh
engine_deps_setup

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOFT_ENGINE_ONLY=ON -DOFT_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DOFT_VENV="$PWD/.venv" "${ENGINE_CMAKE_ARGS[@]}" \
  >"$BUILD_DIR/configure.log" 2>&1 || { tail -n 40 "$BUILD_DIR/configure.log"; exit 1; }
grep -q "CUDA kernels: ON" "$BUILD_DIR/configure.log" || { echo "CUDA kernels are not ON"; exit 1; }

# Every dependency the configure found comes from the private root; the service stack is absent.
fail=0
for var in absl_DIR GTest_DIR nlohmann_json_DIR OPENSSL_INCLUDE_DIR PKG_CONFIG_EXECUTABLE; do
  val="$(grep -E "^$var:" "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2-)"
  case "$val" in
    "$DEPS_ROOT"*) ;;
    *) echo "engine_only_check: $var=$val is not under $DEPS_ROOT"; fail=1 ;;
  esac
done
for pc in RE2 PCRE2; do
  inc="$(grep -E "^${pc}_INCLUDEDIR:INTERNAL=" "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2-)"
  case "$inc" in "$DEPS_ROOT"*) ;; *) echo "engine_only_check: $pc from '$inc'"; fail=1 ;; esac
done
if grep -qiE "^(gRPC_DIR|Protobuf_INCLUDE_DIR|prometheus-cpp_DIR|SQLite3_INCLUDE_DIR):[A-Z]+=/" "$BUILD_DIR/CMakeCache.txt"; then
  echo "engine_only_check: the service stack was looked up:"; grep -iE "^(gRPC|Protobuf|prometheus|SQLite)" "$BUILD_DIR/CMakeCache.txt"; fail=1
fi
[ "$fail" = 0 ] || exit 1

if [ "$MODE" = full ]; then
  cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}"
else
  OBJECTS=(
    server/common/CMakeFiles/oft_common.dir/client_regex.cc.o
    server/common/CMakeFiles/oft_common.dir/file_util.cc.o
    server/dist/CMakeFiles/oft_dist.dir/c10d_collective.cc.o
    server/model/CMakeFiles/oft_tokenizer.dir/tokenizer.cc.o
    server/quant/CMakeFiles/oft_quant.dir/cuda/nf4_kernels.cu.o
    server/oft/CMakeFiles/oft_oft.dir/cuda/gathered_rotate_kernels.cu.o
    server/quant/CMakeFiles/oft_quant.dir/cuda/nf4_cuda.cc.o
    server/oft/CMakeFiles/oft_oft.dir/cuda/ops_cuda.cc.o
    tests/oft/CMakeFiles/oft_self_check_test.dir/self_check_test.cc.o
  )
  ninja -C "$BUILD_DIR" -j "${JOBS:-2}" "${OBJECTS[@]}"
fi
echo "engine_only_check: $MODE OK (engine-only, CUDA ON, carried .debs from $DEPS_ROOT)"
