//! Golden tests: every fixture's logits, loss and cached greedy decoding against `transformers`
//! (float32 references written by `scripts/make_fixtures.py`).

mod common;

use common::*;
use gems_models::{Backbone, ModelKind, StepDecoder, Uncached};

const TOLERANCE: f32 = 1e-4;

#[test]
fn logits_match_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let reference = Reference::load(name);
        let logits = model.logits(&reference.batch(&device())).unwrap();
        let [_, length, vocab] = logits.dims();
        let expected = flatten(&reference.0["logits"]);
        let mask = reference.ints("attention_mask");
        // Qwen2 logits at padding positions are meaningless; T5 has none in the decoder.
        let keep = |i: usize| match model.kind() {
            ModelKind::T5 => true,
            ModelKind::Qwen2 => mask[i / (length * vocab)][(i / vocab) % length] == 1,
        };
        let error = max_abs_diff(&values(logits), &expected, keep);
        eprintln!("{name}: logits max abs error {error:e}");
        assert!(error <= TOLERANCE, "{name}: max abs error {error}");
    }
}

#[test]
fn loss_matches_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let reference = Reference::load(name);
        let loss = model
            .loss(&reference.batch(&device()))
            .unwrap()
            .into_scalar::<f32>();
        let expected = reference.0["loss"].as_f64().unwrap() as f32;
        assert!(
            (loss - expected).abs() <= 1e-5 * expected.abs().max(1.0),
            "{name}: loss {loss} vs {expected}"
        );
    }
}

/// With tokens added, the loss with the softmax over the original vocabulary is the original
/// model's loss as `transformers` computes it (growth keeps the old logits); over the grown
/// vocabulary it is higher, the added tokens taking some probability. Sizes outside the
/// vocabulary and labels outside the kept tokens are refused.
#[test]
fn loss_within_the_first_tokens_is_the_original_vocabularys() {
    for name in FIXTURES {
        let model = load(name);
        let vocab = model.vocab_size();
        let reference = Reference::load(name);
        let batch = reference.batch(&device());
        let grown = model.resize_token_embeddings(vocab + 5);
        let within = grown
            .loss_within_first_tokens(&batch, vocab)
            .unwrap()
            .into_scalar::<f32>();
        let expected = reference.0["loss"].as_f64().unwrap() as f32;
        assert!(
            (within - expected).abs() <= 1e-5 * expected.abs().max(1.0),
            "{name}: loss within the first {vocab} tokens {within} vs {expected}"
        );
        let whole = grown.loss(&batch).unwrap().into_scalar::<f32>();
        assert!(whole > within, "{name}: {whole} vs {within}");
        for tokens in [0, 1, vocab + 6] {
            assert!(
                grown.loss_within_first_tokens(&batch, tokens).is_err(),
                "{name}: {tokens} tokens"
            );
        }
    }
}

/// Decodes the reference's greedy steps with `decoder`, checking every step's logits and token.
fn check_greedy<D: StepDecoder>(name: &str, decoder: &D, model: &Backbone) {
    let reference = Reference::load(name);
    let greedy = &reference.0["greedy"];
    let steps = greedy["steps"].as_u64().unwrap() as usize;
    let mut tokens = reference.ints_at(&greedy["tokens"]);
    if model.kind() == ModelKind::T5 {
        // The reference rows start with the decoder start token.
        tokens.iter_mut().for_each(|row| {
            row.remove(0);
        });
    }
    let (mut state, mut logits) = decoder.start(&reference.prompts()).unwrap();
    for step in 0..steps {
        let expected = flatten(&greedy["logits"][step]);
        let error = max_abs_diff(&values(logits.clone()), &expected, |_| true);
        assert!(
            error <= TOLERANCE,
            "{name}: step {step}: max abs error {error}"
        );
        let chosen: Vec<u32> = logits
            .clone()
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .map(|t| t as u32)
            .collect();
        let expected_tokens: Vec<u32> = tokens.iter().map(|row| row[step] as u32).collect();
        assert_eq!(chosen, expected_tokens, "{name}: step {step}");
        if step + 1 < steps {
            logits = decoder.step(&mut state, &chosen);
        }
    }
}

#[test]
fn cached_decoding_matches_transformers() {
    for name in FIXTURES {
        let model = load(name);
        check_greedy(name, &model, &model);
    }
}

#[test]
fn uncached_decoding_matches_transformers() {
    for name in FIXTURES {
        let model = load(name);
        check_greedy(name, &Uncached(&model), &model);
    }
}
