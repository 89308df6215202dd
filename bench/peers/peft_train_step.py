#!/usr/bin/env python3
"""The peer of train_step_bench: one optimizer step with Hugging Face PEFT.

Runs, on the same model dir, batch, sequence length, thread count and optimizer (AdamW,
lr 1e-4) as build/bench/train_step_bench:
  peft_oft             PEFT OFT (block size --block, Cayley-Neumann, all seven decoder
                       projections) + AdamW on the adapter parameters
  peft_lora            PEFT LoRA r=16 on the same seven projections + AdamW
  transformers_frozen  the frozen model's forward + CE loss + backward (backward reaches
                       layer 0's input norm, as train_step_bench's "frozen" does)

Prints one JSON line per implementation in train_step_bench's schema ("impl", "device",
"dtype", "hidden", "intermediate", "layers", "vocab", "params", "batch", "seq",
"block_size", "step_ms", "tokens_per_second", "peak_bytes", "reps", "threads", "isa",
"cpu"), then one {"summary": true, ...} line. step_ms is the median of --reps timed steps
after one warm-up step each; repetitions are interleaved across implementations.
peak_bytes is null: PyTorch exposes no CPU allocator statistics to measure it with.
Denormals are flushed to zero, as train_step_bench does.
"isa" is "torch:<ATen CPU capability>" (ATEN_CPU_CAPABILITY=avx2|default forces one).

Usage: .venv/bin/python bench/peers/peft_train_step.py --model_dir=models/default
           [--batch=8] [--seq=256] [--block=32] [--lora_r=16] [--reps=3] [--threads=2]
           [--impls=transformers_frozen,peft_oft,peft_lora]
"""
import argparse
import json
import statistics
import sys
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IMPLS = ("transformers_frozen", "peft_oft", "peft_lora")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_dir", default="models/default")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impls", default=",".join(IMPLS))
    a = ap.parse_args()
    impls = a.impls.split(",")
    for i in impls:
        if i not in IMPLS:
            sys.exit(f"--impls: unknown implementation {i!r} (known: {', '.join(IMPLS)})")
    if a.reps < 1 or a.batch < 1 or a.seq < 1 or a.threads < 1:
        sys.exit("--reps, --batch, --seq and --threads must be >= 1")

    import torch
    torch.set_num_threads(a.threads)
    # As train_step_bench (oft::ConfigureCpuRuntime): denormals flushed to zero; without it
    # the attention GEMMs of a trained model slow down many times over.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, OFTConfig, get_peft_model

    def load():
        m = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
        m.train()
        for p in m.parameters():
            p.requires_grad_(False)
        return m

    models, optims, extra = {}, {}, {}
    for impl in impls:
        m = load()
        if impl == "peft_oft":
            cfg = OFTConfig(r=0, oft_block_size=a.block, target_modules=TARGETS,
                            use_cayley_neumann=True, module_dropout=0.0, init_weights=False)
            m = get_peft_model(m, cfg)
        elif impl == "peft_lora":
            cfg = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                             target_modules=TARGETS)
            m = get_peft_model(m, cfg)
        else:
            # Backward must run through every layer, as it does to reach layer 0's adapters.
            norm = m.model.layers[0].input_layernorm.weight
            norm.requires_grad_(True)
            extra[impl] = norm
        trainable = [p for p in m.parameters() if p.requires_grad]
        if impl != "transformers_frozen":
            optims[impl] = torch.optim.AdamW(trainable, lr=1e-4)
        models[impl] = m

    config = next(iter(models.values())).config
    base = load()
    params = sum(p.numel() for p in base.parameters())
    del base
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq + 1))
    inputs, labels = ids[:, :-1], ids[:, 1:].reshape(-1)

    def step(impl):
        m = models[impl]
        logits = m(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab_size).float(),
                                                 labels)
        loss.backward()
        if impl in optims:
            optims[impl].step()
            optims[impl].zero_grad(set_to_none=True)
        else:
            extra[impl].grad = None

    for impl in impls:
        step(impl)  # warm-up
    times = {impl: [] for impl in impls}
    for _ in range(a.reps):
        for impl in impls:
            t0 = time.perf_counter()
            step(impl)
            times[impl].append((time.perf_counter() - t0) * 1000.0)

    isa = "torch:" + torch.backends.cpu.get_cpu_capability().lower()
    cpu = cpu_model()
    ms = {}
    for impl in impls:
        ms[impl] = statistics.median(times[impl])
        print(json.dumps({
            "impl": impl, "device": "cpu", "dtype": "fp32", "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "layers": config.num_hidden_layers,
            "vocab": config.vocab_size, "params": params, "batch": a.batch, "seq": a.seq,
            "block_size": a.block if impl == "peft_oft" else None,
            "step_ms": round(ms[impl], 1),
            "tokens_per_second": round(1000.0 * a.batch * a.seq / ms[impl], 1),
            "peak_bytes": None, "reps": a.reps, "threads": torch.get_num_threads(),
            "isa": isa, "cpu": cpu,
            "versions": {"torch": torch.__version__,
                         "peft": __import__("peft").__version__,
                         "transformers": __import__("transformers").__version__},
        }, separators=(",", ":")), flush=True)
    summary = {"summary": True, "peer": "peft", "isa": isa, "cpu": cpu}
    if "transformers_frozen" in ms:
        for impl in ("peft_oft", "peft_lora"):
            if impl in ms:
                summary[f"{impl}_over_frozen_time"] = round(ms[impl] / ms["transformers_frozen"], 3)
    print(json.dumps(summary, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
