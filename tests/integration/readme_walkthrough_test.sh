#!/usr/bin/env bash
# Runs README.md's "Using the service" block verbatim (between the walkthrough markers) in a
# scratch directory that looks like the repository root (build/, models/, data/ linked), on
# free ports, and checks that it finished and that the trained adapter visibly changed the
# answers (the sample dataset's "Beep boop!" style).
#   readme_walkthrough_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src="$1"; bin="$2"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
awk '/<!-- walkthrough:begin -->/{on=1; next} /<!-- walkthrough:end -->/{on=0} on && !/^```/' \
  "$src/README.md" > "$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "README.md has no walkthrough block"; exit 1; }
ln -s "$bin" "$work/build"; ln -s "$src/models" "$work/models"; ln -s "$src/data" "$work/data"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export OFT_SERVER="127.0.0.1:$(port)" OFT_METRICS="127.0.0.1:0" TMPDIR="$work"
cd "$work"
echo "== running README.md's walkthrough ($(wc -l < walkthrough.sh) lines) against $OFT_SERVER"
if ! bash -e walkthrough.sh > out.log 2>&1; then
  echo "FAIL: the walkthrough exited non-zero"; tail -40 out.log; exit 1
fi
cat out.log | tail -25
grep -q "SUCCEEDED" out.log || { echo "FAIL: no SUCCEEDED job in the output"; exit 1; }
grep -qi "beep" out.log || { echo "FAIL: the adapter's generations do not show the trained style"; exit 1; }
echo "PASS: README walkthrough"
