#!/usr/bin/env python3
"""Checks the embedded default model in models/default/ (made by scripts/pretrain_default_model.py).

Usage: default_model_test.py MODEL_DIR

  * the shipped files are there and the directory is at most 20 MB;
  * config.json is a small Llama, tokenizer.json loads in `tokenizers`, the whole directory
    loads in `transformers` (model + tokenizer, with a ChatML chat_template in
    tokenizer_config.json and the special tokens the server relies on);
  * perplexity on a few unseen, corpus-like English sentences is far below the uniform
    baseline (the vocabulary size): < 200;
  * greedy generation decodes to printable, mostly-alphabetic text.
"""

import math
import os
import sys
import unittest

MODEL_DIR = None
MAX_BYTES = 20 * 1000 * 1000
SHIPPED = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
           "tokenizer_config.json"]

# Not in the corpus: written for this test in the style of the training text.
SENTENCES = [
    "A friend is someone who knows all about you and likes you anyway.",
    "The best way to predict the future is to invent it.",
    "There is no time like the present for doing what you ought to have done yesterday.",
    "Never put off until tomorrow what you can do the day after tomorrow.",
    "When the going gets tough, the tough go out for coffee.",
    "Question: What is 9 plus 4?\nAnswer: 9 plus 4 is 13.",
    "Question: What is the opposite of hot?\nAnswer: The opposite of hot is cold.",
]


class DefaultModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.set_num_threads(2)
        cls.torch = torch
        cls.model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
        cls.model.eval()
        cls.tok = AutoTokenizer.from_pretrained(MODEL_DIR)

    def test_files_and_size(self):
        for name in SHIPPED:
            self.assertTrue(os.path.isfile(os.path.join(MODEL_DIR, name)), name)
        total = 0
        for root, _, files in os.walk(MODEL_DIR):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        self.assertLessEqual(total, MAX_BYTES, f"models/default is {total} bytes")

    def test_config(self):
        cfg = self.model.config
        self.assertEqual(cfg.model_type, "llama")
        self.assertTrue(cfg.tie_word_embeddings)
        n = sum(p.numel() for p in self.model.parameters())
        self.assertGreater(n, 3_000_000)
        self.assertLess(n, 8_000_000)
        from safetensors import safe_open
        with safe_open(os.path.join(MODEL_DIR, "model.safetensors"), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        self.assertEqual(dtypes, {"BF16"})

    def test_tokenizers_library(self):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
        self.assertEqual(tok.get_vocab_size(), self.model.config.vocab_size)
        text = "Question: What is 7 plus 5?\nAnswer: 12."
        self.assertEqual(tok.decode(tok.encode(text).ids), text)
        for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"):
            self.assertIsNotNone(tok.token_to_id(special), special)
            self.assertEqual(tok.encode(special).ids, [tok.token_to_id(special)])

    def test_transformers_tokenizer(self):
        tok = self.tok
        self.assertEqual(tok.eos_token, "<|endoftext|>")
        self.assertEqual(tok.pad_token, "<|pad|>")
        self.assertEqual(tok.eos_token_id, self.model.config.eos_token_id)
        chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                       add_generation_prompt=True)
        self.assertEqual(chat, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        eos = self.model.generation_config.eos_token_id
        self.assertIn(tok.convert_tokens_to_ids("<|im_end|>"), eos)

    def test_perplexity_far_below_uniform(self):
        torch = self.torch
        total_nll, total_tokens = 0.0, 0
        with torch.no_grad():
            for s in SENTENCES:
                ids = torch.tensor([[self.tok.eos_token_id] + self.tok(s).input_ids])
                out = self.model(input_ids=ids, labels=ids)
                n = ids.shape[1] - 1
                total_nll += out.loss.item() * n
                total_tokens += n
        ppl = math.exp(total_nll / total_tokens)
        print(f"perplexity on {len(SENTENCES)} unseen sentences: {ppl:.1f} "
              f"(uniform: {self.model.config.vocab_size})")
        self.assertLess(ppl, 200.0)

    def test_greedy_generation_is_text(self):
        torch = self.torch
        for prompt in ["Question: What is 7 plus 5?\nAnswer:", "The secret of happiness is"]:
            ids = self.tok(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = self.model.generate(ids, max_new_tokens=24, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            text = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            print(f"{prompt!r} -> {text!r}")
            self.assertTrue(text.strip(), f"empty generation for {prompt!r}")
            self.assertTrue(all(c.isprintable() or c == "\n" for c in text), repr(text))
            letters = sum(c.isalpha() or c.isspace() for c in text)
            self.assertGreater(letters / len(text), 0.6, repr(text))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    MODEL_DIR = sys.argv.pop(1)
    unittest.main(verbosity=2)
