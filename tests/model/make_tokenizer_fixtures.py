#!/usr/bin/env python3
"""Trains small tokenizers with Hugging Face `tokenizers` and records reference outputs.

Usage: make_tokenizer_fixtures.py OUT_DIR

Writes into OUT_DIR, for each tokenizer NAME:
  NAME.tokenizer.json   the trained tokenizer
  NAME.cases.json       {"encode": [{text, ids, ids_plain, decoded, decoded_skip}],
                         "decode": [{ids, decoded, decoded_skip}],
                         "big": {text, ids} or null}
and manifest.json listing the names. `ids` is encode(text, add_special_tokens=True),
`ids_plain` the same without special tokens, `decoded` / `decoded_skip` decode(ids) with
skip_special_tokens False / True. The corpus is generated deterministically (fixed seed).
"""

import json
import os
import random
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

FRAGMENTS = [
    # English, contractions, casing.
    "The quick brown fox jumps over the lazy dog.", "I'll tell you what we've done, DON'T WE'RE",
    "it's 5 o'clock somewhere", "Hello, world!", "hello world", "HELLO World", "e-mail: a.b@c.org",
    # Accents (composed and decomposed), other scripts.
    "café naïve résumé Ångström", "cafe\u0301 nai\u0308ve", "Straße größer Übermaß",
    "Ελληνικά γράμματα", "Привет, как дела?", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    # CJK.
    "你好，世界！今天天气很好。", "日本語のテキストです、カタカナもある。", "한국어 문장입니다.",
    "漢字とひらがな混じり文", "𠀀𠀁 rare CJK ext-B",
    # Emoji, ZWJ sequences, flags, skin tones, keycaps, variation selectors.
    "👋🌍", "family: 👨\u200d👩\u200d👧\u200d👦", "flags 🇺🇸🇯🇵🇫🇷", "thumbs 👍🏽👍🏿", "keycap 1️⃣ #️⃣",
    "❤️ vs ❤", "🏳️\u200d🌈", "🤖💬🔥🔥🔥",
    # Code with tabs and whitespace runs.
    "def f(x):\n\treturn x * 2  # double\n", "int main() {\n    return 0;\n}\n",
    "for (int i = 0; i < n; ++i) {\n\t\tsum += a[i];\n\t}", "x    =     y\t\t\tz",
    "if x:\n\n\n    pass\r\n", "   leading spaces", "trailing spaces   ", "\t\ttabs\t",
    "{\"key\": [1, 2, 3], \"ok\": true}", "<div class=\"a\">&amp;</div>", "a\u00a0b\u3000c\u2003d",
    # Numbers.
    "1234567890", "3.14159265", "$1,000,000.00", "2024-01-15T12:34:56Z", "0x1F600", "١٢٣ ٤٥٦",
    # Special-token strings and near misses inside text.
    "<s>", "</s>", "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more", "<|begin_of_text|>hi<|eot_id|>", "<|im_sta partial", "< s >",
    "foo<unk>bar", "x <mask> y", "[TOOL] call", "say hello world twice: hello world",
    # Odd characters.
    "zero\u200bwidth", "replacement \ufffd char", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "ﬁ ligature ½ ⅓", "\u2028line sep",
]

SEPARATORS = [" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "", "\r\n", "    "]


def make_corpus(seed, lines):
  rng = random.Random(seed)
  out = []
  for _ in range(lines):
    k = rng.randint(1, 5)
    parts = [rng.choice(FRAGMENTS) for _ in range(k)]
    text = ""
    for p in parts:
      text += p + rng.choice(SEPARATORS)
    out.append(text)
  return out


def train(tok, lines, vocab_size, special_tokens, **kwargs):
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                show_progress=False, **kwargs)
  tok.train_from_iterator(lines, trainer=trainer)
  return tok


def with_json(tok, edit):
  """Applies `edit` to the tokenizer's JSON and reloads it, so the reference outputs come from
  exactly the file we write."""
  j = json.loads(tok.to_str())
  edit(j)
  return Tokenizer.from_str(json.dumps(j))


def legacy_merges(j):
  merges = j["model"]["merges"]
  if merges and isinstance(merges[0], list):
    assert all(" " not in a and " " not in b for a, b in merges)
    j["model"]["merges"] = [f"{a} {b}" for a, b in merges]


def add_byte_tokens(j):
  vocab = j["model"]["vocab"]
  n = max(vocab.values()) + 1
  for b in range(256):
    name = f"<0x{b:02X}>"
    if name not in vocab:
      vocab[name] = n
      n += 1


def gpt2(lines):
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  train(tok, lines, 1500, ["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok = with_json(tok, legacy_merges)
  tok.add_special_tokens([AddedToken("<|im_start|>", special=True),
                          AddedToken("<|im_end|>", special=True)])
  tok.add_tokens([AddedToken("[TOOL]", normalized=False, special=False)])
  return tok


def roberta(lines):
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
  tok.decoder = decoders.ByteLevel()
  train(tok, lines, 1200, ["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
  tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                    ("<s>", tok.token_to_id("<s>")))
  return tok


def llama3(lines):
  specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
              "<|end_header_id|>", "<|eot_id|>"]
  tok = Tokenizer(models.BPE(ignore_merges=True))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  train(tok, lines, 2000, specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  bos = tok.token_to_id("<|begin_of_text|>")
  tok.post_processor = processors.Sequence([
      processors.ByteLevel(trim_offsets=False),
      processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                    pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                    special_tokens=[("<|begin_of_text|>", bos)])])
  return tok


def qwen2(lines):
  tok = Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  train(tok, lines, 1800, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  return tok


def llama2(lines):
  tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                         normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  # A small alphabet, so that rare characters go through byte fallback.
  train(tok, lines, 1500, ["<unk>", "<s>", "</s>"], limit_alphabet=120)
  tok = with_json(tok, lambda j: (add_byte_tokens(j), legacy_merges(j)))
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
  tok.add_special_tokens([AddedToken("<|im_start|>", special=True),
                          AddedToken("<|im_end|>", special=True)])
  tok.add_tokens([AddedToken("hello world", normalized=True, special=False),
                  AddedToken("[TOOL]", normalized=False, special=False, rstrip=True)])
  return tok


def metaspace(lines):
  tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                               split=True)
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
  train(tok, lines, 1200, ["<unk>", "<s>", "</s>"], limit_alphabet=100)
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")),
                                             ("</s>", tok.token_to_id("</s>"))])
  return tok


def split_variety(lines):
  """Exercises the Split behaviors and invert, with a String pattern and no decoder."""
  tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split("-", behavior="merged_with_previous"),
      pre_tokenizers.Split(Regex(r"\p{P}"), behavior="merged_with_next"),
      pre_tokenizers.Split(Regex(r"\d"), behavior="contiguous"),
      pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
      pre_tokenizers.Split(Regex(r"[^\p{Han}]+"), behavior="merged_with_previous", invert=True),
  ])
  train(tok, lines, 1000, ["<unk>", "<pad>"], limit_alphabet=150)
  return tok


BUILDERS = [("gpt2", gpt2), ("roberta", roberta), ("llama3", llama3), ("qwen2", qwen2),
            ("llama2", llama2), ("metaspace", metaspace), ("split_variety", split_variety)]
BIG = {"gpt2", "llama3", "llama2"}
# Features each fixture must exercise, so that the parity test cannot pass vacuously:
# name -> [(description, predicate over the tokens of all encode cases)].
COVERAGE = {
    "llama2": [("byte fallback", lambda toks: any(t.startswith("<0x") for t in toks))],
    "metaspace": [("unk", lambda toks: "<unk>" in toks)],
    "split_variety": [("unk", lambda toks: "<unk>" in toks)],
    "gpt2": [("special token inside text", lambda toks: "<|im_start|>" in toks)],
}


def cases_for(tok, texts, rng):
  encode = []
  for text in texts:
    ids = tok.encode(text, add_special_tokens=True).ids
    encode.append({
        "text": text,
        "ids": ids,
        "ids_plain": tok.encode(text, add_special_tokens=False).ids,
        "decoded": tok.decode(ids, skip_special_tokens=False),
        "decoded_skip": tok.decode(ids, skip_special_tokens=True),
    })
  # Decoding arbitrary id sequences: split multi-byte characters, byte tokens, specials.
  decode = []
  size = tok.get_vocab_size(with_added_tokens=True)
  for i in range(150):
    if i % 2 == 0:
      ids = [rng.randrange(size) for _ in range(rng.randint(1, 12))]
    else:
      full = rng.choice(encode)["ids"]
      a = rng.randrange(len(full) + 1)
      b = rng.randrange(len(full) + 1)
      ids = full[min(a, b):max(a, b)]
    decode.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                   "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
  return encode, decode


def main():
  if len(sys.argv) != 2:
    sys.exit("usage: make_tokenizer_fixtures.py OUT_DIR")
  out_dir = sys.argv[1]
  os.makedirs(out_dir, exist_ok=True)
  train_lines = make_corpus(1, 3000)
  long_runs = [" " * 5000, " " * 5000 + "a", "\n" * 3000 + "x", "\t \t" * 2000, "a" * 5000,
               "你好" * 3000, "🤖" * 2000, "1" * 3000]
  texts = ["", " ", "  ", "\n", "a", "▁", "<s>", "<s><s>", " <mask>  x"] + FRAGMENTS + \
      long_runs + make_corpus(2, 250)
  big_text = "\n".join(make_corpus(3, 400))
  big_text = (big_text * (1_000_000 // len(big_text) + 1))[:1_000_000]
  manifest = []
  for name, build in BUILDERS:
    tok = build(train_lines)
    rng = random.Random(name)
    encode, decode = cases_for(tok, texts, rng)
    toks = [tok.id_to_token(i) or "" for case in encode for i in case["ids"]]
    for what, check in COVERAGE.get(name, []):
      assert check(toks), f"{name}: the corpus does not exercise {what}"
    big = None
    if name in BIG:
      big = {"text": big_text, "ids": tok.encode(big_text, add_special_tokens=False).ids}
    with open(os.path.join(out_dir, f"{name}.tokenizer.json"), "w", encoding="utf-8") as f:
      f.write(tok.to_str())
    with open(os.path.join(out_dir, f"{name}.cases.json"), "w", encoding="utf-8") as f:
      json.dump({"encode": encode, "decode": decode, "big": big}, f, ensure_ascii=False)
    manifest.append(name)
    print(f"{name}: vocab {tok.get_vocab_size()}, {len(encode)} encode cases, "
          f"{len(decode)} decode cases{', 1 MB case' if big else ''}")
  with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizers": manifest}, f)


if __name__ == "__main__":
  main()
