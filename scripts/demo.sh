#!/usr/bin/env bash
# The main job on the embedded default, end to end through the gRPC service:
#   1. start oft_server on models/default (temp data dir, an API key, metrics on a free port),
#   2. oftctl: list base models, upload the sample train/valid datasets (validated server-side),
#   3. oftctl submit --watch: an OFTv2 finetune with live progress (step, loss, ETA),
#   4. oftctl download: the PEFT adapter, every file's sha256 verified,
#   5. generations without and with the adapter, streamed by the server's InferenceService
#      (the adapter is applied unmerged, on the same loaded base),
#   6. a few of the server's Prometheus metrics, then a graceful SIGTERM shutdown.
# Usage: scripts/demo.sh [BUILD_DIR]   (make demo builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUT="${OFT_DEMO_DIR:-$BUILD/demo}"
PY=.venv/bin/python
rm -rf "$OUT" && mkdir -p "$OUT"
export OFT_API_KEY="demo-key-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
OFTCTL="$BUILD/client/oftctl"

echo "== starting oft_server on models/default =="
"$BUILD/server/oft_server" --listen=127.0.0.1:0 --port_file="$OUT/port" \
  --metrics_listen=127.0.0.1:0 --metrics_port_file="$OUT/metrics_port" --data_dir="$OUT/data" \
  --model=default=models/default --api_key="demo:$OFT_API_KEY" --train_threads=2 \
  2> "$OUT/server.log" &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null || true; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -s "$OUT/port" ] && break; sleep 0.05; done
[ -s "$OUT/port" ] || { cat "$OUT/server.log"; echo "server did not start"; exit 1; }
export OFT_SERVER="127.0.0.1:$(cat "$OUT/port")"
echo "   gRPC on $OFT_SERVER, metrics on http://127.0.0.1:$(cat "$OUT/metrics_port")/metrics"
"$OFTCTL" models

echo "== uploading the sample dataset =="
TRAIN=$("$OFTCTL" --json upload data/sample/train.jsonl --name=sample-train | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
VALID=$("$OFTCTL" --json upload data/sample/valid.jsonl --name=sample-valid | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$OFTCTL" datasets

echo "== finetuning an OFTv2 adapter (all-linear, b=32, 60 steps) =="
"$OFTCTL" submit --base-model=default --dataset="$TRAIN" --validation-dataset="$VALID" \
  --output-adapter=beep-boop --max-steps=60 --batch-size=8 --learning-rate=0.004 \
  --eval-every=20 --checkpoint-every=20 --target-modules=all-linear --oft-block-size=32 \
  --seed=1 --watch

echo "== the adapter (PEFT format, loadable with PeftModel.from_pretrained) =="
"$OFTCTL" adapters
"$OFTCTL" download beep-boop --out="$OUT/adapter"
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); print("  ", {k:c[k] for k in ("peft_type","peft_version","oft_block_size","use_cayley_neumann","num_cayley_neumann_terms")}, "targets:", c["target_modules"])' "$OUT/adapter/adapter_config.json"

echo "== generations through the InferenceService: base model, then with beep-boop (unmerged) =="
for p in $'Question: What is 7 plus 5?\nAnswer:' $'Question: What is 12 minus 4?\nAnswer:' \
         "The old lighthouse keeper"; do
  shown=${p//$'\n'/\\n}
  printf '  %-40s base    -> ' "$shown"
  "$OFTCTL" generate --prompt="$p" --max-tokens=32 --temperature=0 2>/dev/null | tr '\n' ' ' | head -c 200; echo
  printf '  %-40s adapter -> ' "$shown"
  "$OFTCTL" generate --adapter=beep-boop --prompt="$p" --max-tokens=32 --temperature=0 2>/dev/null | tr '\n' ' ' | head -c 200; echo
done

echo "== a few Prometheus metrics =="
"$PY" -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$(cat "$OUT/metrics_port")/metrics" |
  grep -E '^oft_(jobs\{|jobs_finished_total|train_step_seconds_count|rpcs_total\{code="OK",method="/oft.v1.JobService/CreateJob")' || true

echo "== graceful shutdown (SIGTERM) =="
kill -TERM $SERVER_PID
wait $SERVER_PID && echo "   server exited cleanly"
trap - EXIT
