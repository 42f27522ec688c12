"""Tiny, randomly initialised Llama chat model for tests.

Tests of the serving stack (Ray Serve + vLLM, OpenAI-compatible API) need a
real model directory that vLLM and transformers load like any other, but the
test machines have no model hub access and only a couple of CPU cores. This
module builds one from nothing in a few seconds: a byte-level BPE tokenizer
trained on a built-in corpus plus a ~0.4M parameter ``LlamaForCausalLM``.
Its output is gibberish; only the plumbing is real. Weights are float32:
pass ``dtype="float32"`` to vLLM, whose ``"auto"`` serves float32 checkpoints
as bfloat16 on CPU (works, but greedy output then differs from transformers).
``vocab_size`` is an upper bound: the corpus yields ~507 tokens at most.

Bos handling (the easy thing to get wrong): plain ``encode``/``tokenizer(text)``
prepends ``<s>`` via the tokenizer.json post-processor, so completions prompts
get a bos. The chat template *also* starts with ``<s>``, because both
transformers' ``apply_chat_template(tokenize=True)`` and vLLM's chat path
tokenize the rendered text with ``add_special_tokens=False``; leaving ``<s>``
out of the template would give chat prompts no bos at all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from deployments.models.build_once import build_once

if TYPE_CHECKING:  # transformers loads only when a model is built
    from transformers import PreTrainedTokenizerFast

ROLES = ("system", "user", "assistant", "tool")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", *(f"<|{r}|>" for r in ROLES), "<|end|>"]
MARKER = ".tiny_llama_complete"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% set content = message['content'] %}"
    "{% if content is string %}{{ content }}"
    "{% elif content is iterable %}"
    "{% for part in content %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class ModelShape(TypedDict):
    """The LlamaConfig arguments that size the model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


# Sized for vLLM's CPU attention backend, which rejects head_dim < 32
# (hidden 64 / 4 heads = 16 fails at engine start).
MODEL_SHAPE = ModelShape(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _corpus() -> list[str]:
    # Combinatorial rather than random so the tokenizer is identical on every
    # machine and run, whatever the seed.
    subjects = ["The model", "A user", "The server", "Our team", "The assistant", "Every request"]
    verbs = ["answers", "reads", "writes", "sends", "checks", "returns"]
    objects = [
        "a short message",
        "the next token",
        "a simple question",
        "the chat history",
        "a helpful reply",
        "some plain English text",
    ]
    tails = ["quickly.", "with care.", "over the network.", "in a few seconds.", "again and again."]
    lines = [f"{s} {v} {o} {t}" for s in subjects for v in verbs for o in objects for t in tails]
    lines += [
        "Hello! Hi there, how are you today? I am fine, thank you.",
        "What is the weather like? It is sunny and warm, with a light wind.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024. Punctuation: , . ; : ! ? ' \" ( ) [ ] { }",
        'def hello(name):\n    return f"Hello, {name}!"\n',
    ]
    return lines


def _printable(text: str) -> bool:
    return "\ufffd" not in text and text.replace("\n", " ").isprintable()


# transformers types these for one item or a batch alike; these take and give one.
def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


def _decode_one(tokenizer: PreTrainedTokenizerFast, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    assert isinstance(text, str)
    return text


def _build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Full byte alphabet so any input (emoji, other scripts) encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers' __init__
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=None,
        clean_up_tokenization_spaces=False,
    )


def _write_model(tmp: Path, seed: int, vocab_size: int, max_position_embeddings: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer(vocab_size)
    tokenizer.model_max_length = max_position_embeddings
    # One self-contained tokenizer_config.json (transformers 5 would otherwise
    # split the template into chat_template.jinja, which older readers ignore).
    tokenizer.save_pretrained(tmp, save_jinja_files=False)
    cfg_path = tmp / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    # transformers 5 writes "TokenizersBackend"; without a class that keeps
    # tokenizer.json as-is, AutoTokenizer would pick LlamaTokenizer from
    # model_type and might rebuild the pre-tokenizer.
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    ids = {t: _token_id(tokenizer, t) for t in ("<s>", "</s>", "<pad>", "<|end|>")}
    # <|end|> closes every chat turn, so it must stop generation like </s> does.
    eos_ids = [ids["</s>"], ids["<|end|>"]]

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        bos_token_id=ids["<s>"],
        eos_token_id=eos_ids,
        pad_token_id=ids["<pad>"],
        # Untied: with tied weights a random model just echoes its last input
        # token, and in chat that is <|assistant|>, which detokenizes to "".
        tie_word_embeddings=False,
        # float32: every CPU runs it natively; bf16 speed depends on AVX512-BF16/AMX.
        dtype="float32",
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    # transformers leaves the model's __init__ unannotated, and types `.to` through a
    # decorator whose signature mypy reads as taking the model.
    model = LlamaForCausalLM(config).to(torch.float32)  # type: ignore[no-untyped-call,arg-type]
    # Special tokens, lone UTF-8 fragment bytes and control bytes get logit 0
    # while some ordinary token always scores higher, so greedy output is
    # clean, non-empty text that runs to max_tokens (predictable for tests);
    # sampling can still emit eos.
    muted = [
        i
        for i in range(len(tokenizer))
        if i in tokenizer.all_special_ids or not _printable(_decode_one(tokenizer, i))
    ]
    with torch.no_grad():
        model.lm_head.weight[muted] = 0
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]  # transformers'
        bos_token_id=ids["<s>"], eos_token_id=eos_ids, pad_token_id=ids["<pad>"]
    )
    model.save_pretrained(tmp, safe_serialization=True)


def build_tiny_llama(
    out_dir: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    max_position_embeddings: int = 2048,
) -> Path:
    """Build (or reuse) a tiny random Llama chat model at ``out_dir``; return its path."""
    params = {
        "seed": seed,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
    }
    return build_once(
        out_dir,
        marker=MARKER,
        params=params,
        what="tiny llama",
        write=lambda tmp: _write_model(tmp, seed, vocab_size, max_position_embeddings),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--max-position-embeddings", type=int, default=2048)
    args = parser.parse_args(argv)
    print(
        build_tiny_llama(
            args.out_dir,
            seed=args.seed,
            vocab_size=args.vocab_size,
            max_position_embeddings=args.max_position_embeddings,
        )
    )


if __name__ == "__main__":
    main()
