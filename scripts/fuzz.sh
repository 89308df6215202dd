#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang + ASan/UBSan and runs each for
# FUZZ_SECONDS seconds (default 60) over its committed seed corpus. New inputs go to a
# scratch corpus under the build dir, never into the repository. A crash, leak, sanitizer
# report or timeout fails the run and leaves the input in $BUILD/artifacts/.
# Before fuzzing, every file in tests/fuzz/regressions/<target>/ (inputs of fixed crashes)
# is replayed once.
#   scripts/fuzz.sh [BUILD_DIR]          FUZZ_SECONDS=N   FUZZ_TARGETS="tokenizer hf_config"
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-safetensors_header safetensors_index hf_config tokenizer dataset_chat adapter_config openai_request job_spec}"
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S tests/fuzz -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ "${LAUNCHER[@]}" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
mkdir -p "$BUILD/artifacts"
status=0
for t in $TARGETS; do
  bin="$BUILD/fuzz_$t"
  if [ -d "tests/fuzz/regressions/$t" ] && [ -n "$(ls -A "tests/fuzz/regressions/$t")" ]; then
    echo "fuzz: $t: replaying $(ls "tests/fuzz/regressions/$t" | wc -l) regression input(s)"
    "$bin" -rss_limit_mb=2048 "tests/fuzz/regressions/$t"/* >"$BUILD/$t.regressions.log" 2>&1 \
      || { echo "fuzz: $t: a regression input fails again"; tail -40 "$BUILD/$t.regressions.log"; status=1; continue; }
  fi
  scratch="$BUILD/corpus/$t"
  mkdir -p "$scratch"
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" \
       "$scratch" "tests/fuzz/corpus/$t" >"$BUILD/$t.log" 2>&1; then
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$BUILD/$t.log" | tr '\n' ' '; echo
  else
    echo "fuzz: $t FAILED (input saved under $BUILD/artifacts/):"; tail -60 "$BUILD/$t.log"; status=1
  fi
done
[ "$status" = 0 ] && echo "fuzz: all targets clean" || echo "fuzz: failures above"
exit "$status"
