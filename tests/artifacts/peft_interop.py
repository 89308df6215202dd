"""PEFT / transformers side of the adapter interop tests (peft_interop_test.cc).

  peft_interop.py write MODELS OUT   PEFT creates OFT adapters on the tiny fixture models
                                     and records its logits (OUT/peft_<case>/).
  peft_interop.py check MODELS OUT   PEFT loads the adapters WE wrote (OUT/ours_<case>/) and
                                     transformers loads our merged exports (OUT/merged_<case>/);
                                     both must reproduce the logits we recorded (<= 1e-4).
"""
import json
import os
import sys

import torch
from packaging.version import Version  # numeric comparison: "0.9.0" < "0.18.0", unlike text
from peft import OFTConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

TOL = 1e-4
mode, MODELS, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(OUT, exist_ok=True)

CASES = {
    # name: (model, OFTConfig kwargs)
    "cnp_qv": ("llama3", dict(oft_block_size=8, target_modules=["q_proj", "v_proj"])),
    "exact_share": ("llama3", dict(r=4, oft_block_size=0, use_cayley_neumann=False, block_share=True,
                                   target_modules=["q_proj", "k_proj", "o_proj"])),
    "all_linear_k3": ("qwen2_tied", dict(oft_block_size=16, num_cayley_neumann_terms=3,
                                         target_modules="all-linear")),
    "layers_mistral": ("mistral", dict(oft_block_size=32, target_modules=["gate_proj", "down_proj"],
                                       layers_to_transform=[1])),
}
# Every family beyond Llama, all-linear (Phi-3: the fused qkv_proj and gate_up_proj).
FAMILIES = ["qwen3", "olmo2", "granite", "gemma2", "gemma3", "phi3"]
for fam in FAMILIES:
    CASES[f"family_{fam}"] = (fam, dict(oft_block_size=16, target_modules="all-linear"))


def inputs(model_dir):
    e = load_file(os.path.join(MODELS, model_dir, "expected.safetensors"))
    return e["ids"], e["attention_mask"]


def logits_of(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def masked_err(a, b, mask):
    valid = mask.bool().unsqueeze(-1).expand_as(a)
    return (a - b).abs()[valid].max().item()


if mode == "write":
    torch.manual_seed(0)
    for name, (model_dir, kw) in CASES.items():
        base = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, model_dir), dtype=torch.float32)
        peft_model = get_peft_model(base, OFTConfig(init_weights=False, **kw)).eval()
        ids, mask = inputs(model_dir)
        d = os.path.join(OUT, f"peft_{name}")
        peft_model.save_pretrained(d)
        save_file({"logits": logits_of(peft_model, ids, mask).contiguous()},
                  os.path.join(d, "expected.safetensors"))
        with open(os.path.join(d, "model_dir.txt"), "w") as f:
            f.write(model_dir)
        print("wrote", d)
elif mode == "check":
    checked = 0
    for name in sorted(os.listdir(OUT)):
        d = os.path.join(OUT, name)
        if not (name.startswith("ours_") or name.startswith("merged_")):
            continue
        model_dir = open(os.path.join(d, "model_dir.txt")).read().strip()
        ids, mask = inputs(model_dir)
        want = load_file(os.path.join(d, "expected.safetensors"))["logits"]
        if name.startswith("ours_"):
            cfg = json.load(open(os.path.join(d, "adapter_config.json")))
            assert cfg["peft_type"] == "OFT" and Version(cfg["peft_version"]) >= Version("0.18.0"), cfg
            base = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, model_dir), dtype=torch.float32)
            model = PeftModel.from_pretrained(base, d).eval()
        else:
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        err = masked_err(logits_of(model, ids, mask), want, mask)
        print(f"{name}: max abs error {err:.3g}")
        if not err <= TOL:
            sys.exit(f"FAIL {name}: max abs error {err} > {TOL}")
        checked += 1
    if checked < 5 + 2 * len(FAMILIES):
        sys.exit(f"FAIL: only {checked} outputs of the C++ side found in {OUT}")
    print(f"{checked} checked")
