#!/usr/bin/env bash
# The main job on the embedded default (until the gRPC service lands, it runs in-process):
#   1. generate with the base model (models/default),
#   2. finetune an OFTv2 adapter on data/sample with oft_train, showing live progress,
#   3. generate again with the adapter, and print the PEFT artifact it wrote.
# Usage: scripts/demo.sh [BUILD_DIR]   (make demo builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUT="${OFT_DEMO_DIR:-$BUILD/demo}"
PY=.venv/bin/python
rm -rf "$OUT" && mkdir -p "$OUT"
PROMPTS=("Question: What is 7 plus 5?\\nAnswer:" "Question: What is 12 minus 4?\\nAnswer:"
         "The old lighthouse keeper")

echo "== base model (models/default) =="
"$BUILD/server/model/oft_generate" --model_dir=models/default --max_tokens=32 "${PROMPTS[@]}" |
  "$PY" scripts/demo_format.py gen

echo "== finetuning an OFTv2 adapter on data/sample (all-linear, b=32, 60 steps) =="
"$BUILD/server/train/oft_train" --model_dir=models/default --train=data/sample/train.jsonl \
  --valid=data/sample/valid.jsonl --out="$OUT/adapter" --checkpoint_dir="$OUT/checkpoints" \
  --max_steps=60 --batch_size=8 --learning_rate=0.004 --eval_every=20 --checkpoint_every=20 \
  --target_modules=all-linear --oft_block_size=32 --seed=1 |
  "$PY" scripts/demo_format.py train

echo "== adapter artifact (PEFT format, loadable with PeftModel.from_pretrained) =="
ls -l "$OUT/adapter"
sha256sum "$OUT/adapter"/*
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); print("  ", {k:c[k] for k in ("peft_type","peft_version","oft_block_size","use_cayley_neumann","num_cayley_neumann_terms")}, "targets:", c["target_modules"])' "$OUT/adapter/adapter_config.json"

echo "== with the adapter =="
"$BUILD/server/model/oft_generate" --model_dir=models/default --adapter_dir="$OUT/adapter" \
  --max_tokens=32 "${PROMPTS[@]}" |
  "$PY" scripts/demo_format.py gen
