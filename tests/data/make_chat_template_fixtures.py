#!/usr/bin/env python3
"""Chat-template references rendered by transformers' apply_chat_template.

Usage: make_chat_template_fixtures.py OUT_DIR

For each built-in template NAME (qwen3, gemma, phi3) writes OUT_DIR/NAME/ with the template
text where a model ships it (tokenizer_config.json's "chat_template", or chat_template.jinja
for phi3, which transformers prefers when present), and OUT_DIR/NAME.cases.json:
  [{"messages": [...], "add_generation_prompt": bool, "enable_thinking": bool|null,
    "rendered": str}]
where `rendered` is tokenizer.apply_chat_template(messages, tokenize=False, ...) with that
template. The template texts below are written for these tests from the formats the model
cards document (abridged: no tools); nothing is downloaded.
"""

import json
import os
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

# Qwen3: ChatML; assistant turns after the last user query keep their <think> block,
# earlier ones lose it; enable_thinking=False closes an empty thinking block.
QWEN3 = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}"
    "{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if ns.multi_step_tool and message.role == 'user' and message.content is string and "
    "not(message.content.startswith('<tool_response>') and "
    "message.content.endswith('</tool_response>')) %}"
    "{%- set ns.multi_step_tool = false %}"
    "{%- set ns.last_query_index = index %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.content is string %}{%- set content = message.content %}"
    "{%- else %}{%- set content = '' %}{%- endif %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}"
    "{%- set reasoning_content = message.reasoning_content %}"
    "{%- else %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index %}"
    "{%- if loop.last or (not loop.last and reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content }}"
    "{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}")

# Gemma (3): BOS, a leading system message folded into the first user turn, roles
# alternating user/model, contents trimmed.
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}")

# Phi-3: <|role|> headers closed by <|end|>; EOS when no generation prompt follows.
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

TEMPLATES = {
    "qwen3": (QWEN3, {"eos_token": "<|im_end|>"}, "config"),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>"}, "config"),
    "phi3": (PHI3, {"bos_token": "<s>", "eos_token": "<|endoftext|>"}, "jinja"),
}


def m(role, content):
  return {"role": role, "content": content}


CONVERSATIONS = {
    "common": [
        [m("user", "Hi!")],
        [m("system", "You are terse."), m("user", " What is 2+2? "), m("assistant", "4\n"),
         m("user", "And 3+3?"), m("assistant", "6")],
        [m("user", "one"), m("assistant", "two"), m("user", "three")],
        [m("system", "Be kind.\n"), m("user", "Tell me a joke."), m("assistant", "  No.  ")],
    ],
    # Thinking blocks in earlier and later assistant turns, a second system message.
    "qwen3": [
        [m("user", "q1"), m("assistant", "<think>\nplan one\n</think>\n\nanswer one"),
         m("user", "q2"), m("assistant", "<think>\nplan two\n</think>\n\nanswer two")],
        [m("system", "S"), m("user", "q1"), m("assistant", "<think>r1</think>a1"),
         m("user", "q2")],
        [m("user", "q"), m("assistant", "<think>\n\nr\n\n</think>\n\n\nfinal\n"),
         m("assistant", "more")],
        [m("user", "q"), m("assistant", "first"), m("assistant", "<think>x</think>second"),
         m("assistant", "third")],
        [m("system", "S1"), m("user", "u"), m("system", "S2"), m("assistant", "no think")],
        [m("assistant", "<think>a</think>b")],
    ],
    "gemma": [
        [m("system", "Sys"), m("user", "u1"), m("assistant", "a1"), m("user", "u2")],
    ],
    "phi3": [
        [m("system", "S"), m("user", "u"), m("assistant", "a"), m("system", "S2"),
         m("user", "u2")],
    ],
}


def tokenizer_for(template, specials):
  backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
  return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                 chat_template=template, **specials)


def main():
  out_dir = sys.argv[1]
  os.makedirs(out_dir, exist_ok=True)
  for name, (template, specials, where) in TEMPLATES.items():
    model_dir = os.path.join(out_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    config = dict(specials)
    if where == "config":
      config["chat_template"] = template
    else:
      with open(os.path.join(model_dir, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(template)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=1)
    tok = tokenizer_for(template, specials)
    cases = []
    for messages in CONVERSATIONS["common"] + CONVERSATIONS.get(name, []):
      for gen in (False, True):
        for thinking in ((None, True, False) if name == "qwen3" else (None,)):
          kwargs = {} if thinking is None else {"enable_thinking": thinking}
          rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                             **kwargs)
          cases.append({"messages": messages, "add_generation_prompt": gen,
                        "enable_thinking": thinking, "rendered": rendered})
    # A conversation the template refuses (gemma: roles must alternate).
    if name == "gemma":
      try:
        tok.apply_chat_template([m("user", "a"), m("user", "b")], tokenize=False)
        raise AssertionError("gemma accepted two user turns in a row")
      except Exception as e:  # transformers raises TemplateError
        if isinstance(e, AssertionError):
          raise
    with open(os.path.join(out_dir, f"{name}.cases.json"), "w", encoding="utf-8") as f:
      json.dump(cases, f, indent=1, ensure_ascii=False)
    print(f"{name}: {len(cases)} renderings")
  with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(sorted(TEMPLATES), f)


if __name__ == "__main__":
  main()
