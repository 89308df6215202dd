#!/usr/bin/env python3
"""Ours vs PEFT, side by side: train_step_bench and peft_train_step.py on one machine.

Runs --rounds rounds of [ours, PEFT] (each process times --reps interleaved steps), prints
every JSON row of both, then one {"summary": true, "compare": "peft", ...} line with the
medians over rounds and the ratios: ours_oft_over_peft_oft (target <= 0.8),
ours_frozen_over_transformers_frozen, ours_input_centric_over_frozen (target <= 1.25).

--isa=avx512|avx2|generic runs both sides on that path: OFT_CPU_ISA for our kernels, and
for both processes' LibTorch ATEN_CPU_CAPABILITY (avx512|avx2|default),
MKL_ENABLE_INSTRUCTIONS (AVX512|AVX2|SSE4_2) and ONEDNN_MAX_CPU_ISA (AVX512_CORE|AVX2|SSE41),
so an AVX-512 machine measures what an AVX2-only or older machine would run.

Usage: compare.py --build_dir=build [--model_dir=models/default] [--batch=8] [--seq=256]
                  [--threads=2] [--reps=3] [--rounds=2] [--block=32] [--isa=...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ENV = {
    "avx512": {"OFT_CPU_ISA": "avx512", "ATEN_CPU_CAPABILITY": "avx512",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"OFT_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "generic": {"OFT_CPU_ISA": "generic", "ATEN_CPU_CAPABILITY": "default",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def run(cmd, env):
    print("# " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"{cmd[0]} failed with status {p.returncode}")
    rows = []
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            print(line, flush=True)
            rows.append(json.loads(line))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build_dir", default="build")
    ap.add_argument("--model_dir", default="models/default")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--isa", choices=sorted(ENV), default=None)
    a = ap.parse_args()
    env = dict(os.environ)
    if a.isa:
        env.update(ENV[a.isa])
    here = os.path.dirname(os.path.abspath(__file__))
    python = os.path.join(os.getcwd(), ".venv", "bin", "python")
    common = [f"--model_dir={a.model_dir}", f"--batch={a.batch}", f"--seq={a.seq}",
              f"--threads={a.threads}", f"--reps={a.reps}", f"--block={a.block}"]
    ours_cmd = [os.path.join(a.build_dir, "bench", "train_step_bench"),
                "--impls=frozen,oft,input_centric"] + common
    peer_cmd = [python if os.path.exists(python) else sys.executable,
                os.path.join(here, "peft_train_step.py"),
                "--impls=transformers_frozen,peft_oft,peft_lora"] + common
    ms = {}
    meta = {}
    for _ in range(a.rounds):
        for cmd, side in ((ours_cmd, "ours"), (peer_cmd, "peft")):
            for row in run(cmd, env):
                if row.get("summary"):
                    continue
                ms.setdefault(f"{side}_{row['impl']}", []).append(row["step_ms"])
                meta[side] = (row.get("isa"), row.get("cpu"))
    med = {k: statistics.median(v) for k, v in ms.items()}
    summary = {"summary": True, "compare": "peft", "isa": meta["ours"][0],
               "peer_isa": meta["peft"][0], "cpu": meta["ours"][1], "batch": a.batch,
               "seq": a.seq, "threads": a.threads, "block_size": a.block, "rounds": a.rounds,
               "reps": a.reps}
    summary.update({f"{k}_ms": round(v, 1) for k, v in sorted(med.items())})
    # "oft" is what the trainer runs (the model's default OftCompute, kAuto: folded where it
    # pays, else input-centric); input_centric is forced input-centric on every Linear.
    summary["ours_oft_over_peft_oft"] = round(med["ours_oft"] / med["peft_peft_oft"], 3)
    summary["ours_oft_over_peft_lora"] = round(med["ours_oft"] / med["peft_peft_lora"], 3)
    summary["ours_input_centric_over_peft_oft"] = round(
        med["ours_input_centric"] / med["peft_peft_oft"], 3)
    summary["ours_frozen_over_transformers_frozen"] = round(
        med["ours_frozen"] / med["peft_transformers_frozen"], 3)
    summary["ours_oft_over_frozen"] = round(med["ours_oft"] / med["ours_frozen"], 3)
    summary["ours_input_centric_over_frozen"] = round(
        med["ours_input_centric"] / med["ours_frozen"], 3)
    summary["target_ours_over_peft_oft_0_8"] = summary["ours_oft_over_peft_oft"] <= 0.8
    print(json.dumps(summary, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
