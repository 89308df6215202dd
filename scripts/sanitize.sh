#!/usr/bin/env bash
# `make sanitize`: the test suite under sanitizers, CPU only.
#   address: ASan + UBSan build (build-asan), then the unit and integration tests
#   thread:  TSan build (build-tsan), then the concurrency tests (scheduler, event hub, WatchJob,
#            executor, adapter registry, serving engine)
#   scripts/sanitize.sh [address|thread|all]    SANITIZE_SCOPE=quick: only the LibTorch-free
#   components' tests (common, jobs, data, tokenizer, safetensors, service event code)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-all}"
SCOPE="${SANITIZE_SCOPE:-full}"
JOBS="${JOBS:-$(nproc)}"
SUPP="$PWD/scripts/sanitize"
export CCACHE_BASEDIR="$PWD"

QUICK_TARGETS="common_echo_test common_client_regex_test common_data_dir_test common_executor_test
  common_grpc_status_test sqlite_db_test job_store_test dataset_store_test api_key_store_test
  scheduler_test oft_dataset_test oft_chat_template_test oft_batching_test tokenizer_test
  safetensors_test service_event_hub_test"
QUICK_REGEX='^(common_|sqlite_db_test|job_store_test|dataset_store_test|api_key_store_test|scheduler_test|oft_dataset_test|oft_chat_template_test|oft_batching_test|tokenizer_test|safetensors_test|service_event_hub_test)'
TSAN_TARGETS="common_executor_test scheduler_test service_event_hub_test service_watch_job_test
  serving_registry_test serving_engine_test"
TSAN_REGEX='^(common_executor_test|scheduler_test|service_event_hub_test|service_watch_job_test|serving_registry_test|serving_engine_test)\.'

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

status=0
if [ "$MODE" = address ] || [ "$MODE" = all ]; then
  start=$(date +%s)
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  if [ "$SCOPE" = quick ]; then
    # shellcheck disable=SC2086
    build build-asan address $QUICK_TARGETS
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -R "$QUICK_REGEX") || status=1
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
  (cd build-tsan && ctest --output-on-failure -j "$JOBS" -R "$TSAN_REGEX") || status=1
  echo "sanitize: thread took $(( $(date +%s) - start ))s, status $status"
fi
exit "$status"
