"""Writes tiny random decoder checkpoints with transformers, one per supported family
(Llama, Qwen2, Mistral, Qwen3, OLMo 2, Granite, Gemma 2, Gemma 3 text, Phi-3), plus what
transformers computes on them, for the C++ parity test (llama_parity_test).

Usage: make_llama_fixtures.py OUT_DIR
Each case OUT_DIR/<case>/ holds config.json, model.safetensors (or shards + index),
expected.safetensors with int64 "ids", int64 "attention_mask", fp32 "logits", int64
"greedy_prompt" and "greedy" (transformers' greedy generate with its KV cache), and
all_linear.json: the modules PEFT's target_modules="all-linear" selects on the model.
Weights are drawn with a large initializer scale so that logits are far from uniform; every
greedy step is checked here to have a margin (top-1 minus top-2 logit) of at least
MIN_MARGIN, so a token-for-token comparison is not decided by rounding.
"""
import json
import os
import sys

import peft
import torch
import transformers
from safetensors.torch import save_file

torch.manual_seed(0)
OUT = sys.argv[1]

COMMON = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-5)
MIN_MARGIN = 1e-3
GREEDY_NEW = 10


def all_linear_modules(model):
    """The modules PEFT wraps for target_modules="all-linear" (LoRA: no shape constraints)."""
    import copy
    wrapped = peft.get_peft_model(copy.deepcopy(model),
                                  peft.LoraConfig(target_modules="all-linear", r=2))
    prefix = "base_model.model."
    names = [n[len(prefix):] for n, m in wrapped.named_modules()
             if isinstance(m, peft.tuners.lora.LoraLayer)]
    return sorted(names)


def make(case, cls_name, cfg_cls_name, extra, save_dtype=torch.float32, shard=None, seed=0,
         init=0.15, norm_offset=1.0):
    torch.manual_seed(seed)
    kwargs = {**COMMON, **extra}
    if init is not None:
        kwargs["initializer_range"] = init
    cfg = getattr(transformers, cfg_cls_name)(**kwargs)
    model = getattr(transformers, cls_name)(cfg).eval()
    with torch.no_grad():  # non-trivial norms so RMSNorm weights matter
        for n, p in model.named_parameters():
            if "norm" in n:  # Gemma stores w - 1 (norm_offset 0): still around 1 in effect
                p.copy_(norm_offset + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    model.to(save_dtype).save_pretrained(d, max_shard_size=shard or "2GB")
    # Reference logits: reload as transformers would and compute in fp32.
    ref = getattr(transformers, cls_name).from_pretrained(d, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1 + seed)
    ids = torch.randint(0, COMMON["vocab_size"], (2, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    prompt = ids[:1, :7]
    with torch.no_grad():
        logits = ref(input_ids=ids, attention_mask=mask).logits.float()
        out = ref.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=GREEDY_NEW, min_new_tokens=GREEDY_NEW,
                           output_logits=True, return_dict_in_generate=True,
                           pad_token_id=0, eos_token_id=None)
    greedy = out.sequences[0, prompt.size(1):]
    for step, lg in enumerate(out.logits):
        top = lg[0].float().topk(2).values
        margin = (top[0] - top[1]).item()
        assert margin >= MIN_MARGIN, f"{case}: greedy step {step} is a near-tie ({margin:.2e})"
    save_file({"ids": ids, "attention_mask": mask, "logits": logits.contiguous(),
               "greedy_prompt": prompt[0].clone(), "greedy": greedy.clone()},
              os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "all_linear.json"), "w") as f:
        json.dump(all_linear_modules(ref), f)
    print(case, "ok", tuple(logits.shape), "greedy", greedy.tolist())


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

# YaRN RoPE scaling (Qwen3's long-context configs): the original context (8) is shorter than
# the 13-token prompts; the second case infers its attention factor from mscale /
# mscale_all_dim and does not truncate the correction range.
make("qwen3_yarn", "Qwen3ForCausalLM", "Qwen3Config",
     dict(head_dim=24, tie_word_embeddings=True,
          rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                           "original_max_position_embeddings": 8}), seed=12)
make("llama_yarn_mscale", "LlamaForCausalLM", "LlamaConfig",
     dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                           "original_max_position_embeddings": 16, "mscale": 1.0,
                           "mscale_all_dim": 0.5, "beta_fast": 16.0, "beta_slow": 2.0,
                           "truncate": False}), seed=13)

# Dynamic NTK RoPE: max_position_embeddings (8) below the 13-token prompts and the 7 + 10
# greedy tokens, so the frequencies change at every decode step past 8 (the greedy reference
# is transformers' generate with its KV cache, whose cached keys keep older frequencies).
make("llama_dynamic", "LlamaForCausalLM", "LlamaConfig",
     dict(max_position_embeddings=8,
          rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 3.0}),
     seed=14)
make("qwen2_dynamic_s1_bf16", "Qwen2ForCausalLM", "Qwen2Config",
     dict(max_position_embeddings=10, tie_word_embeddings=False,
          rope_scaling={"type": "dynamic", "factor": 4.0}, rope_theta=1000000.0),
     save_dtype=torch.bfloat16, seed=15)

# The families beyond Llama: two seeds each, the second saved as bfloat16 (loaded into fp32).
# Gemma's and Phi-3's windows (6, 9) are shorter than the 13-token prompts.
NO_SPECIAL = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
FAMILIES = [
    ("qwen3", "Qwen3ForCausalLM", "Qwen3Config",
     dict(head_dim=24, rope_theta=1000000.0, tie_word_embeddings=True), 1.0),
    ("olmo2", "Olmo2ForCausalLM", "Olmo2Config",
     dict(rope_theta=500000.0, **NO_SPECIAL), 1.0),
    ("granite", "GraniteForCausalLM", "GraniteConfig",
     dict(embedding_multiplier=6.0, attention_multiplier=0.09, residual_multiplier=0.4,
          logits_scaling=2.5, **NO_SPECIAL), 1.0),
    ("gemma2", "Gemma2ForCausalLM", "Gemma2Config",
     dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
          attn_logit_softcapping=4.0, final_logit_softcapping=8.0), 0.0),
    ("gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig",
     dict(num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
          layer_types=["sliding_attention", "full_attention", "sliding_attention"],
          rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                              "rope_theta": 1000000.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
     0.0),
    ("phi3", "Phi3ForCausalLM", "Phi3Config",
     dict(partial_rotary_factor=0.5, sliding_window=9, **NO_SPECIAL), 1.0),
]
for name, cls, cfg_cls, extra, norm_offset in FAMILIES:
    # Gemma ties its head by default; a tied head over sqrt(hidden)-scaled random embeddings
    # repeats the last token, so the first Gemma seed unties it to make greedy informative.
    first = {**extra, "tie_word_embeddings": False} if name.startswith("gemma") else extra
    make(name, cls, cfg_cls, first, seed=10, init=0.15, norm_offset=norm_offset)
    make(name + "_s1_bf16", cls, cfg_cls, extra, save_dtype=torch.bfloat16, seed=11, init=0.15,
         norm_offset=norm_offset)
