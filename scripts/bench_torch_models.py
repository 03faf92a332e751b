#!/usr/bin/env python3
"""PyTorch / transformers baseline for `cargo bench -p gems-models --bench models`: the same
shapes, batches and measures, on this machine's CPU, so the Rust figures can be read as ratios.

    /work/venv/bin/python scripts/bench_torch_models.py [--threads N] [--quick]

Measures (random weights, median of repeats after a warm-up):
- forward+backward of a training batch (8 rows; T5: 64 source + 8 target tokens; Qwen2: 64 prompt
  + 8 target tokens, loss on the target), in tokens per second;
- greedy decoding of 64 tokens for 4 (and, for T5, 16) prompts of 32 tokens, with and without
  the key-value cache;
- trie-constrained beam search (beam 20, 100 candidates of 4 tokens per request, 4 requests of 64
  tokens) with `generate(num_beams=20, prefix_allowed_tokens_fn=...)`, as the GEMS reference does.
"""

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration


def tokens(count, vocab, seed):
    """Same xorshift stream as the Rust benchmark."""
    mask = (1 << 64) - 1
    state = ((seed * 0x9E3779B97F4A7C15) & mask) | 1
    out = []
    for _ in range(count):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out.append(1 + state % (vocab - 1))
    return out


def timed(repeats, run):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(name, what, amount, unit, elapsed):
    print(f"| {name:<28} | {what:<34} | {amount / elapsed:>10.1f} {unit:<10} | {elapsed * 1e3:>8.1f} ms |")


def t5_small():
    config = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                      feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config)


def qwen_0_5b(layers):
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, max_position_embeddings=32768)
    return Qwen2ForCausalLM(config)


def bench_training(name, model, is_t5, repeats):
    model.train()
    vocab = model.config.vocab_size
    if is_t5:
        input_ids = torch.tensor([tokens(64, vocab, 1 + r) for r in range(8)])
        labels = torch.tensor([tokens(8, vocab, 99 + r) for r in range(8)])
        batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    else:
        input_ids = torch.tensor([tokens(72, vocab, 1 + r) for r in range(8)])
        labels = input_ids.clone()
        labels[:, :64] = -100
        batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)

    def step():
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    row(name, "forward+backward, 8 x (64+8) tokens", 8 * 72, "tokens/s", timed(repeats, step))


def bench_decoding(name, model, batch, repeats):
    model.eval()
    vocab = model.config.vocab_size
    prompts = torch.tensor([tokens(32, vocab, 7 + r) for r in range(batch)])
    results = {}
    for use_cache in (True, False):
        def run():
            with torch.no_grad():
                model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=64,
                               min_new_tokens=64, do_sample=False, use_cache=use_cache, pad_token_id=0)
        results[use_cache] = timed(repeats if use_cache else min(repeats, 2), run)
        row(name, f"greedy {batch} x 64 tokens, {'cache' if use_cache else 'no cache'}", batch * 64, "tokens/s", results[use_cache])
    print(f"| {name:<28} | {'cache speed-up':<34} | {results[False] / results[True]:>10.1f}x {'':<9} | {'':>11} |")


def bench_beam_search(name, model, repeats):
    model.eval()
    prompts = torch.tensor([tokens(64, 32128, 100 + r) for r in range(4)])
    tries = []
    for r in range(4):
        codes = tokens(300, 256, 500 + r)
        trie = {}
        for i in range(0, 300, 3):
            node = trie
            for token in (codes[i] + 2, codes[i + 1] + 258, codes[i + 2] + 514, 1):
                node = node.setdefault(token, {})
        tries.append(trie)

    def allowed(batch_id, sent):
        node = tries[batch_id // 20]
        for token in sent.tolist()[1:]:
            node = node.get(token, {})
        return list(node.keys()) or [1]

    for use_cache in (True, False):
        def run():
            with torch.no_grad():
                model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), num_beams=20,
                               num_return_sequences=20, max_new_tokens=4, prefix_allowed_tokens_fn=allowed,
                               use_cache=use_cache, early_stopping=True)
        elapsed = timed(repeats if use_cache else min(repeats, 2), run)
        row(name, f"beam 20, 100 candidates, {'cache' if use_cache else 'no cache'}", 4, "requests/s", elapsed)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 1 if args.quick else 3
    print(f"PyTorch {torch.__version__}, {args.threads} thread(s)")
    print("| model                        | measure                            | throughput            | median      |")
    print("|------------------------------|------------------------------------|-----------------------|-------------|")
    t5 = t5_small()
    qwen = qwen_0_5b(4)
    bench_training("T5-small (6+6 layers)", t5, True, repeats)
    bench_training("Qwen2.5-0.5B shape, 4 layers", qwen, False, repeats)
    bench_decoding("T5-small (6+6 layers)", t5, 4, repeats)
    bench_decoding("T5-small (6+6 layers)", t5, 16, repeats)
    bench_decoding("Qwen2.5-0.5B shape, 4 layers", qwen, 4, repeats)
    bench_beam_search("T5-small (6+6 layers)", t5, repeats)


if __name__ == "__main__":
    main()
