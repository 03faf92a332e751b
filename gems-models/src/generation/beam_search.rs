//! Trie-constrained beam search: every returned sequence is an item of the allowed set.
//!
//! Scoring: the score of an item is the sum, over its tokens, of the model's log-probability of
//! that token given the prompt and the previous tokens, where the log-probabilities are taken
//! over the full vocabulary (log-softmax of the logits) and only then restricted to the trie's
//! allowed children — they are not renormalised over the allowed set. Invalid sequences are
//! impossible by construction: a beam only ever extends to a child of its trie node.
//!
//! At each step every allowed extension of every live beam is scored; extensions that complete
//! an item are recorded as finished (an item may also be a prefix of another item), and the
//! `beam_width` best extensions that can still grow stay live. A request stops when no beam is
//! live, or when it has `beam_width` finished items and no live beam scores above the worst of
//! them (log-probabilities are at most 0, so scores only fall). With `beam_width` at least the
//! number of items the search is exhaustive.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::ModelError;
use crate::generation::{NodeId, PrefixTrie, StepDecoder};

/// Beam width of the sampled evaluation protocol (target + 99 negatives).
pub const DEFAULT_BEAM_WIDTH: usize = 20;

/// One item of a ranking, with its score (sum of token log-probabilities).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedItem {
    /// Item index, as inserted in the trie.
    pub item: usize,
    /// Sum of the log-probabilities of the item's tokens.
    pub score: f32,
}

/// The allowed items: one trie for every request, or one per request.
#[derive(Debug, Clone, Copy)]
pub enum Tries<'a> {
    /// The same allowed set (e.g. the whole catalogue) for every request.
    Shared(&'a PrefixTrie),
    /// One allowed set per request (e.g. target + sampled negatives), in request order.
    PerRequest(&'a [PrefixTrie]),
}

impl Tries<'_> {
    fn get(&self, request: usize) -> &PrefixTrie {
        match self {
            Self::Shared(trie) => trie,
            Self::PerRequest(tries) => &tries[request],
        }
    }
}

/// A live hypothesis: its request, trie node and score.
#[derive(Debug, Clone, Copy)]
struct Beam {
    request: usize,
    node: NodeId,
    score: f32,
}

/// An extension of a live beam by one allowed token.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    parent: usize,
    token: u32,
    node: NodeId,
    score: f32,
}

/// Ranks, for every prompt, the items of its trie by beam search over `decoder`; returns up to
/// `beam_width` items per prompt, best first.
pub fn constrained_beam_search<D: StepDecoder>(
    decoder: &D,
    prompts: &[Vec<u32>],
    tries: Tries<'_>,
    beam_width: usize,
) -> Result<Vec<Vec<RankedItem>>, ModelError> {
    if beam_width == 0 {
        return Err(ModelError::InvalidInput(
            "beam width must be positive".into(),
        ));
    }
    if let Tries::PerRequest(list) = tries
        && list.len() != prompts.len()
    {
        return Err(ModelError::InvalidInput(format!(
            "{} tries for {} prompts",
            list.len(),
            prompts.len()
        )));
    }
    let mut finished: Vec<Vec<RankedItem>> = vec![Vec::new(); prompts.len()];
    if prompts.is_empty() {
        return Ok(finished);
    }
    let (mut state, mut logits) = decoder.start(prompts)?;
    let mut beams: Vec<Beam> = (0..prompts.len())
        .map(|request| Beam {
            request,
            node: PrefixTrie::ROOT,
            score: 0.0,
        })
        .collect();

    loop {
        let scores = allowed_log_probs(logits, &beams, tries);
        let mut per_request: Vec<Vec<Candidate>> = vec![Vec::new(); prompts.len()];
        for (row, beam) in beams.iter().enumerate() {
            let trie = tries.get(beam.request);
            for (j, &(token, node)) in trie.children(beam.node).iter().enumerate() {
                let score = beam.score + scores[row][j];
                per_request[beam.request].push(Candidate {
                    parent: row,
                    token,
                    node,
                    score,
                });
            }
        }

        let mut next = Vec::new();
        let mut parents = Vec::new();
        let mut tokens = Vec::new();
        for (request, mut candidates) in per_request.into_iter().enumerate() {
            let trie = tries.get(request);
            // Stable sort: equal scores keep beam and token order, so results are deterministic.
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            let done = &mut finished[request];
            for candidate in &candidates {
                done.extend(
                    trie.items_at(candidate.node)
                        .iter()
                        .map(|&item| RankedItem {
                            item,
                            score: candidate.score,
                        }),
                );
            }
            let bound = worst_kept(done, beam_width);
            let live = candidates
                .iter()
                .filter(|c| {
                    !trie.children(c.node).is_empty() && bound.is_none_or(|worst| c.score > worst)
                })
                .take(beam_width);
            for candidate in live {
                next.push(Beam {
                    request,
                    node: candidate.node,
                    score: candidate.score,
                });
                parents.push(candidate.parent);
                tokens.push(candidate.token);
            }
        }
        if next.is_empty() {
            break;
        }
        state = decoder.select(state, &parents);
        logits = decoder.step(&mut state, &tokens);
        beams = next;
    }

    for ranking in &mut finished {
        ranking.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        ranking.truncate(beam_width);
    }
    Ok(finished)
}

/// The score of the `beam_width`-th best finished item, once there are that many.
fn worst_kept(finished: &[RankedItem], beam_width: usize) -> Option<f32> {
    if finished.len() < beam_width {
        return None;
    }
    let mut scores: Vec<f32> = finished.iter().map(|r| r.score).collect();
    scores.select_nth_unstable_by(beam_width - 1, |a, b| b.total_cmp(a));
    Some(scores[beam_width - 1])
}

/// Log-probabilities (log-softmax over the whole vocabulary, on the device) of each beam's
/// allowed next tokens, in the order of its trie node's children; only these come to the host.
fn allowed_log_probs(logits: Tensor<2>, beams: &[Beam], tries: Tries<'_>) -> Vec<Vec<f32>> {
    let children: Vec<&[(u32, NodeId)]> = beams
        .iter()
        .map(|b| tries.get(b.request).children(b.node))
        .collect();
    let width = children.iter().map(|c| c.len()).max().unwrap_or(0).max(1);
    // Rows with fewer children are padded with token 0, whose value is never read.
    let index: Vec<i64> = children
        .iter()
        .flat_map(|c| (0..width).map(move |j| c.get(j).map_or(0, |&(token, _)| token as i64)))
        .collect();
    let device = logits.device();
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [beams.len(), width]), &device);
    let picked: Vec<f32> = log_softmax(logits, 1)
        .gather(1, index)
        .into_data()
        .iter::<f32>()
        .collect();
    picked
        .chunks(width)
        .zip(&children)
        .map(|(row, c)| row[..c.len()].to_vec())
        .collect()
}
