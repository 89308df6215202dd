"""Writes tiny random Llama / Qwen2 / Mistral checkpoints with transformers, plus the
logits transformers computes for fixed inputs, for the C++ parity test (llama_parity_test).

Usage: make_llama_fixtures.py OUT_DIR
Each case OUT_DIR/<case>/ holds config.json, model.safetensors (or shards + index) and
expected.safetensors with int64 "ids", int64 "attention_mask" and fp32 "logits".
"""
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

torch.manual_seed(0)
OUT = sys.argv[1]

COMMON = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-5)


def make(case, cls_name, cfg_cls_name, extra, save_dtype=torch.float32, shard=None):
    cfg = getattr(transformers, cfg_cls_name)(**{**COMMON, **extra})
    model = getattr(transformers, cls_name)(cfg).eval()
    with torch.no_grad():  # non-trivial norms so RMSNorm weights matter
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    model.to(save_dtype).save_pretrained(d, max_shard_size=shard or "2GB")
    # Reference logits: reload as transformers would and compute in fp32.
    ref = getattr(transformers, cls_name).from_pretrained(d, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, COMMON["vocab_size"], (2, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    with torch.no_grad():
        logits = ref(input_ids=ids, attention_mask=mask).logits.float()
    save_file({"ids": ids, "attention_mask": mask, "logits": logits.contiguous()},
              os.path.join(d, "expected.safetensors"))
    print(case, "ok", tuple(logits.shape))


make("llama3", "LlamaForCausalLM", "LlamaConfig",
     dict(rope_theta=500000.0, tie_word_embeddings=False,
          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}))
make("llama2_sharded_bf16", "LlamaForCausalLM", "LlamaConfig",
     dict(rope_theta=10000.0, num_key_value_heads=4), save_dtype=torch.bfloat16, shard="60KB")
make("qwen2_tied", "Qwen2ForCausalLM", "Qwen2Config",
     dict(rope_theta=1000000.0, tie_word_embeddings=True))
make("mistral", "MistralForCausalLM", "MistralConfig",
     dict(rope_theta=10000.0, sliding_window=8, tie_word_embeddings=False))
