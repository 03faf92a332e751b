//! Everything a run needs besides its training loop: the dataset, item identifiers, tokenizer,
//! prompt encoding, the backbone, and the tokenized identifiers that constrained decoding walks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use gems_data::batch::{
    BatchOptions, EncodedExample, PaddingSide, PromptEncoder, TextEncoder, collate_training,
    identifier_token_ids,
};
use gems_data::dataset::{Dataset, PrepareOptions, load_dataset, prepare};
use gems_data::tokenizer::{
    SpecialTokenIds, WordLevelOptions, add_identifier_tokens, tokenizer_corpus, train_word_level,
};
use gems_data::{
    ItemId, ItemIdScheme, ItemIdentifiers, PromptTemplates, Request, SemanticIdOptions, Task,
    ValidationPolicy,
};
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::T5Config;
use gems_models::{Backbone, LmBatch, ModelConfig, ModelKind, PrefixTrie, TokenIds};
use tokenizers::Tokenizer;

use crate::error::{CliError, Result};
use crate::run_dir;
use crate::settings::{IdScheme, TrainSettings};
use crate::{general_corpus, item_embeddings};

/// The data side of a run, and how text becomes tokens.
pub struct Experiment {
    /// The split dataset.
    pub dataset: Dataset,
    /// Item identifiers.
    pub identifiers: ItemIdentifiers,
    /// The tokenizer (item identifier tokens added).
    pub tokenizer: Tokenizer,
    /// The first token the run added to a pre-trained tokenizer (every later one is new too);
    /// `None` when the tokenizer was trained for the run, or reopened from a saved model.
    pub first_new_token: Option<usize>,
    /// Prompt templates.
    pub templates: PromptTemplates,
    /// Layout and special tokens of batches.
    pub batch_options: BatchOptions,
    /// Every item's identifier tokens; an item's index here is its index in every trie.
    pub item_tokens: Vec<(ItemId, Vec<u32>)>,
    /// Trie index of each item.
    pub item_index: HashMap<ItemId, usize>,
    /// The tokens decoding scores for each item, in the order of `item_tokens`: its identifier,
    /// followed by EOS when identifiers differ in length.
    pub decoded_sequences: Vec<Vec<u32>>,
    /// Titles by item, for display.
    pub titles: HashMap<ItemId, String>,
}

impl Experiment {
    /// Data, identifiers and tokenizer for a new run. `pretrained` is the backbone loaded from
    /// `--model-dir`: semantic identifiers then come from its own encoder's item embeddings;
    /// without it (a model from scratch knows nothing yet) from hashed TF-IDF text embeddings.
    pub fn prepare(settings: &TrainSettings, pretrained: Option<&Backbone>) -> Result<Self> {
        let dataset = load_data(&settings.data)?;
        let templates = templates(settings)?;
        let scheme = id_scheme(settings.id_scheme, settings.seed);
        let pretrained = match (&settings.model_dir, pretrained) {
            (Some(directory), Some(backbone)) => Some((
                backbone,
                gems_models::load_tokenizer(directory.join(run_dir::TOKENIZER))?,
            )),
            _ => None,
        };
        let identifiers = match (&scheme, &pretrained) {
            (ItemIdScheme::Semantic(options), Some((backbone, tokenizer))) => {
                let embeddings =
                    item_embeddings::from_backbone(backbone, tokenizer, &dataset.items)?;
                ItemIdentifiers::semantic(&dataset.items, &embeddings, options)?
            }
            _ => ItemIdentifiers::build(&dataset.items, &scheme)?,
        };
        let (tokenizer, first_new_token) = match pretrained {
            Some((_, mut tokenizer)) => {
                let first_new_token = tokenizer.get_vocab_size(true);
                add_identifier_tokens(&mut tokenizer, &identifiers);
                (tokenizer, Some(first_new_token))
            }
            None => {
                let mut corpus = tokenizer_corpus(&dataset.items, &dataset.train, &templates);
                corpus.extend(general_corpus::load(
                    &settings.general_corpus,
                    settings.general_corpus_tokens,
                )?);
                let tokenizer =
                    train_word_level(&corpus, &identifiers, WordLevelOptions::default())?;
                (tokenizer, None)
            }
        };
        let batch_options =
            batch_options(settings.model, settings.model_dir.as_deref(), &tokenizer)?;
        let mut experiment =
            Self::assemble(dataset, identifiers, tokenizer, templates, batch_options)?;
        experiment.first_new_token = first_new_token;
        Ok(experiment)
    }

    /// The experiment of a saved model directory (`tokenizer.json`, `identifiers.json` beside
    /// the weights) over the data named in its settings.
    pub fn reopen(
        settings: &TrainSettings,
        model_directory: &Path,
        kind: ModelKind,
    ) -> Result<Self> {
        let dataset = load_data(&settings.data)?;
        let templates = templates(settings)?;
        let identifiers_path = model_directory.join(run_dir::IDENTIFIERS);
        let identifiers = ItemIdentifiers::load(&identifiers_path)?;
        check_catalogue(&identifiers, &dataset, &identifiers_path)?;
        let tokenizer = gems_models::load_tokenizer(model_directory.join(run_dir::TOKENIZER))?;
        let batch_options = batch_options(kind, Some(model_directory), &tokenizer)?;
        Self::assemble(dataset, identifiers, tokenizer, templates, batch_options)
    }

    fn assemble(
        dataset: Dataset,
        identifiers: ItemIdentifiers,
        tokenizer: Tokenizer,
        templates: PromptTemplates,
        batch_options: BatchOptions,
    ) -> Result<Self> {
        let item_tokens = identifier_token_ids(&tokenizer, &identifiers)?;
        let item_index = item_tokens
            .iter()
            .enumerate()
            .map(|(index, (item, _))| (*item, index))
            .collect();
        let decoded_sequences = decoded_sequences(&item_tokens, batch_options.eos_token_id);
        let titles = dataset
            .items
            .iter()
            .map(|item| (item.id, item.title.clone()))
            .collect();
        Ok(Self {
            dataset,
            identifiers,
            tokenizer,
            first_new_token: None,
            templates,
            batch_options,
            item_tokens,
            item_index,
            decoded_sequences,
            titles,
        })
    }

    /// Encodes `request` (with `target` for training, without for generation).
    pub fn encode(&self, request: &Request, target: Option<ItemId>) -> Result<EncodedExample> {
        let encoder = PromptEncoder::new(
            &self.tokenizer,
            &self.templates,
            &self.identifiers,
            self.batch_options,
        );
        Ok(encoder.encode(request, target)?)
    }

    /// A padded training batch of `examples` on `device`. gems-data marks the positions without
    /// loss with its `IGNORE_INDEX`, which the model's loss skips by its own: the two crates do
    /// not depend on each other, so the build checks here, where they meet, that they agree.
    pub fn training_batch(&self, examples: &[EncodedExample], device: &Device) -> Result<LmBatch> {
        let batch = collate_training(examples, &self.batch_options);
        let rows = |values: &[u32], width: usize| -> Vec<Vec<i64>> {
            values
                .chunks(width)
                .map(|row| row.iter().map(|&v| i64::from(v)).collect())
                .collect()
        };
        let labels: Vec<Vec<i64>> = batch
            .labels
            .chunks(batch.labels_len)
            .map(<[i64]>::to_vec)
            .collect();
        Ok(LmBatch::from_rows(
            &rows(&batch.input_ids, batch.input_len),
            &rows(&batch.attention_mask, batch.input_len),
            &labels,
            device,
        )?)
    }

    /// A trie over the identifiers of `items` (every item when `None`).
    pub fn trie(&self, items: Option<&[ItemId]>) -> Result<PrefixTrie> {
        let mut trie = PrefixTrie::new();
        match items {
            None => {
                for (index, tokens) in self.decoded_sequences.iter().enumerate() {
                    trie.insert(tokens, index)?;
                }
            }
            Some(items) => {
                for item in items {
                    let index = self.item_index[item];
                    trie.insert(&self.decoded_sequences[index], index)?;
                }
            }
        }
        Ok(trie)
    }

    /// Writes what reopening a model directory needs: tokenizer and identifiers.
    pub fn save_beside_model(&self, model_directory: &Path) -> Result<()> {
        gems_data::tokenizer::save_tokenizer(
            &self.tokenizer,
            &model_directory.join(run_dir::TOKENIZER),
        )?;
        self.identifiers
            .save(&model_directory.join(run_dir::IDENTIFIERS))?;
        Ok(())
    }

    /// That this experiment's tokenizer and item identifiers are those saved in
    /// `model_directory` (a checkpoint's). A resumed run rebuilds them from its settings' inputs
    /// (the general corpus of a model from scratch, the pre-trained model's directory), which
    /// may have changed since it started; the trained rows would then belong to other tokens.
    pub fn check_saved(&self, model_directory: &Path) -> Result<()> {
        let changed = |path: &Path, what: &str| {
            Err(CliError::run(
                path,
                format!(
                    "{what} the run's settings make now differ from the saved ones: the general corpus or the model directory changed since the run started; restore them, or start a new run"
                ),
            ))
        };
        let path = model_directory.join(run_dir::TOKENIZER);
        let saved = gems_models::load_tokenizer(&path)?;
        if saved.get_vocab(true) != self.tokenizer.get_vocab(true) {
            return changed(&path, "the tokens");
        }
        let path = model_directory.join(run_dir::IDENTIFIERS);
        if !ItemIdentifiers::load(&path)?
            .iter()
            .eq(self.identifiers.iter())
        {
            return changed(&path, "the item identifiers");
        }
        Ok(())
    }

    /// Language-modelling examples from paragraphs of general text: T5 reads the first half of
    /// each paragraph and predicts the second; a decoder-only model predicts every token after
    /// the first half's. At most `max_tokens` tokens per paragraph. They carry no task of the
    /// run: `Task::Rec` only fills the field, nothing reads it (no optimizer step sees them).
    pub fn lm_examples(
        &self,
        paragraphs: &[String],
        max_tokens: usize,
    ) -> Result<Vec<EncodedExample>> {
        let options = self.batch_options;
        let mut examples = Vec::with_capacity(paragraphs.len());
        for paragraph in paragraphs {
            let mut tokens = self.tokenizer.encode_text(paragraph)?;
            tokens.truncate(max_tokens);
            if tokens.len() < 4 {
                continue;
            }
            let half = tokens.len() / 2;
            let mut prompt = tokens[..half].to_vec();
            if options.append_eos_to_prompt {
                prompt.push(options.eos_token_id);
            }
            examples.push(EncodedExample {
                task: Task::Rec,
                prompt,
                target: tokens[half..].to_vec(),
                target_item: None,
                history_items_shown: 0,
                prompt_cut: false,
            });
        }
        if examples.is_empty() {
            return Err(CliError::Settings(
                "the general corpus has no paragraph of at least 4 tokens under this tokenizer"
                    .into(),
            ));
        }
        Ok(examples)
    }

    /// Fixed negatives per valid/test request, as the dataset's manifest records them.
    pub fn negatives_per_request(&self) -> Option<usize> {
        self.dataset
            .manifest
            .negatives
            .map(|record| record.per_request)
    }

    /// A fingerprint of the data: catalogue and splits, as FNV-1a over their JSON.
    pub fn data_fingerprint(&self) -> String {
        let json = serde_json::to_vec(&(
            &self.dataset.items,
            &self.dataset.train,
            &self.dataset.valid,
            &self.dataset.test,
        ))
        .expect("datasets serialise");
        format!("{:016x}", gems_data::fnv1a(&json))
    }
}

/// That the saved identifiers (`path`) name exactly the items of the catalogue: the item of
/// every identifier the model generates is looked up there, and the reverse.
fn check_catalogue(identifiers: &ItemIdentifiers, dataset: &Dataset, path: &Path) -> Result<()> {
    let catalogue: HashSet<ItemId> = dataset.items.iter().map(|item| item.id).collect();
    let unknown = identifiers
        .iter()
        .find(|(item, _)| !catalogue.contains(item));
    let missing = dataset
        .items
        .iter()
        .find(|item| identifiers.identifier(item.id).is_none());
    let problem = match (unknown, missing) {
        (Some((item, identifier)), _) => format!(
            "item {item} (`{identifier}`) is not in the catalogue of the data ({} items)",
            catalogue.len()
        ),
        (None, Some(item)) => format!(
            "has no identifier for item {} of the catalogue ({} identifiers, {} items)",
            item.id,
            identifiers.len(),
            catalogue.len()
        ),
        (None, None) => return Ok(()),
    };
    Err(CliError::run(
        path,
        format!("{problem}: the model was made for other data"),
    ))
}

const _: () = assert!(gems_data::batch::IGNORE_INDEX == gems_models::IGNORE_INDEX);

/// The pre-trained backbone of `--model-dir`, if one is given, checked against `--model`.
pub fn pretrained_backbone(settings: &TrainSettings, device: &Device) -> Result<Option<Backbone>> {
    let Some(directory) = &settings.model_dir else {
        return Ok(None);
    };
    let backbone = crate::memory::load_backbone(directory, device)?;
    check_family(settings.model, backbone.kind(), directory)?;
    Ok(Some(backbone))
}

/// The backbone of a new run: the `pretrained` one, one from a config file, or the compact
/// from-scratch default; its vocabulary grown to the tokenizer's.
pub fn new_backbone(
    settings: &TrainSettings,
    pretrained: Option<Backbone>,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<Backbone> {
    device.seed(settings.seed);
    let vocabulary = tokenizer.get_vocab_size(true);
    let backbone = match (pretrained, &settings.model_config) {
        (Some(backbone), _) => backbone,
        (None, Some(path)) => {
            let config = ModelConfig::from_file(path)?;
            check_family(settings.model, config.kind(), path)?;
            let backbone = Backbone::new(&config, device)?;
            crate::memory::check_model_fits(&backbone, &path.display().to_string())?;
            backbone
        }
        (None, None) => {
            let special = SpecialTokenIds::of(tokenizer)?;
            let config = match settings.model {
                ModelKind::T5 => {
                    let mut config = T5Config::compact(vocabulary);
                    config.pad_token_id = special.pad;
                    config.decoder_start_token_id = special.pad;
                    config.eos_token_id = Some(TokenIds::One(special.eos));
                    config.dropout_rate = 0.0;
                    ModelConfig::T5(config)
                }
                ModelKind::Qwen2 => {
                    let mut config = Qwen2Config::compact(vocabulary);
                    config.pad_token_id = Some(special.pad);
                    config.eos_token_id = Some(TokenIds::One(special.eos));
                    ModelConfig::Qwen2(config)
                }
            };
            Backbone::new(&config, device)?
        }
    };
    Ok(if backbone.vocab_size() < vocabulary {
        backbone.resize_token_embeddings(vocabulary)
    } else {
        backbone
    })
}

/// The token sequences constrained decoding scores, one per item of `item_tokens`: the
/// identifiers themselves when they all have one length (atomic and semantic ids), each followed
/// by `eos` when their lengths differ (titles). Training ends every target with EOS, so the
/// score then is the probability of the whole sequence the model learnt to produce, and an
/// identifier that is a prefix of another (`T` of `T (2)`) no longer outranks it by stopping
/// early: without EOS, stopping costs nothing and every extension can only lower a score.
fn decoded_sequences(item_tokens: &[(ItemId, Vec<u32>)], eos: u32) -> Vec<Vec<u32>> {
    let lengths = item_tokens.iter().map(|(_, tokens)| tokens.len());
    let one_length = lengths.clone().min() == lengths.max();
    item_tokens
        .iter()
        .map(|(_, tokens)| {
            let mut sequence = tokens.clone();
            if !one_length {
                sequence.push(eos);
            }
            sequence
        })
        .collect()
}

fn check_family(wanted: ModelKind, found: ModelKind, path: &Path) -> Result<()> {
    if wanted == found {
        Ok(())
    } else {
        Err(CliError::Settings(format!(
            "{}: is a {found:?} model but --model is {wanted:?}; pass --model {found}",
            path.display(),
        )))
    }
}

/// `synthetic` or a directory of the unified format, split and validated.
pub fn load_data(source: &str) -> Result<Dataset> {
    if source == "synthetic" {
        if Path::new(source).is_dir() {
            tracing::warn!(
                "data `synthetic` is the embedded data, not the directory ./synthetic here: give ./synthetic to train on that"
            );
        }
        let converted =
            gems_data::synthetic::generate(&gems_data::synthetic::SyntheticConfig::default())?;
        let (dataset, _) = prepare(converted, PrepareOptions::default())?;
        return Ok(dataset);
    }
    let directory = PathBuf::from(source);
    if !directory.is_dir() {
        return Err(CliError::Settings(format!(
            "data {source}: not a directory; give `synthetic` or a directory made by `gems data convert` / `gems data split`"
        )));
    }
    let (dataset, report) = crate::error::one_line(
        &directory,
        load_dataset(&directory, ValidationPolicy::Strict),
        "fix the files, or repair them with `gems data split --on-invalid filter` from the unsplit requests",
    )?;
    tracing::info!(?report, "data loaded from {}", directory.display());
    Ok(dataset)
}

fn id_scheme(scheme: IdScheme, seed: u64) -> ItemIdScheme {
    match scheme {
        IdScheme::Atomic => ItemIdScheme::Atomic,
        IdScheme::Semantic => ItemIdScheme::Semantic(SemanticIdOptions {
            seed,
            ..SemanticIdOptions::default()
        }),
        IdScheme::Title => ItemIdScheme::Title,
    }
}

/// The reference prompts, showing the last `max_history` items.
fn templates(settings: &TrainSettings) -> Result<PromptTemplates> {
    let reference = PromptTemplates::default();
    Ok(PromptTemplates::new(
        reference.template(Task::Rec),
        reference.template(Task::Search),
        settings.max_history,
    )?)
}

/// Batch layout and special tokens: T5 pads right and ends prompts with EOS; Qwen2 pads left.
fn batch_options(
    family: ModelKind,
    model_dir: Option<&Path>,
    tokenizer: &Tokenizer,
) -> Result<BatchOptions> {
    let (pad, eos) = match model_dir
        .map(|d| d.join(run_dir::MODEL_CONFIG))
        .filter(|p| p.exists())
    {
        Some(path) => {
            let config = ModelConfig::from_file(&path)?;
            let eos = *config.eos_token_ids().first().ok_or_else(|| {
                CliError::Settings(format!("{}: no eos_token_id", path.display()))
            })?;
            (config.pad_token_id(), eos)
        }
        None => {
            let special = SpecialTokenIds::of(tokenizer)?;
            (special.pad, special.eos)
        }
    };
    let mut options = match family {
        ModelKind::T5 => BatchOptions::encoder_decoder(),
        ModelKind::Qwen2 => BatchOptions::decoder_only(PaddingSide::Left, pad, eos),
    };
    options.pad_token_id = pad;
    options.eos_token_id = eos;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_of_several_lengths_are_decoded_up_to_their_eos() {
        const EOS: u32 = 1;
        // Titles: `T` (tokens 7 8) is a prefix of `T (2)` (7 8 9 10).
        let titles = vec![(10, vec![7, 8]), (11, vec![7, 8, 9, 10]), (12, vec![5])];
        assert_eq!(
            decoded_sequences(&titles, EOS),
            vec![vec![7, 8, EOS], vec![7, 8, 9, 10, EOS], vec![5, EOS]]
        );
        // Atomic and semantic identifiers all have one length: decoded as they are.
        let semantic = vec![(10, vec![3, 4, 5]), (11, vec![3, 4, 6])];
        assert_eq!(
            decoded_sequences(&semantic, EOS),
            vec![vec![3, 4, 5], vec![3, 4, 6]]
        );
    }
}
