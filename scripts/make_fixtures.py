#!/usr/bin/env python3
"""Builds the golden fixtures of gems-models: tiny random Hugging Face models and their outputs.

Run by hand (not by CI) after changing a fixture; the tests read the committed files:

    python3 -m venv /work/venv && /work/venv/bin/pip install torch transformers safetensors tokenizers
    /work/venv/bin/python scripts/make_fixtures.py gems-models/tests/fixtures

Each fixture is an HF model directory (config.json, safetensors, tokenizer.json) plus
`reference.json`, computed in float32 by `transformers`:

- `input_ids`, `attention_mask`, `labels` (and `position_ids` for Qwen2): a padded batch of two;
- `logits` of the full forward pass and `loss` (cross-entropy, ignore index -100);
- `greedy`: a greedy decoding of `steps` tokens with the key-value cache, with the logits of every
  step, so the Rust cache can be checked step by step.

Fixtures:
- t5-v1_0        ReLU feed-forward, tied embeddings with d_model^-0.5 output scaling,
                 config as transformers 5 writes it (`scale_decoder_outputs`).
- t5-v1_1        gated-gelu, untied lm_head, config in the transformers-4 style
                 (`tie_word_embeddings: false`, no `scale_decoder_outputs`); 3 decoder layers.
- qwen2-tied     grouped-query attention (4 query heads, 2 key-value heads), tied embeddings,
                 transformers-5 style config (`rope_parameters`).
- qwen2-untied   untied lm_head, transformers-4 style config (top-level `rope_theta`,
                 `sliding_window` with `use_sliding_window: false`), weights sharded in two
                 files with `model.safetensors.index.json`.
- t5-v1_0-f16    t5-v1_0 stored in float16; its reference is computed from the f16-rounded weights
                 in float32.
- qwen2-tied-bf16  qwen2-tied stored in bfloat16, same idea.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration

VOCAB = 96
STEPS = 6


def rounded(values, digits=7):
    """Nested lists of floats, rounded so the JSON stays small but exact to well under 1e-6."""
    if isinstance(values, list):
        return [rounded(v, digits) for v in values]
    return round(float(values), digits)


def write_tokenizer(directory, specials):
    """A word-level tokenizer over the fixture's vocabulary: the specials, then w3, w4, ..."""
    vocab = {token: i for i, token in enumerate(specials)}
    for i in range(len(specials), VOCAB):
        vocab[f"w{i}"] = i
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[-1]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(os.path.join(directory, "tokenizer.json"))


def edit_config(directory, drop=(), **values):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    for key in drop:
        config.pop(key, None)
    config.update(values)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def store_with_dtype(source_directory, directory, dtype, dtype_name):
    """Copies a fixture with its weights rounded to `dtype` and stored in it."""
    shutil.copytree(source_directory, directory)
    os.remove(os.path.join(directory, "reference.json"))
    path = os.path.join(directory, "model.safetensors")
    from safetensors.torch import load_file

    tensors = {k: v.to(dtype).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})
    edit_config(directory, dtype=dtype_name)


def t5_reference(model, directory):
    """Full forward, loss and cached greedy decoding of a T5 fixture."""
    model.eval()
    input_ids = torch.tensor([[5, 17, 33, 8, 61, 12, 1], [40, 9, 77, 1, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    attention_mask[0, -1] = 1
    labels = torch.tensor([[22, 7, 91, 3, 1], [14, 60, 1, -100, -100]])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        tokens = torch.full((2, 1), model.config.decoder_start_token_id)
        past = None
        step_logits = []
        for _ in range(STEPS):
            step = model(
                encoder_outputs=encoder_outputs,
                attention_mask=attention_mask,
                decoder_input_ids=tokens[:, -1:],
                past_key_values=past,
                use_cache=True,
            )
            past = step.past_key_values
            logits = step.logits[:, -1, :]
            step_logits.append(logits.tolist())
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        # The cache must agree with a plain forward pass over the decoded sequence.
        full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=tokens[:, :-1]).logits
        assert torch.allclose(full.transpose(0, 1), torch.tensor(step_logits), atol=1e-5)
    reference = {
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "labels": labels.tolist(),
        "logits": rounded(out.logits.tolist()),
        "loss": float(out.loss),
        "greedy": {"steps": STEPS, "tokens": tokens.tolist(), "logits": rounded(step_logits)},
    }
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(reference, f)


def qwen2_reference(model, directory):
    """Full forward (left padding), loss and cached greedy decoding of a Qwen2 fixture."""
    model.eval()
    pad = 0
    input_ids = torch.tensor([[11, 52, 7, 30, 88, 19, 4], [pad, pad, 63, 25, 70, 8, 41]])
    attention_mask = (input_ids != pad).long()
    # Positions count real tokens only, as `generate` does for left padding.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    labels = input_ids.clone()
    labels[0, :4] = -100
    labels[1, :5] = -100
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, labels=labels)
        step = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
        past = step.past_key_values
        logits = step.logits[:, -1, :]
        step_logits = [logits.tolist()]
        tokens = logits.argmax(-1, keepdim=True)
        mask = attention_mask
        positions = position_ids[:, -1:]
        for _ in range(STEPS - 1):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            positions = positions + 1
            step = model(
                input_ids=tokens[:, -1:],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
            )
            past = step.past_key_values
            logits = step.logits[:, -1, :]
            step_logits.append(logits.tolist())
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    reference = {
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "position_ids": position_ids.tolist(),
        "labels": labels.tolist(),
        "logits": rounded(out.logits.tolist()),
        "loss": float(out.loss),
        "greedy": {"steps": STEPS, "tokens": tokens.tolist(), "logits": rounded(step_logits)},
    }
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(reference, f)


def t5_config(**overrides):
    values = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        # Few buckets and a short max distance so that short test sequences reach the
        # logarithmic buckets.
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.0,
    )
    values.update(overrides)
    return T5Config(**values)


def qwen2_config(**overrides):
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.1,
    )
    values.update(overrides)
    return Qwen2Config(**values)


def randomize_small_parameters(model, generator):
    """Norm weights and biases start at 1 and 0 in HF: make them random so the tests see them."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight") or name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.2 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith(".bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def make_t5_v1_0(root):
    directory = os.path.join(root, "t5-v1_0")
    torch.manual_seed(1)
    model = T5ForConditionalGeneration(t5_config(feed_forward_proj="relu"))
    randomize_small_parameters(model, torch.Generator().manual_seed(11))
    assert model.config.scale_decoder_outputs and model.lm_head.weight is model.shared.weight
    model.save_pretrained(directory)
    write_tokenizer(directory, ["<pad>", "</s>", "<unk>"])
    t5_reference(model, directory)
    return directory


def make_t5_v1_1(root):
    directory = os.path.join(root, "t5-v1_1")
    torch.manual_seed(2)
    model = T5ForConditionalGeneration(t5_config(feed_forward_proj="gated-gelu", num_decoder_layers=3))
    randomize_small_parameters(model, torch.Generator().manual_seed(12))
    # transformers 5 always ties lm_head to shared; a v1.1 checkpoint has its own lm_head, which
    # transformers unties on load when the two differ. Build that state by hand.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
    model.all_tied_weights_keys.pop("lm_head.weight")
    model.config.scale_decoder_outputs = False
    model.save_pretrained(directory)
    edit_config(
        directory,
        drop=["scale_decoder_outputs", "dense_act_fn", "is_gated_act", "transformers_version", "dtype"],
        tie_word_embeddings=False,
        torch_dtype="float32",
        transformers_version="4.46.0",
    )
    write_tokenizer(directory, ["<pad>", "</s>", "<unk>"])
    # Reload so the reference reflects how transformers reads a transformers-4 config.
    reloaded = T5ForConditionalGeneration.from_pretrained(directory)
    assert not reloaded.config.scale_decoder_outputs
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    t5_reference(reloaded, directory)
    return directory


def make_qwen2_tied(root):
    directory = os.path.join(root, "qwen2-tied")
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(qwen2_config(tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    randomize_small_parameters(model, torch.Generator().manual_seed(13))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(directory)
    write_tokenizer(directory, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"])
    qwen2_reference(model, directory)
    return directory


def make_qwen2_untied(root):
    directory = os.path.join(root, "qwen2-untied")
    torch.manual_seed(4)
    model = Qwen2ForCausalLM(
        qwen2_config(tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    )
    randomize_small_parameters(model, torch.Generator().manual_seed(14))
    model.save_pretrained(directory, max_shard_size="60KB")
    assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
    # The hub's transformers-4 layout of a Qwen2.5 config.
    edit_config(
        directory,
        drop=["rope_parameters", "layer_types", "transformers_version", "dtype"],
        rope_theta=1000000.0,
        rope_scaling=None,
        sliding_window=64,
        use_sliding_window=False,
        max_window_layers=1,
        torch_dtype="float32",
        transformers_version="4.43.1",
    )
    write_tokenizer(directory, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"])
    reloaded = Qwen2ForCausalLM.from_pretrained(directory)
    assert reloaded.config.sliding_window is None
    qwen2_reference(reloaded, directory)
    return directory


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "gems-models/tests/fixtures"
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    torch.set_default_dtype(torch.float32)

    t5 = make_t5_v1_0(root)
    make_t5_v1_1(root)
    qwen2 = make_qwen2_tied(root)
    make_qwen2_untied(root)

    for source, name, dtype, dtype_name, model_class, reference in [
        (t5, "t5-v1_0-f16", torch.float16, "float16", T5ForConditionalGeneration, t5_reference),
        (qwen2, "qwen2-tied-bf16", torch.bfloat16, "bfloat16", Qwen2ForCausalLM, qwen2_reference),
    ]:
        directory = os.path.join(root, name)
        store_with_dtype(source, directory, dtype, dtype_name)
        model = model_class.from_pretrained(directory, dtype=torch.float32)
        reference(model, directory)

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    print(f"fixtures in {root}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
