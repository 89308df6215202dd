"""It really learns: a short CPU finetune of the embedded default model on the shipped sample
dataset cuts the training loss by at least 30%, reports eval loss, and visibly changes
generations (the sample teaches a "Beep boop!" answer style the base model never uses).

Usage: learns_test.py OFT_TRAIN OFT_GENERATE REPO_ROOT WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

oft_train, oft_generate, root, work = sys.argv[1:5]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
model = os.path.join(root, "models", "default")
adapter = os.path.join(work, "adapter")

cmd = [oft_train, f"--model_dir={model}", f"--train={root}/data/sample/train.jsonl",
       f"--valid={root}/data/sample/valid.jsonl", f"--out={adapter}",
       f"--checkpoint_dir={work}/ckpt", "--max_steps=60", "--batch_size=8",
       "--learning_rate=0.004", "--eval_every=30", "--checkpoint_every=30",
       "--target_modules=all-linear", "--oft_block_size=32", "--seed=1"]
out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
if out.returncode != 0:
    sys.exit(f"oft_train failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
events = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
steps = [e for e in events if e["kind"] == "step"]
evals = [e["eval_loss"] for e in events if e["kind"] == "eval"]
first = sum(e["loss"] for e in steps[:5]) / 5
last = sum(e["loss"] for e in steps[-5:]) / 5
print(f"train loss {first:.3f} -> {last:.3f} ({100 * (1 - last / first):.1f}% lower); eval losses {evals}")
assert len(steps) == 60, len(steps)
assert last <= 0.7 * first, f"loss fell by less than 30%: {first} -> {last}"
assert evals and all(v > 0 for v in evals), "no eval loss reported"
assert all(e["eta_seconds"] >= 0 and e["tokens_per_second"] > 0 for e in steps)

prompts = ["Question: What is 7 plus 5?\\nAnswer:", "Question: What is 9 minus 4?\\nAnswer:"]


def generate(extra):
    r = subprocess.run([oft_generate, f"--model_dir={model}", "--max_tokens=24", *extra, *prompts],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        sys.exit(f"oft_generate failed: {r.stderr}")
    return [json.loads(l)["completion"] for l in r.stdout.splitlines()]


base = generate([])
tuned = generate([f"--adapter_dir={adapter}"])
for b, t in zip(base, tuned):
    print(f"base: {b!r}\ntuned: {t!r}")
assert base != tuned, "generations did not change"
assert all("Beep boop" in t for t in tuned), "the finetuned style does not show"
assert not any("Beep boop" in b for b in base), "the base model already answers in the style"
print("ok")
