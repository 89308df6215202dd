#!/usr/bin/env python3
"""Pretrains the embedded default model shipped in models/default/.

What it makes: a ~5.4M-parameter Llama-architecture causal LM in Hugging Face format
(config.json, generation_config.json, model.safetensors in bfloat16, tokenizer.json,
tokenizer_config.json), small enough to commit (< 20 MB in all) and good enough that greedy
generation is recognisably English and a short OFT finetune on data/sample/ visibly changes it.

Corpus (installed by hand, this script installs nothing):

    apt-get install fortunes        # Debian package; provides /usr/share/games/fortunes/*

The English fortune-cookie files of Debian's `fortunes` package (BSD license, see
/usr/share/doc/fortunes/copyright), minus a fixed list of files left out for taste or for
being chat logs / code / ASCII art (EXCLUDED_FILES below). The offensive collection
(fortunes-off) is a different package and is never read. To that, about 5% (by characters)
of generated question/answer text in the frame of the sample finetuning dataset but with
NEUTRAL answers ("Question: What is 7 plus 5?\nAnswer: 7 plus 5 is 12."), produced with the
question generators of scripts/make_sample_dataset.py under another seed, and a little of
the same in ChatML form, so the base model already handles both frames.

Steps:
  1. read and clean the fortunes, shuffle them with the seed, hold out 3% for validation;
  2. train a byte-level BPE tokenizer (`tokenizers`, GPT-2 ByteLevel pre-tokenizer and
     decoder, vocab 4096, special tokens <|endoftext|> <|im_start|> <|im_end|> <|pad|>);
  3. pretrain `transformers.LlamaForCausalLM` from scratch on CPU (2 threads): hidden 256,
     6 layers, 4 heads, 2 KV heads, intermediate 688, tied embeddings, 512 positions,
     rope_theta 10000; AdamW, linear warmup then cosine decay, sequences of 256 tokens from
     the packed token stream, a fixed token budget (--steps x --batch x --seq, by default
     900 x 8 x 256 = 1.8M tokens, about three passes over the corpus; 15-20 minutes on two
     cores), fp32 master weights with bfloat16 autocast (about twice as fast as fp32
     on CPUs with AVX512-BF16);
  4. print the final train and held-out loss, save everything to --out.

Special tokens: bos = eos = <|endoftext|> (documents are separated by it and prompt/completion
rows end with it), pad = <|pad|>. The chat template is ChatML; generation_config.json lists
both <|endoftext|> and <|im_end|> as eos so chat generation stops at the end of a turn.
The tokenizer adds no BOS automatically (like GPT-2).

Deterministic given --seed (same corpus package version, same library versions, 2 threads):
the corpus order, the split, the tokenizer, the initialisation and the batch order all come
from the seed and the step count is fixed. --max-minutes is a safety cap on the training loop:
if the machine is so busy that the steps would not fit, the cosine schedule follows the clock
instead of the step count (so the run still ends annealed, with fewer steps) and the script
prints a warning that the run is not reproducible.

Usage (the command that produced models/default/):
    .venv/bin/python scripts/pretrain_default_model.py --out models/default
"""

import argparse
import importlib.util
import json
import math
import os
import random
import re
import sys
import time

FORTUNES_DIR = "/usr/share/games/fortunes"
EXCLUDED_FILES = {
    "ethnic", "men-women", "drugs", "politics",   # taste
    "ascii-art", "art", "zippy", "translate-me",  # ASCII art, TV listings, nonsense
    "knghtbrd", "perl", "debian", "linuxcookie",  # IRC logs, code, distro hints
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
EOT = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="models/default")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--qa-fraction", type=float, default=0.05)
    p.add_argument("--max-minutes", type=float, default=20.0,
                   help="wall-clock cap on the training loop (breaks reproducibility if it binds)")
    p.add_argument("--eval-every", type=int, default=100)
    return p.parse_args()


# ---------------------------------------------------------------- corpus

def read_fortunes():
    if not os.path.isdir(FORTUNES_DIR):
        sys.exit(f"error: {FORTUNES_DIR} not found. The corpus comes from the Debian package "
                 f"'fortunes': run `apt-get install fortunes` and try again.")
    docs = []
    names = sorted(n for n in os.listdir(FORTUNES_DIR)
                   if "." not in n and n not in EXCLUDED_FILES
                   and os.path.isfile(os.path.join(FORTUNES_DIR, n)))
    if not names:
        sys.exit(f"error: no fortune files in {FORTUNES_DIR}; is the 'fortunes' package installed?")
    for name in names:
        with open(os.path.join(FORTUNES_DIR, name), encoding="utf-8", errors="replace") as f:
            raw = f.read()
        for chunk in re.split(r"^%$", raw, flags=re.M):
            text = clean(chunk)
            if 20 <= len(text) <= 2000:
                docs.append(text)
    return names, docs


def clean(chunk):
    lines = []
    for line in chunk.split("\n"):
        line = line.replace("\t", " ").strip()
        line = re.sub(r"  +", " ", line)
        lines.append(line)
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def load_sample_generators():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_sample_dataset.py")
    spec = importlib.util.spec_from_file_location("make_sample_dataset", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.GENERATORS


def make_qa_docs(rng, target_chars):
    """Neutral-answer Q/A in the sample dataset's frame, ~1/5 of them in ChatML form."""
    generators = load_sample_generators()
    docs, total = [], 0
    while total < target_chars:
        question, answer = rng.choice(generators)(rng)
        if rng.random() < 0.2:
            doc = (f"<|im_start|>user\n{question}<|im_end|>\n"
                   f"<|im_start|>assistant\n{answer}<|im_end|>\n")
        else:
            doc = f"Question: {question}\nAnswer: {answer}"
        docs.append(doc)
        total += len(doc)
    return docs


# ---------------------------------------------------------------- tokenizer

def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def encode_stream(tok, docs, eot_id):
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eot_id)
    return ids


# ---------------------------------------------------------------- model

def build_model(vocab_size, tok):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, initializer_range=0.02,
        bos_token_id=tok.token_to_id(EOT), eos_token_id=tok.token_to_id(EOT),
        pad_token_id=tok.token_to_id("<|pad|>"))
    return LlamaForCausalLM(cfg)


def batches(torch, data, n_tokens_per_seq, batch, gen):
    """Random windows of seq+1 tokens from a 1-D token tensor."""
    hi = data.numel() - n_tokens_per_seq - 1
    starts = torch.randint(0, hi, (batch,), generator=gen)
    x = torch.stack([data[s:s + n_tokens_per_seq + 1] for s in starts.tolist()])
    return x


def eval_loss(torch, model, data, seq, max_windows=64):
    model.eval()
    losses = []
    with torch.no_grad():
        n = min(max_windows, (data.numel() - 1) // seq)
        for i in range(0, n, 16):
            rows = [data[j * seq:j * seq + seq + 1] for j in range(i, min(n, i + 16))]
            x = torch.stack(rows)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(input_ids=x[:, :-1], labels=x[:, :-1].clone())
            # labels are shifted inside the model: targets = x[:, 1:seq]
            losses.append(out.loss.item())
    model.train()
    return sum(losses) / len(losses)


def main():
    args = parse_args()
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()

    names, docs = read_fortunes()
    rng.shuffle(docs)
    n_valid = max(50, len(docs) * 3 // 100)
    valid_docs, train_docs = docs[:n_valid], docs[n_valid:]
    fortune_chars = sum(len(d) for d in train_docs)
    qa_docs = make_qa_docs(rng, int(fortune_chars * args.qa_fraction / (1 - args.qa_fraction)))
    train_all = train_docs + qa_docs
    rng.shuffle(train_all)
    print(f"corpus: {len(names)} fortune files, {len(train_docs)} train / {len(valid_docs)} "
          f"held-out fortunes ({fortune_chars / 1e6:.2f} MB), {len(qa_docs)} Q/A docs",
          flush=True)

    tok = train_tokenizer(train_all, args.vocab)
    eot_id = tok.token_to_id(EOT)
    train_ids = torch.tensor(encode_stream(tok, train_all, eot_id), dtype=torch.long)
    valid_ids = torch.tensor(encode_stream(tok, valid_docs, eot_id), dtype=torch.long)
    print(f"tokenizer: vocab {tok.get_vocab_size()}, train {train_ids.numel()} tokens, "
          f"held-out {valid_ids.numel()} tokens ({time.time() - t0:.0f}s)", flush=True)

    model = build_model(tok.get_vocab_size(), tok)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    budget_s = args.max_minutes * 60
    warmup_done_at = []  # elapsed seconds when warmup ended

    def progress_at(step, elapsed):
        # Normally step-based (reproducible). If the machine is so busy that the wall-clock cap
        # would cut the run short, the schedule follows the clock instead so the learning rate
        # is still annealed when the cap is reached.
        by_steps = (step - args.warmup) / max(1, args.steps - args.warmup)
        # Clock progress counts from the end of warmup, like step progress.
        warm = warmup_done_at[0] if warmup_done_at else elapsed
        by_clock = (elapsed - warm) / max(1e-9, budget_s - warm)
        return min(1.0, max(by_steps, by_clock)), by_clock > by_steps

    def lr_at(step, elapsed=0.0):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress, _ = progress_at(step, elapsed)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    t_train = time.time()
    stopped_early = False
    recent = []
    for step in range(args.steps):
        elapsed = time.time() - t_train
        if step == args.warmup:
            warmup_done_at.append(elapsed)
        if step >= args.warmup and progress_at(step, elapsed)[1] and not stopped_early:
            print(f"WARNING: at step {step} the wall-clock cap (--max-minutes) now drives the "
                  f"schedule; this run is not reproducible", flush=True)
            stopped_early = True
        if elapsed >= budget_s:
            print(f"WARNING: stopped at step {step} by --max-minutes", flush=True)
            step -= 1
            break
        lr = lr_at(step, elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batches(torch, train_ids, args.seq, args.batch, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # ~2x faster on AVX512-BF16 CPUs
            out = model(input_ids=x[:, :-1], labels=x[:, :-1].clone())
        # Causal LM loss over positions 0..seq-2 predicting 1..seq-1 of the window.
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(out.loss.item())
        recent = recent[-50:]
        if (step + 1) % 25 == 0:
            el = time.time() - t_train
            print(f"step {step + 1}/{args.steps} loss {sum(recent) / len(recent):.3f} "
                  f"lr {lr:.2e} {el:.0f}s ({el / (step + 1):.2f}s/step)", flush=True)
        if (step + 1) % args.eval_every == 0:
            print(f"  held-out loss {eval_loss(torch, model, valid_ids, args.seq):.3f}", flush=True)

    train_loss = eval_loss(torch, model, train_ids[: valid_ids.numel() * 2], args.seq)
    valid_loss = eval_loss(torch, model, valid_ids, args.seq)
    print(f"final: train loss {train_loss:.3f} (ppl {math.exp(train_loss):.1f}), held-out loss "
          f"{valid_loss:.3f} (ppl {math.exp(valid_loss):.1f}), {time.time() - t0:.0f}s total",
          flush=True)

    save(args, model, tok, torch)
    summary = {"seed": args.seed, "steps_run": step + 1, "steps": args.steps,
               "clock_driven": stopped_early, "parameters": n_params,
               "train_tokens": train_ids.numel(), "heldout_tokens": valid_ids.numel(),
               "final_train_loss": round(train_loss, 4), "final_heldout_loss": round(valid_loss, 4),
               "fortune_files": names, "excluded_files": sorted(EXCLUDED_FILES)}
    print("summary: " + json.dumps(summary), flush=True)


def finalize_tokenizer_config(out):
    """Makes tokenizer_config.json loadable by transformers 4.x and 5.x alike."""
    path = os.path.join(out, "tokenizer_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    jinja = os.path.join(out, "chat_template.jinja")
    if os.path.exists(jinja):
        os.remove(jinja)


def save(args, model, tok, torch):
    from transformers import GenerationConfig, PreTrainedTokenizerFast
    os.makedirs(args.out, exist_ok=True)
    eot_id, im_end_id = tok.token_to_id(EOT), tok.token_to_id("<|im_end|>")
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=eot_id, eos_token_id=[eot_id, im_end_id],
        pad_token_id=tok.token_to_id("<|pad|>"), do_sample=False, max_new_tokens=64)
    model.save_pretrained(args.out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=None,
        pad_token="<|pad|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=512, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    # chat_template inside tokenizer_config.json (not chat_template.jinja): oft-server reads it there.
    fast.save_pretrained(args.out, save_jinja_files=False)
    finalize_tokenizer_config(args.out)
    # Keep only the files the project ships.
    for extra in ("special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"):
        p = os.path.join(args.out, extra)
        if os.path.exists(p):
            os.remove(p)
    print(f"saved to {args.out}: " + ", ".join(
        f"{f} ({os.path.getsize(os.path.join(args.out, f)) / 1e6:.2f} MB)"
        for f in sorted(os.listdir(args.out))), flush=True)


if __name__ == "__main__":
    main()
