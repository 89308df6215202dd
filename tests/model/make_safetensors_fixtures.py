#!/usr/bin/env python3
"""Interop fixtures for server/model (safetensors, checkpoint, hf_config).

  write DIR   Writes files with the Python `safetensors` and `transformers` libraries plus
              JSON of what they hold:
                DIR/py/dtypes.safetensors, DIR/py/dtypes.json     (every dtype, metadata)
                DIR/py/sharded_llama/  (save_pretrained, sharded) + DIR/py/sharded_llama.json
                DIR/py/qwen2_tiny/     (save_pretrained, single file, tied embeddings)
                                                               + DIR/py/qwen2_tiny.json
  check DIR   Verifies what the C++ tests wrote under DIR/cpp/:
                roundtrip.safetensors  == DIR/py/dtypes.safetensors (bitwise, metadata)
                configs/<name>/config.json (ToJson) loads in transformers and builds a model
                that takes the original weights and computes the same logits.
"""
import json
import os
import struct
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

METADATA = {"format": "pt", "note": "h\u00e9llo \u2713", "empty": ""}


def tensor_record(t):
    rec = {
        "dtype": {
            torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
            torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
            torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
        }[t.dtype],
        "shape": list(t.shape),
        "bytes_hex": t.contiguous().view(-1).view(torch.uint8).numpy().tobytes().hex()
        if t.numel() > 0 else "",
    }
    if t.is_floating_point():
        if bool(torch.isfinite(t).all()):
            rec["values"] = t.double().reshape(-1).tolist()
    else:
        rec["values"] = [int(v) for v in t.reshape(-1).tolist()]
    return rec


def dtype_tensors():
    g = torch.Generator().manual_seed(1234)
    specials = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 1e-40])
    f32 = torch.randn(3, 4, generator=g)
    f32.view(-1)[:5] = specials
    bf16 = torch.randn(2, 5, generator=g).to(torch.bfloat16)
    bf16.view(-1)[:4] = specials[:4].to(torch.bfloat16)
    return {
        "a.f32_specials": f32,
        "b.bf16_specials": bf16,
        "c.f16": torch.randn(2, 3, 2, generator=g).to(torch.float16),
        "d.f64": torch.randn(3, generator=g).double(),
        "e.i64": torch.tensor([-(2**63), 2**63 - 1, 0, -1, 123456789012], dtype=torch.int64),
        "f.i32": torch.tensor([[-(2**31), 2**31 - 1], [7, -7]], dtype=torch.int32),
        "g.i16": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
        "h.i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "i.u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "j.bool": torch.tensor([True, False, True, True]),
        "k.scalar": torch.tensor(3.25),
        "l.empty": torch.zeros(0, 3),
        "m.bf16_values": torch.randn(64, 48, generator=g).to(torch.bfloat16),
        "n.f32_values": torch.randn(17, 9, generator=g),
    }


def save_tiny(model_cls, config, out_dir, **save_kwargs):
    torch.manual_seed(0)
    model = model_cls(config).to(torch.bfloat16).eval()
    model.save_pretrained(out_dir, **save_kwargs)
    sd = {}
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(out_dir, f)))
    return {"tensors": {k: tensor_record(v) for k, v in sorted(sd.items())}}


def write(root):
    py = os.path.join(root, "py")
    os.makedirs(py, exist_ok=True)
    tensors = dtype_tensors()
    save_file(tensors, os.path.join(py, "dtypes.safetensors"), metadata=METADATA)
    with open(os.path.join(py, "dtypes.json"), "w") as f:
        json.dump({"metadata": METADATA,
                   "tensors": {k: tensor_record(v) for k, v in tensors.items()}}, f)

    from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)
    llama = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=500000.0, bos_token_id=1, eos_token_id=[2, 3], rms_norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 128})
    d = os.path.join(py, "sharded_llama")
    rec = save_tiny(LlamaForCausalLM, llama, d, max_shard_size="8KB")
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), os.listdir(d)
    with open(os.path.join(py, "sharded_llama.json"), "w") as f:
        json.dump(rec, f)

    qwen = Qwen2Config(
        vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=5, eos_token_id=6)
    d = os.path.join(py, "qwen2_tiny")
    rec = save_tiny(Qwen2ForCausalLM, qwen, d)
    assert os.path.exists(os.path.join(d, "model.safetensors")), os.listdir(d)
    with open(os.path.join(py, "qwen2_tiny.json"), "w") as f:
        json.dump(rec, f)
    print("fixtures written to", root)


def check_roundtrip(root):
    ours = os.path.join(root, "cpp", "roundtrip.safetensors")
    theirs = os.path.join(root, "py", "dtypes.safetensors")
    with open(ours, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = f.read(n)
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    keys = [k for k in json.loads(header) if k != "__metadata__"]
    assert keys == sorted(keys), keys
    a, b = load_file(ours), load_file(theirs)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].reshape(-1).view(torch.uint8) if a[k].numel() else a[k],
                           b[k].reshape(-1).view(torch.uint8) if b[k].numel() else b[k]), k
    with safe_open(ours, "pt") as f:
        assert f.metadata() == METADATA, f.metadata()
    print(f"OK {ours}: {len(a)} tensors identical to {theirs}")


def check_configs(root):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg_root = os.path.join(root, "cpp", "configs")
    names = sorted(os.listdir(cfg_root))
    assert names, "no configs written by hf_config_test"
    for name in names:
        ours = AutoConfig.from_pretrained(os.path.join(cfg_root, name))
        orig_dir = os.path.join(root, "py", name)
        orig = AutoConfig.from_pretrained(orig_dir)
        for attr in ["model_type", "vocab_size", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "rms_norm_eps", "max_position_embeddings",
                     "tie_word_embeddings", "bos_token_id", "eos_token_id", "hidden_act"]:
            va, vb = getattr(ours, attr, None), getattr(orig, attr, None)
            assert va == vb, f"{name}.{attr}: ours {va!r} != original {vb!r}"
        def head_dim(c):  # Qwen2Config has no head_dim attribute; modeling falls back
            return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        assert head_dim(ours) == head_dim(orig), f"{name}.head_dim"
        rope_a = getattr(ours, "rope_parameters", None) or getattr(ours, "rope_scaling", None)
        rope_b = getattr(orig, "rope_parameters", None) or getattr(orig, "rope_scaling", None)
        assert rope_a == rope_b, f"{name} rope: ours {rope_a} != original {rope_b}"
        # The same weights in a model built from our config give the same logits.
        ref = AutoModelForCausalLM.from_pretrained(orig_dir, dtype=torch.float32).eval()
        model = AutoModelForCausalLM.from_config(ours, dtype=torch.float32).eval()
        model.load_state_dict(ref.state_dict(), strict=True)
        ids = torch.arange(0, 40).reshape(2, 20) % ours.vocab_size
        with torch.no_grad():
            assert torch.equal(model(ids).logits, ref(ids).logits), name
        print(f"OK config {name}: loads in transformers, same logits")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        check_roundtrip(sys.argv[2])
        check_configs(sys.argv[2])


if __name__ == "__main__":
    main()
