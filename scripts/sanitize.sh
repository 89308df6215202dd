#!/usr/bin/env bash
# `make sanitize`: the test suite under sanitizers, CPU only.
#   address: ASan + UBSan build (build-asan), then the unit and integration tests
#   thread:  TSan build (build-tsan), then the concurrency tests (executor, scheduler, event hub,
#            WatchJob, adapter registry, serving engine)
#   scripts/sanitize.sh [address|thread|all]
#   SANITIZE_SCOPE=quick: ASan over the LibTorch-free components' tests only (common, jobs,
#     data, tokenizer, train options, client, reflection): no test there links LibTorch.
#   SANITIZE_TARGETS="a_test b_test": ASan over exactly these test targets (a subset of the
#     full run when there is no time for the whole tree).
#   JOBS=N: build and test jobs (default: all cores).
# Run times on the 2-core development VM: docs/hardening.md, "Sanitizers".
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-all}"
SCOPE="${SANITIZE_SCOPE:-full}"
JOBS="${JOBS:-$(nproc)}"
SUPP="$PWD/scripts/sanitize"
export CCACHE_BASEDIR="$PWD"

QUICK_TARGETS="common_echo_test common_client_regex_test common_data_dir_test common_path_redact_test
  common_executor_test common_grpc_status_test common_log_test sqlite_db_test job_store_test
  dataset_store_test api_key_store_test scheduler_test job_events_test oft_dataset_test
  oft_chat_template_test oft_batching_test oft_sample_dataset_test tokenizer_test tokenizer_utf8_test
  tokenizer_regex_test tokenizer_normalizers_test tokenizer_pre_tokenizers_test
  tokenizer_bpe_model_test tokenizer_added_tokens_test tokenizer_post_processors_test
  tokenizer_decoders_test oft_train_options_test oft_lr_schedule_test oft_cpu_isa_test
  dist_launch_env_test
  client_job_file_test client_progress_test client_fake_server_test service_reflection_v1_test"
TSAN_TARGETS="common_executor_test scheduler_test service_event_hub_test service_watch_job_test
  serving_registry_test serving_engine_test"
# Abseil with TSan (thread mode): Debian's libabsl_*.so are not instrumented, so TSan never sees
# absl::Mutex acquire or release anything and reports every access under it as a race. The
# thread run builds Debian's own Abseil source (the installed version, `apt-get source` through
# a private apt configuration: no system change) with -fsanitize=thread as shared libraries with
# Debian's SONAMEs and flags (debian/rules: C++17, shared) into build-absl-tsan/ (kept), and runs
# the tests with LD_LIBRARY_PATH there. ABSL_TSAN=0 runs against Debian's libraries instead.
ABSL_TSAN="${ABSL_TSAN:-1}"
ABSL_TSAN_DIR="$PWD/build-absl-tsan"

# ctest regex of the tests of these targets: gtest_discover_tests names them "<target>.<Suite>.<Test>".
test_regex() { echo "^($(echo "$@" | tr -s ' \n' '|' | sed 's/|$//'))\\."; }

# Existing targets only (some names change as the tree is split).
existing() {
  local dir="$1"; shift
  local all; all=$(ninja -C "$dir" -t targets all 2>/dev/null | cut -d: -f1)
  for t in "$@"; do grep -qx "$t" <<<"$all" && echo "$t"; done
}

build() {  # build DIR MODE [targets...]
  local dir="$1" mode="$2"; shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOFT_CUDA=OFF \
    -DOFT_SANITIZE="$mode" >/dev/null
  if [ $# -gt 0 ]; then
    # shellcheck disable=SC2046
    cmake --build "$dir" -j "$JOBS" --target $(existing "$dir" "$@")
  else
    cmake --build "$dir" -j "$JOBS"
  fi
}

# Builds the instrumented Abseil libraries that the given binaries load; prints their directory.
absl_tsan_libs() {
  local pkg=libabsl20220623 ver dir="$ABSL_TSAN_DIR" src libs
  ver=$(dpkg-query -W -f='${Version}' "$pkg")
  local apt=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
             -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache" -o Debug::NoLocking=1)
  src="$dir/src/abseil-${ver%%-*}"
  if [ ! -f "$dir/src/.unpacked-$ver" ]; then
    rm -rf "$dir/src" && mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/src"
    echo "deb-src http://deb.debian.org/debian $(. /etc/os-release && echo "$VERSION_CODENAME") main" \
      >"$dir/apt/sources.list"
    apt-get "${apt[@]}" update >&2
    (cd "$dir/src" && apt-get "${apt[@]}" source "abseil=$ver" >&2)
    touch "$dir/src/.unpacked-$ver"
  fi
  # The Abseil libraries the binaries load, directly or not: libabsl_X.so.N is CMake target X.
  libs=$(for b in "$@"; do ldd "$b"; done | sed -n 's/^[[:space:]]*libabsl_\([a-z0-9_]*\)\.so\.[0-9]* =>.*/\1/p' | sort -u)
  cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
    -DBUILD_SHARED_LIBS=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" >&2
  # shellcheck disable=SC2086
  cmake --build "$dir/build" -j "$JOBS" --target $libs >&2
  mkdir -p "$dir/lib"
  find "$dir/build" -name 'libabsl_*.so.*' -exec cp -Pf {} "$dir/lib/" \;
  echo "$dir/lib"
}

status=0
if [ "$MODE" = address ] || [ "$MODE" = all ]; then
  start=$(date +%s)
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  if [ -n "${SANITIZE_TARGETS:-}" ]; then
    SCOPE="targets: $SANITIZE_TARGETS"
    # shellcheck disable=SC2086
    build build-asan address $SANITIZE_TARGETS
    # shellcheck disable=SC2086
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -R "$(test_regex $SANITIZE_TARGETS)") || status=1
  elif [ "$SCOPE" = quick ]; then
    # shellcheck disable=SC2086
    build build-asan address $QUICK_TARGETS
    # shellcheck disable=SC2086
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -R "$(test_regex $QUICK_TARGETS)") || status=1
  else
    build build-asan address
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -L 'unit|integration' -LE gpu --timeout 1800) || status=1
  fi
  echo "sanitize: address ($SCOPE) took $(( $(date +%s) - start ))s, status $status"
fi
if [ "$MODE" = thread ] || [ "$MODE" = all ]; then
  start=$(date +%s)
  export TSAN_OPTIONS="suppressions=$SUPP/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
  export OMP_NUM_THREADS=1
  # shellcheck disable=SC2086
  build build-tsan thread $TSAN_TARGETS
  run_env=()
  if [ "$ABSL_TSAN" = 1 ]; then
    # shellcheck disable=SC2046,SC2086
    absl_lib=$(absl_tsan_libs $(for t in $TSAN_TARGETS; do find build-tsan/tests -type f -name "$t"; done))
    run_env=(env "LD_LIBRARY_PATH=$absl_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  fi
  # shellcheck disable=SC2086
  (cd build-tsan && "${run_env[@]}" ctest --output-on-failure -j "$JOBS" -R "$(test_regex $TSAN_TARGETS)") || status=1
  echo "sanitize: thread took $(( $(date +%s) - start ))s, status $status"
fi
exit "$status"
