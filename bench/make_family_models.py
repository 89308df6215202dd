"""Writes one random model per supported family, all at the size of models/default (hidden
256, MLP 688, 6 layers, 4 heads of 64, 2 KV heads, vocab 4096, tied head), for model_bench's
per-family comparison (docs/benchmarks.md). Each family keeps its own defaults otherwise
(Gemma 2's soft-caps, Gemma's sliding layers with a 4096 window, ...).

Usage: make_family_models.py OUT_DIR   ->  OUT_DIR/<family>/{config.json,model.safetensors}
"""
import os
import sys

import torch
import transformers

SIZE = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
            max_position_embeddings=512, tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=None, pad_token_id=None)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", {}),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", {}),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", {}),
    "granite": ("GraniteForCausalLM", "GraniteConfig",
                dict(embedding_multiplier=12.0, attention_multiplier=0.015625,
                     residual_multiplier=0.22, logits_scaling=8.0)),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(query_pre_attn_scalar=64)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(query_pre_attn_scalar=64)),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", {}),
}

out = sys.argv[1]
torch.manual_seed(0)
for name, (cls, cfg_cls, extra) in FAMILIES.items():
    kwargs = {**SIZE, **extra}
    if name == "phi3":
        kwargs.pop("head_dim")  # Phi-3 derives it: 256 / 4 = 64
    cfg = getattr(transformers, cfg_cls)(**kwargs)
    model = getattr(transformers, cls)(cfg)
    d = os.path.join(out, name)
    model.save_pretrained(d)
    n = sum(p.numel() for p in model.parameters())
    print(name, "params", n)
