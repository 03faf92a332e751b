//! Trie-constrained beam search against exhaustive search: on a "model" whose logits are fixed by
//! construction, and on the golden T5 and Qwen2 fixtures (cached and uncached).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use gems_models::{
    Backbone, LmBatch, ModelError, ModelKind, PrefixTrie, RankedItem, StepDecoder, Tries, Uncached,
    constrained_beam_search,
};

const VOCAB: usize = 12;

/// A decoder whose logits are a fixed pseudo-random function of (prompt, tokens so far), or of
/// the step alone when `history_free`.
struct TableDecoder {
    history_free: bool,
}

impl TableDecoder {
    fn logits(&self, history: &[u32]) -> Vec<f32> {
        let key: Vec<u32> = if self.history_free {
            vec![history.len() as u32]
        } else {
            history.to_vec()
        };
        let mut state = key.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &t| {
            (h ^ t as u64).wrapping_mul(0x1000_0000_01b3)
        });
        (0..VOCAB)
            .map(|_| {
                state ^= state >> 33;
                state = state.wrapping_mul(0xff51_afd7_ed55_8ccd);
                state ^= state >> 29;
                (state % 6000) as f32 / 1000.0 - 3.0
            })
            .collect()
    }

    fn tensor(&self, rows: &[Vec<u32>]) -> Tensor<2> {
        let values: Vec<f32> = rows.iter().flat_map(|h| self.logits(h)).collect();
        Tensor::from_data(
            TensorData::new(values, [rows.len(), VOCAB]),
            &Device::flex(),
        )
    }

    /// Exact score of `sequence` after `prompt`: sum of log-softmax values.
    fn score(&self, prompt: &[u32], sequence: &[u32]) -> f32 {
        let mut history = prompt.to_vec();
        let mut total = 0.0f64;
        for &token in sequence {
            let logits = self.logits(&history);
            let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let log_sum = logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            total += logits[token as usize] as f64 - log_sum;
            history.push(token);
        }
        total as f32
    }
}

impl StepDecoder for TableDecoder {
    type State = Vec<Vec<u32>>;

    fn start(&self, prompts: &[Vec<u32>]) -> Result<(Self::State, Tensor<2>), ModelError> {
        let state = prompts.to_vec();
        let logits = self.tensor(&state);
        Ok((state, logits))
    }

    fn step(&self, state: &mut Self::State, tokens: &[u32]) -> Tensor<2> {
        for (history, &token) in state.iter_mut().zip(tokens) {
            history.push(token);
        }
        self.tensor(state)
    }

    fn select(&self, state: Self::State, rows: &[usize]) -> Self::State {
        rows.iter().map(|&r| state[r].clone()).collect()
    }
}

/// Every item of `trie` scored by `score`, best first (ties by item index).
fn exhaustive(trie: &PrefixTrie, score: impl Fn(&[u32]) -> f32) -> Vec<RankedItem> {
    let mut ranking: Vec<RankedItem> = trie
        .sequences()
        .into_iter()
        .map(|(sequence, item)| RankedItem {
            item,
            score: score(&sequence),
        })
        .collect();
    ranking.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    ranking
}

fn assert_same_ranking(found: &[RankedItem], expected: &[RankedItem], context: &str) {
    let items = |r: &[RankedItem]| r.iter().map(|x| x.item).collect::<Vec<_>>();
    assert_eq!(items(found), items(expected), "{context}");
    for (f, e) in found.iter().zip(expected) {
        assert!(
            (f.score - e.score).abs() < 1e-4,
            "{context}: item {} scored {} vs {}",
            f.item,
            f.score,
            e.score
        );
    }
}

/// Items of varied lengths, some prefixes of others, all over the table's vocabulary.
fn catalogue() -> Vec<Vec<u32>> {
    vec![
        vec![3],
        vec![3, 5],
        vec![3, 5, 7],
        vec![3, 6, 1],
        vec![4, 1],
        vec![4, 2, 2, 9],
        vec![4, 2, 3],
        vec![5, 11, 0],
        vec![7],
        vec![7, 7, 7],
        vec![8, 0, 1],
        vec![8, 0, 2],
        vec![9, 10],
        vec![10, 4, 4],
        vec![11, 3],
    ]
}

#[test]
fn wide_beams_equal_exhaustive_search() {
    let decoder = TableDecoder {
        history_free: false,
    };
    let trie = PrefixTrie::from_sequences(catalogue()).unwrap();
    let prompts = vec![vec![1, 2], vec![6], vec![2, 2, 2]];
    let rankings = constrained_beam_search(&decoder, &prompts, Tries::Shared(&trie), 20).unwrap();
    for (prompt, ranking) in prompts.iter().zip(&rankings) {
        let expected = exhaustive(&trie, |s| decoder.score(prompt, s));
        assert_eq!(ranking.len(), catalogue().len());
        assert_same_ranking(ranking, &expected, &format!("prompt {prompt:?}"));
    }
}

#[test]
fn narrow_beams_return_valid_distinct_items_with_exact_scores() {
    let decoder = TableDecoder {
        history_free: false,
    };
    let items = catalogue();
    let trie = PrefixTrie::from_sequences(&items).unwrap();
    let prompts = vec![vec![1, 2], vec![6]];
    for width in [1, 2, 4] {
        let rankings =
            constrained_beam_search(&decoder, &prompts, Tries::Shared(&trie), width).unwrap();
        for (prompt, ranking) in prompts.iter().zip(&rankings) {
            assert!(!ranking.is_empty() && ranking.len() <= width);
            let mut seen = std::collections::BTreeSet::new();
            for (i, ranked) in ranking.iter().enumerate() {
                assert!(
                    seen.insert(ranked.item),
                    "item {} returned twice",
                    ranked.item
                );
                assert!((ranked.score - decoder.score(prompt, &items[ranked.item])).abs() < 1e-4);
                if i > 0 {
                    assert!(ranking[i - 1].score >= ranked.score, "sorted best first");
                }
            }
        }
    }
}

#[test]
fn narrow_beams_are_exact_when_scores_do_not_depend_on_history() {
    // A complete tree (every prefix has the same children) with step-only logits: the best k
    // sequences extend the best k prefixes, so beam search of width k is exact.
    let decoder = TableDecoder { history_free: true };
    let items: Vec<Vec<u32>> = (0..4)
        .flat_map(|a| (0..4).flat_map(move |b| (0..3).map(move |c| vec![a + 2, b + 5, c])))
        .collect();
    let trie = PrefixTrie::from_sequences(&items).unwrap();
    let prompts = vec![vec![0]];
    for width in [1, 3, 5] {
        let ranking =
            &constrained_beam_search(&decoder, &prompts, Tries::Shared(&trie), width).unwrap()[0];
        let expected = exhaustive(&trie, |s| decoder.score(&[0], s));
        assert_same_ranking(ranking, &expected[..width], &format!("width {width}"));
    }
}

#[test]
fn per_request_tries_and_batching() {
    let decoder = TableDecoder {
        history_free: false,
    };
    let items = catalogue();
    let tries: Vec<PrefixTrie> = [vec![0, 4, 7, 12], vec![1, 2, 3, 9, 10, 14], vec![5]]
        .iter()
        .map(|chosen| {
            let mut trie = PrefixTrie::new();
            for &item in chosen {
                trie.insert(&items[item], item).unwrap();
            }
            trie
        })
        .collect();
    let prompts = vec![vec![1], vec![4, 4], vec![9]];
    let batched =
        constrained_beam_search(&decoder, &prompts, Tries::PerRequest(&tries), 3).unwrap();
    let wide = constrained_beam_search(&decoder, &prompts, Tries::PerRequest(&tries), 6).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = constrained_beam_search(
            &decoder,
            std::slice::from_ref(prompt),
            Tries::Shared(&tries[i]),
            3,
        )
        .unwrap();
        assert_eq!(
            batched[i], alone[0],
            "request {i}: batching changes nothing"
        );
        let expected = exhaustive(&tries[i], |s| decoder.score(prompt, s));
        assert_same_ranking(&wide[i], &expected, &format!("request {i}"));
    }
    assert!(
        constrained_beam_search(&decoder, &prompts, Tries::PerRequest(&tries[..2]), 3).is_err()
    );
    assert!(constrained_beam_search(&decoder, &prompts, Tries::Shared(&tries[0]), 0).is_err());
}

/// Sum of log-probabilities of `item` after `prompt`, by teacher forcing through the full forward pass.
fn teacher_forced_score(model: &Backbone, prompt: &[u32], item: &[u32]) -> f32 {
    let device = device();
    let ids = |tokens: &[u32]| vec![tokens.iter().map(|&t| t as i64).collect::<Vec<_>>()];
    let (batch, first) = match model.kind() {
        ModelKind::T5 => (
            LmBatch::from_rows(&ids(prompt), &[vec![1; prompt.len()]], &ids(item), &device)
                .unwrap(),
            0,
        ),
        ModelKind::Qwen2 => {
            let sequence: Vec<u32> = prompt.iter().chain(item).copied().collect();
            let rows = ids(&sequence);
            (
                LmBatch::from_rows(&rows, &[vec![1; sequence.len()]], &rows, &device).unwrap(),
                prompt.len() - 1,
            )
        }
    };
    let logits = model.logits(&batch).unwrap();
    let log_probs = values(burn::tensor::activation::log_softmax(logits, 2));
    let vocab = model.vocab_size();
    item.iter()
        .enumerate()
        .map(|(i, &token)| log_probs[(first + i) * vocab + token as usize])
        .sum()
}

#[test]
fn real_models_rank_like_exhaustive_teacher_forcing_with_and_without_cache() {
    let items: Vec<Vec<u32>> = vec![
        vec![40, 41, 1],
        vec![40, 42, 1],
        vec![40, 43, 44, 1],
        vec![50, 1],
        vec![51, 52, 1],
        vec![51, 53, 1],
        vec![60, 61, 62, 1],
        vec![70, 1],
        vec![71, 72, 1],
        vec![80, 81, 1],
    ];
    let trie = PrefixTrie::from_sequences(&items).unwrap();
    let prompts = vec![vec![5, 17, 33, 8, 61, 12, 1], vec![40, 9, 77, 1]];
    for name in ["t5-v1_1", "qwen2-untied"] {
        let model = load(name);
        let cached = constrained_beam_search(&model, &prompts, Tries::Shared(&trie), 20).unwrap();
        let uncached =
            constrained_beam_search(&Uncached(&model), &prompts, Tries::Shared(&trie), 20).unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let expected = exhaustive(&trie, |s| teacher_forced_score(&model, prompt, s));
            assert_same_ranking(&cached[i], &expected, &format!("{name} cached, prompt {i}"));
            assert_same_ranking(
                &uncached[i],
                &expected,
                &format!("{name} uncached, prompt {i}"),
            );
        }
        let narrow = constrained_beam_search(&model, &prompts, Tries::Shared(&trie), 3).unwrap();
        let narrow_uncached =
            constrained_beam_search(&Uncached(&model), &prompts, Tries::Shared(&trie), 3).unwrap();
        for (a, b) in narrow.iter().zip(&narrow_uncached) {
            assert_same_ranking(a, b, &format!("{name}: width 3, cache vs no cache"));
        }
    }
}
