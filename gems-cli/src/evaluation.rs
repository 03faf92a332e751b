//! Ranking with trie-constrained beam search and the metrics of both protocols.

use gems_data::baselines::{Bm25Parameters, Bm25Ranker, PopularityRanker, evaluate_ranker};
use gems_data::metrics::{DEFAULT_CUTOFFS, MetricsAccumulator, RequestMetrics, evaluate_ranking};
use gems_data::{ItemId, MetricsReport, Protocol, Request, Task};
use gems_models::{Backbone, PrefixTrie, Tries, constrained_beam_search};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::experiment::Experiment;

/// Requests decoded together.
const DECODE_BATCH: usize = 32;

/// Ranks requests with a model.
pub struct Evaluation<'a> {
    experiment: &'a Experiment,
    beam_width: usize,
}

/// The test metrics of a run (`metrics.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The model under the sampled protocol (target + fixed negatives).
    pub sampled: MetricsReport,
    /// The model over the whole catalogue.
    pub full_ranking: MetricsReport,
    /// Model-free floors (popularity for rec, BM25 for search), sampled protocol.
    pub floor_sampled: Vec<MetricsReport>,
    /// The same floors over the whole catalogue.
    pub floor_full_ranking: Vec<MetricsReport>,
    /// Fixed negatives per request of the sampled protocol (from the dataset's manifest).
    #[serde(default)]
    pub sampled_negatives: Option<usize>,
    /// NDCG@10 of every test request, for paired significance tests between runs.
    #[serde(default)]
    pub per_request: RequestNdcg,
}

/// NDCG@10 of each request of a split, in the split's order, under both protocols.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestNdcg {
    /// The task of each request.
    pub tasks: Vec<Task>,
    /// NDCG@10 under the sampled protocol.
    pub sampled: Vec<f64>,
    /// NDCG@10 over the whole catalogue.
    pub full_ranking: Vec<f64>,
}

/// The cut-off of the per-request values and of model selection.
pub const SELECTION_CUTOFF: usize = 10;

impl<'a> Evaluation<'a> {
    /// Rankings of `beam_width` items.
    pub fn new(experiment: &'a Experiment, beam_width: usize) -> Self {
        Self {
            experiment,
            beam_width,
        }
    }

    /// The top items of each request with their scores (sum of the log-probabilities of the
    /// decoded tokens: the identifier's, then EOS when identifiers differ in length; see
    /// [`Experiment::decoded_sequences`]), best first. `Sampled` ranks the request's targets
    /// and negatives, `FullRanking` the catalogue.
    pub fn rank(
        &self,
        model: &Backbone,
        requests: &[Request],
        protocol: Protocol,
    ) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let catalogue = match protocol {
            Protocol::FullRanking => Some(self.experiment.trie(None)?),
            Protocol::Sampled => None,
        };
        let mut rankings = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(DECODE_BATCH) {
            let prompts = chunk
                .iter()
                .map(|request| Ok(self.experiment.encode(request, None)?.prompt))
                .collect::<Result<Vec<Vec<u32>>>>()?;
            let per_request: Vec<PrefixTrie>;
            let tries = match &catalogue {
                Some(trie) => Tries::Shared(trie),
                None => {
                    per_request = chunk
                        .iter()
                        .map(|request| self.experiment.trie(Some(&request.sampled_candidates())))
                        .collect::<Result<_>>()?;
                    Tries::PerRequest(&per_request)
                }
            };
            for ranked in constrained_beam_search(model, &prompts, tries, self.beam_width)? {
                rankings.push(
                    ranked
                        .into_iter()
                        .map(|r| (self.experiment.item_tokens[r.item].0, r.score))
                        .collect(),
                );
            }
        }
        Ok(rankings)
    }

    /// Recall, NDCG and MRR at 5, 10 and 20 of each request, in order.
    pub fn request_metrics(
        &self,
        model: &Backbone,
        requests: &[Request],
        protocol: Protocol,
    ) -> Result<Vec<RequestMetrics>> {
        let rankings = self.rank(model, requests, protocol)?;
        Ok(requests
            .iter()
            .zip(rankings)
            .map(|(request, ranking)| {
                let items: Vec<ItemId> = ranking.into_iter().map(|(item, _)| item).collect();
                evaluate_ranking(&items, &request.targets, &DEFAULT_CUTOFFS)
            })
            .collect())
    }

    /// Recall, NDCG and MRR at 5, 10 and 20 for every task of `requests`.
    pub fn ranking_metrics(
        &self,
        model: &Backbone,
        requests: &[Request],
        protocol: Protocol,
        name: &str,
    ) -> Result<MetricsReport> {
        let per_request = self.request_metrics(model, requests, protocol)?;
        Ok(average(requests, &per_request, name, protocol))
    }

    /// Test metrics of `model` under both protocols, with the model-free floors and the
    /// per-request NDCG@10.
    pub fn test_metrics(&self, model: &Backbone, name: &str) -> Result<RunMetrics> {
        let test = &self.experiment.dataset.test;
        let sampled = self.request_metrics(model, test, Protocol::Sampled)?;
        let full_ranking = self.request_metrics(model, test, Protocol::FullRanking)?;
        let at_selection_cutoff = |metrics: &[RequestMetrics]| -> Vec<f64> {
            let index = DEFAULT_CUTOFFS
                .iter()
                .position(|k| *k == SELECTION_CUTOFF)
                .expect("the default cut-offs include the selection cut-off");
            metrics.iter().map(|m| m.ndcg[index]).collect()
        };
        Ok(RunMetrics {
            sampled: average(test, &sampled, name, Protocol::Sampled),
            full_ranking: average(test, &full_ranking, name, Protocol::FullRanking),
            floor_sampled: floor(self.experiment, Protocol::Sampled),
            floor_full_ranking: floor(self.experiment, Protocol::FullRanking),
            sampled_negatives: self.experiment.negatives_per_request(),
            per_request: RequestNdcg {
                tasks: test.iter().map(|r| r.task).collect(),
                sampled: at_selection_cutoff(&sampled),
                full_ranking: at_selection_cutoff(&full_ranking),
            },
        })
    }
}

/// Warns when a beam of `beam_width` items is shorter than the largest cut-off: the metrics at
/// the cut-offs beyond it then count only the hits within the beam.
pub fn warn_if_shallow(beam_width: usize) {
    let depth = DEFAULT_CUTOFFS.iter().copied().max().unwrap_or(0);
    if beam_width < depth {
        tracing::warn!(
            "a beam width of {beam_width} ranks {beam_width} items: Recall, NDCG and MRR at the \
             cut-offs above {beam_width} count only the hits among them (a beam width of {depth} \
             measures them all)"
        );
    }
}

/// The per-task averages of per-request metrics.
fn average(
    requests: &[Request],
    per_request: &[RequestMetrics],
    name: &str,
    protocol: Protocol,
) -> MetricsReport {
    let mut accumulator = MetricsAccumulator::new(&DEFAULT_CUTOFFS);
    for (request, metrics) in requests.iter().zip(per_request) {
        accumulator.add(request.task, metrics);
    }
    accumulator.finish(name, protocol)
}

/// Popularity (both tasks) and BM25 (search) on the test split.
pub fn floor(experiment: &Experiment, protocol: Protocol) -> Vec<MetricsReport> {
    let dataset = &experiment.dataset;
    let catalogue = dataset.catalogue();
    let mut popularity = PopularityRanker::fit(&dataset.train);
    let mut bm25 = Bm25Ranker::new(&dataset.items, Bm25Parameters::default());
    vec![
        evaluate_ranker(
            &mut popularity,
            &dataset.test,
            &catalogue,
            protocol,
            &DEFAULT_CUTOFFS,
        ),
        evaluate_ranker(
            &mut bm25,
            &dataset.test,
            &catalogue,
            protocol,
            &DEFAULT_CUTOFFS,
        ),
    ]
}

/// Up to `per_task` requests of each task (all when 0), in file order.
pub fn subset(requests: &[Request], per_task: usize) -> Vec<Request> {
    if per_task == 0 {
        return requests.to_vec();
    }
    Task::ALL
        .iter()
        .flat_map(|task| {
            requests
                .iter()
                .filter(move |r| r.task == *task)
                .take(per_task)
        })
        .cloned()
        .collect()
}
