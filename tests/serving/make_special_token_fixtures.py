"""Writes one tokenizer directory per model family with the special-token setup of its
released checkpoints, made by transformers' own tokenizer classes, and what
AutoTokenizer.from_pretrained(dir) gives for each text: the reference for
special_tokens_parity_test (every entry point's prompt and training ids).

Usage: make_special_token_fixtures.py OUT_DIR
Each OUT_DIR/<case>/ holds tokenizer.json, tokenizer_config.json and cases.json:
  {"texts": [...], "ids": [AutoTokenizer(text).input_ids ...], "eos_id": int|null,
   "chat": {"template": name, "prompt_ids": [...], "train_ids": [...]} | null}
`chat.prompt_ids` is apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True),
`chat.train_ids` the same for TRAIN_CHAT without the generation prompt (both tokenize with
add_special_tokens=False, as apply_chat_template does); `template` is our built-in template
that renders the case's chat template text. manifest.json lists the cases.

The cases follow the released files: Llama 3 (TemplateProcessing "<|begin_of_text|> $A",
no add_bos_token), Llama 2 / Mistral (LlamaTokenizer, add_bos_token true), a Mistral
finetune with add_eos_token true, Qwen3 (ByteLevel, no BOS), Gemma (add_bos_token true),
Phi-3 (add_bos_token false beside a "<s> $A" template), OLMo 2 and Granite (GPT-2 style),
a null post-processor with add_bos_token, and the embedded default model (ByteLevel,
bos_token set but never added). transformers 5 drops add_bos_token / add_eos_token from
tokenizer_config.json whenever tokenizer.json exists, so the file's post-processor alone
decides; the cases that set them (mistral_add_eos, phi3, granite, null_post_processor_add_bos)
pin that down.
"""
import json
import os
import shutil
import sys

import transformers
from tokenizers import models, trainers, pre_tokenizers

OUT = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CORPUS = [
    "Question: What is 7 plus 5?\nAnswer: 12", "The quick brown fox jumps over the lazy dog.",
    "hello world, hello there", "Answer the question in one word.", "numbers 1234 5678",
    "system prompts and user turns", "café naïve", "def f(x):\n    return x * 2\n",
] * 20
TEXTS = ["Question: What is 7 plus 5?\nAnswer:", "hello world", " leading space",
         "The quick brown fox.\n\nNew paragraph", "café 1234"]
CHAT = [{"role": "user", "content": "What is 7 plus 5?"},
        {"role": "assistant", "content": "12"},
        {"role": "user", "content": "And 3 plus 4?"}]
TRAIN_CHAT = [{"role": "user", "content": "What is 7 plus 5?"},
              {"role": "assistant", "content": "12"},
              {"role": "user", "content": "And 3 plus 4?"},
              {"role": "assistant", "content": "7"}]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == "
         "'assistant' else m['role'] %}{{ '<start_of_turn>' + role + '\n' + m['content'] + "
         "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<start_of_turn>model\n' }}{% endif %}")


def trained(cls, specials, **kwargs):
    """An instance of `cls` whose BPE vocabulary is trained on CORPUS through the class's own
    normalizer and pre-tokenizer, so that tokenizer.json is what the class itself builds.
    The generic TokenizersBackend (tokenizer_class PreTrainedTokenizerFast) gets a byte-level
    pipeline, as Llama 3's file has."""
    if cls is transformers.TokenizersBackend:
        from tokenizers import Tokenizer, decoders
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok = cls(tokenizer_object=backend, **kwargs)
        tok.add_tokens([transformers.AddedToken(t, special=True, normalized=False)
                        for t in specials], special_tokens=True)
        return tok
    probe = cls(**kwargs)
    backend = probe.backend_tokenizer
    old = json.loads(backend.to_str())["model"]
    backend.model = models.BPE(unk_token=old.get("unk_token"),
                               byte_fallback=bool(old.get("byte_fallback")), fuse_unk=True)
    alphabet = []
    if isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel) or \
            "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer")):
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=alphabet, show_progress=False))
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = cls(vocab=model["vocab"], merges=merges, **kwargs)
    # As released files: the special tokens are added tokens, matched before the model.
    tok.add_tokens([transformers.AddedToken(t, special=True, normalized=False) for t in specials],
                   special_tokens=True)
    return tok


def write(case, tok, post_processor=None, config_edit=None, chat_template=None, chat_name=None):
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.save_pretrained(d)
    if post_processor is not None:  # the file's post-processor, as the released file has it
        path = os.path.join(d, "tokenizer.json")
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        j["post_processor"] = post_processor(j) if callable(post_processor) else post_processor
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
    if config_edit is not None:
        path = os.path.join(d, "tokenizer_config.json")
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        config_edit(cfg)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)
    record(case, d, chat_name)


def record(case, d, chat_name=None):
    ref = transformers.AutoTokenizer.from_pretrained(d)
    ids = [ref(t).input_ids for t in TEXTS]
    chat = None
    if chat_name is not None:
        def chat_ids(messages, gen):
            rendered = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            out = ref(rendered, add_special_tokens=False).input_ids
            assert out == list(ref.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                       add_generation_prompt=gen)["input_ids"])
            return out
        chat = {"template": chat_name, "prompt_ids": chat_ids(CHAT, True),
                "train_ids": chat_ids(TRAIN_CHAT, False)}
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": TEXTS, "ids": ids, "eos_id": ref.eos_token_id, "chat": chat}, f,
                  ensure_ascii=False)
    CASES.append(case)
    print(case, type(ref).__name__, ids[0][:3], "...", ids[0][-2:])


def template(single):
    def make(j):
        vocab = j["model"]["vocab"]
        added = {t["content"]: t["id"] for t in j.get("added_tokens", [])}
        names = [p for p in single.split() if p != "$A"]
        return {"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}} if p == "$A" else
                           {"SpecialToken": {"id": p, "type_id": 0}} for p in single.split()],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {n: {"id": n, "ids": [added.get(n, vocab.get(n))],
                                       "tokens": [n]} for n in names}}
    return make


def drop_add_keys(cfg):
    cfg.pop("add_bos_token", None)
    cfg.pop("add_eos_token", None)


def setting(**kv):
    def edit(cfg):
        drop_add_keys(cfg)
        cfg.update(kv)
    return edit


CASES = []
os.makedirs(OUT, exist_ok=True)
T = transformers
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
write("llama3", trained(T.TokenizersBackend, LLAMA3_SPECIALS, bos_token="<|begin_of_text|>",
                        eos_token="<|eot_id|>"),
      post_processor=template("<|begin_of_text|> $A"), config_edit=drop_add_keys)
write("llama2", trained(T.LlamaTokenizer, ["<unk>", "<s>", "</s>"]),
      post_processor=template("<s> $A"),
      config_edit=setting(add_bos_token=True, add_eos_token=False))
write("mistral_add_eos", trained(T.LlamaTokenizer, ["<unk>", "<s>", "</s>"]),
      post_processor=template("<s> $A"),
      config_edit=setting(add_bos_token=True, add_eos_token=True))
write("qwen3", trained(T.Qwen2Tokenizer, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                       eos_token="<|im_end|>"),
      post_processor={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                      "use_regex": False},
      config_edit=drop_add_keys, chat_template=CHATML, chat_name="chatml")
write("gemma", trained(T.GemmaTokenizer, ["<pad>", "<eos>", "<bos>", "<unk>",
                                          "<start_of_turn>", "<end_of_turn>"]),
      post_processor=template("<bos> $A"),
      config_edit=setting(add_bos_token=True, add_eos_token=False), chat_template=GEMMA,
      chat_name="gemma")
write("phi3", trained(T.LlamaTokenizer, ["<unk>", "<s>", "</s>", "<|user|>", "<|end|>",
                                         "<|assistant|>"], eos_token="<|end|>"),
      post_processor=template("<s> $A"),
      config_edit=setting(add_bos_token=False, add_eos_token=False))
write("olmo2", trained(T.GPT2Tokenizer, ["<|endoftext|>", "<|pad|>"]),
      post_processor={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True},
      config_edit=drop_add_keys)
write("granite", trained(T.GPT2Tokenizer, ["<|end_of_text|>", "<|start_of_role|>"],
                         bos_token="<|end_of_text|>", eos_token="<|end_of_text|>"),
      post_processor={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True},
      config_edit=setting(add_bos_token=False))
write("null_post_processor_add_bos", trained(T.GPT2Tokenizer, ["<|endoftext|>"]),
      post_processor=None, config_edit=setting(add_bos_token=True))
# The embedded default model, as shipped.
d = os.path.join(OUT, "default")
os.makedirs(d, exist_ok=True)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(ROOT, "models", "default", f), d)
record("default", d)
with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump({"cases": CASES}, f)
