//! Loading, saving and configuration: parameter paths equal the HF tensor names, load → save →
//! load is exact, every checkpoint problem is named in one error, and both transformers config
//! styles parse.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use common::*;
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::{FeedForwardProj, T5Config};
use gems_models::{
    Backbone, ModelConfig, ModelError, WEIGHTS_FILE, load_tokenizer, parameter_paths,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Names and shapes of every tensor a fixture stores (all shards).
fn checkpoint_tensors(directory: &Path) -> BTreeMap<String, Vec<usize>> {
    let mut tensors = BTreeMap::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            for (name, view) in SafeTensors::deserialize(&bytes).unwrap().tensors() {
                tensors.insert(name, view.shape().to_vec());
            }
        }
    }
    tensors
}

#[test]
fn parameter_paths_are_the_hugging_face_names() {
    for name in FIXTURES {
        let model = load(name);
        let ours: BTreeMap<String, Vec<usize>> = parameter_paths(&model).into_iter().collect();
        let theirs = checkpoint_tensors(&fixture(name));
        assert_eq!(ours, theirs, "{name}");
    }
    // The projected matrices are where the optimizer's predicate expects them.
    let paths: BTreeSet<String> = parameter_paths(&load("t5-v1_1"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for path in [
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "encoder.block.1.layer.1.DenseReluDense.wi_0.weight",
        "decoder.block.2.layer.1.EncDecAttention.o.weight",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "lm_head.weight",
    ] {
        assert!(paths.contains(path), "{path}");
    }
    let paths: BTreeSet<String> = parameter_paths(&load("qwen2-untied"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for path in [
        "model.layers.1.self_attn.k_proj.bias",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
    ] {
        assert!(paths.contains(path), "{path}");
    }
}

#[test]
fn tying_follows_the_checkpoint() {
    assert!(load("t5-v1_0").is_tied());
    assert!(!load("t5-v1_1").is_tied());
    assert!(load("qwen2-tied").is_tied());
    assert!(!load("qwen2-untied").is_tied());
}

/// The vocabulary matrices are the embedding, and the head when it is untied, each stored
/// `[vocab, width]` as in the checkpoint.
#[test]
fn token_matrices_are_the_embedding_and_an_untied_head() {
    let expected = [
        ("t5-v1_0", vec!["shared"]),
        ("t5-v1_1", vec!["shared", "lm_head"]),
        ("qwen2-tied", vec!["model.embed_tokens"]),
        ("qwen2-untied", vec!["model.embed_tokens", "lm_head"]),
    ];
    for (name, paths) in expected {
        let model = load(name);
        let shapes: BTreeMap<String, Vec<usize>> = parameter_paths(&model).into_iter().collect();
        let matrices = model.token_matrices();
        let listed: Vec<&str> = matrices.iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, paths, "{name}");
        let hidden = model.config().hidden_size();
        for (path, matrix) in matrices {
            assert_eq!(matrix.vocab_size(), model.vocab_size(), "{name}: {path}");
            let shape = &shapes[&format!("{path}.weight")];
            assert_eq!(shape, &vec![model.vocab_size(), hidden], "{name}: {path}");
        }
    }
}

#[test]
fn save_then_load_gives_identical_logits() {
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied", "qwen2-untied"] {
        let model = load(name);
        let batch = Reference::load(name).batch(&device());
        let before = values(model.logits(&batch).unwrap());
        let directory = scratch(&format!("round-trip-{name}"));
        model.save(&directory).unwrap();
        let reloaded = Backbone::load(&directory, &device()).unwrap();
        assert_eq!(reloaded.is_tied(), model.is_tied(), "{name}");
        assert_eq!(values(reloaded.logits(&batch).unwrap()), before, "{name}");
        // Tied weights are written once, as transformers writes them.
        let stored = checkpoint_tensors(&directory);
        assert_eq!(stored, checkpoint_tensors(&fixture(name)), "{name}");
        std::fs::remove_dir_all(directory).unwrap();
    }
}

/// Copies a fixture and rewrites its weights with `edit` applied to the tensor map.
fn edited_fixture(
    name: &str,
    tag: &str,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let source = fixture(name);
    let directory = scratch(tag);
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.join(file), directory.join(file)).unwrap();
    }
    let bytes = std::fs::read(source.join(WEIGHTS_FILE)).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &directory.join(WEIGHTS_FILE)).unwrap();
    directory
}

#[test]
fn every_checkpoint_problem_is_named_in_one_error() {
    let directory = edited_fixture("t5-v1_1", "broken", |tensors| {
        tensors.remove("encoder.block.1.layer.0.SelfAttention.k.weight");
        tensors.insert(
            "encoder.block.9.layer.0.SelfAttention.q.weight".into(),
            (vec![2], vec![0; 8]),
        );
        tensors.insert(
            "decoder.block.0.layer.2.DenseReluDense.wo.weight".into(),
            (vec![32, 63], vec![0; 32 * 63 * 4]),
        );
    });
    let error = Backbone::load(&directory, &device()).unwrap_err();
    match &error {
        ModelError::TensorMismatch {
            missing,
            unexpected,
            mis_shaped,
            ..
        } => {
            assert_eq!(missing, &["encoder.block.1.layer.0.SelfAttention.k.weight"]);
            assert_eq!(
                unexpected,
                &["encoder.block.9.layer.0.SelfAttention.q.weight"]
            );
            assert_eq!(mis_shaped.len(), 1);
            assert_eq!(
                mis_shaped[0].name,
                "decoder.block.0.layer.2.DenseReluDense.wo.weight"
            );
            assert_eq!(
                (mis_shaped[0].expected.clone(), mis_shaped[0].found.clone()),
                (vec![32, 64], vec![32, 63])
            );
        }
        other => panic!("unexpected error {other}"),
    }
    let message = error.to_string();
    for name in [
        "SelfAttention.k.weight",
        "block.9",
        "DenseReluDense.wo.weight",
        "[32, 64]",
        "broken",
    ] {
        assert!(message.contains(name), "{message}");
    }
    std::fs::remove_dir_all(directory).unwrap();
}

#[test]
fn tied_duplicates_are_accepted_and_a_distinct_head_unties() {
    let shared =
        |tensors: &HashMap<String, (Vec<usize>, Vec<u8>)>| tensors["shared.weight"].clone();
    let directory = edited_fixture("t5-v1_0", "duplicates", |tensors| {
        for name in [
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "lm_head.weight",
        ] {
            tensors.insert(name.into(), shared(tensors));
        }
    });
    let reference = Reference::load("t5-v1_0");
    let batch = reference.batch(&device());
    let model = Backbone::load(&directory, &device()).unwrap();
    assert!(model.is_tied());
    assert_eq!(
        values(model.logits(&batch).unwrap()),
        values(load("t5-v1_0").logits(&batch).unwrap())
    );
    std::fs::remove_dir_all(directory).unwrap();

    // As in transformers 5: a `lm_head.weight` that differs from `shared.weight` is the model's own.
    let directory = edited_fixture("t5-v1_0", "own-head", |tensors| {
        let (shape, mut bytes) = shared(tensors);
        bytes.reverse();
        tensors.insert("lm_head.weight".into(), (shape, bytes));
    });
    assert!(!Backbone::load(&directory, &device()).unwrap().is_tied());
    std::fs::remove_dir_all(directory).unwrap();
}

#[test]
fn unreadable_dtype_is_named() {
    let directory = edited_fixture("qwen2-tied", "int-weight", |_| {});
    let bytes = std::fs::read(directory.join(WEIGHTS_FILE)).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = if name == "model.norm.weight" {
                Dtype::I32
            } else {
                view.dtype()
            };
            let view = TensorView::new(dtype, view.shape().to_vec(), view.data()).unwrap();
            (name, view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &directory.join("rewritten.safetensors")).unwrap();
    std::fs::rename(
        directory.join("rewritten.safetensors"),
        directory.join(WEIGHTS_FILE),
    )
    .unwrap();
    let message = Backbone::load(&directory, &device())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("model.norm.weight") && message.contains("I32"),
        "{message}"
    );
    std::fs::remove_dir_all(directory).unwrap();
}

#[test]
fn a_shard_index_may_only_name_files_of_the_model_directory() {
    let directory = scratch("shard-outside");
    for entry in std::fs::read_dir(fixture("qwen2-untied")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, directory.join(path.file_name().unwrap())).unwrap();
    }
    let index = directory.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap().replacen(
        "\"model-00002-of-00002.safetensors\"",
        "\"../qwen2-tied/model.safetensors\"",
        1,
    );
    std::fs::write(&index, text).unwrap();
    let message = Backbone::load(&directory, &device())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"../qwen2-tied/model.safetensors\", which is not a file name"),
        "{message}"
    );
    std::fs::remove_dir_all(directory).unwrap();
}

fn parse(text: &str) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(text, Path::new("config.json"))
}

/// `google-t5/t5-small` as on the hub (transformers 4).
const T5_SMALL: &str = r#"{
  "architectures": ["T5ForConditionalGeneration"], "d_ff": 2048, "d_kv": 64, "d_model": 512,
  "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "initializer_factor": 1.0,
  "is_encoder_decoder": true, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
  "num_heads": 8, "num_layers": 6, "output_past": true, "pad_token_id": 0,
  "relative_attention_num_buckets": 32,
  "task_specific_params": {"summarization": {"prefix": "summarize: "}}, "vocab_size": 32128
}"#;

/// `google/flan-t5-base` as on the hub (transformers 4).
const FLAN_T5_BASE: &str = r#"{
  "architectures": ["T5ForConditionalGeneration"], "d_ff": 2048, "d_kv": 64, "d_model": 768,
  "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
  "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": true,
  "is_gated_act": true, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
  "num_decoder_layers": 12, "num_heads": 12, "num_layers": 12, "output_past": true, "pad_token_id": 0,
  "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
  "tie_word_embeddings": false, "torch_dtype": "float32", "transformers_version": "4.23.1",
  "use_cache": true, "vocab_size": 32128
}"#;

/// A T5 v1.1 config as transformers 5 saves it.
const T5_V1_1_TRANSFORMERS_5: &str = r#"{
  "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64, "d_model": 512,
  "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dtype": "float32", "eos_token_id": 1,
  "feed_forward_proj": "gated-gelu", "is_gated_act": true, "model_type": "t5", "num_heads": 6,
  "num_layers": 8, "num_decoder_layers": 8, "pad_token_id": 0, "scale_decoder_outputs": false,
  "tie_word_embeddings": true, "transformers_version": "5.23.0", "vocab_size": 32128
}"#;

/// `Qwen/Qwen2.5-0.5B` as on the hub (transformers 4).
const QWEN2_5_0_5B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936
}"#;

/// The same model as transformers 5 saves it.
const QWEN2_5_0_5B_TRANSFORMERS_5: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "dtype": "bfloat16",
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
  "layer_types": ["full_attention", "full_attention"], "max_position_embeddings": 32768,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 2, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
  "sliding_window": null, "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151936
}"#;

fn t5(text: &str) -> T5Config {
    match parse(text).unwrap() {
        ModelConfig::T5(config) => config,
        other => panic!("not T5: {other:?}"),
    }
}

fn qwen2(text: &str) -> Qwen2Config {
    match parse(text).unwrap() {
        ModelConfig::Qwen2(config) => config,
        other => panic!("not Qwen2: {other:?}"),
    }
}

#[test]
fn t5_configs_of_both_transformers_generations_parse() {
    let small = t5(T5_SMALL);
    assert_eq!(
        (
            small.d_model,
            small.num_layers,
            small.decoder_layers(),
            small.num_heads
        ),
        (512, 6, 6, 8)
    );
    assert_eq!(small.feed_forward_proj, FeedForwardProj::RELU);
    assert!(small.tie_word_embeddings && small.scales_decoder_outputs());
    assert_eq!(small.relative_attention_max_distance, 128);
    assert!(
        small.extra.contains_key("task_specific_params"),
        "unknown keys are kept for saving"
    );

    let flan = t5(FLAN_T5_BASE);
    assert_eq!(flan.feed_forward_proj, FeedForwardProj::GATED_GELU);
    assert!(!flan.tie_word_embeddings && !flan.scales_decoder_outputs());

    let v5 = t5(T5_V1_1_TRANSFORMERS_5);
    assert!(v5.tie_word_embeddings && !v5.scales_decoder_outputs());
    assert_eq!(v5.decoder_layers(), 8);

    for config in [small, flan, v5] {
        let json = ModelConfig::T5(config.clone()).to_json();
        assert_eq!(
            json["feed_forward_proj"],
            String::from(config.feed_forward_proj).as_str()
        );
        assert_eq!(
            t5(&json.to_string()),
            config,
            "to_json then parse is the identity"
        );
    }
}

#[test]
fn qwen2_configs_of_both_transformers_generations_parse() {
    let v4 = qwen2(QWEN2_5_0_5B);
    let v5 = qwen2(QWEN2_5_0_5B_TRANSFORMERS_5);
    for config in [&v4, &v5] {
        assert_eq!(config.rope_base(), 1_000_000.0);
        assert_eq!((config.key_value_heads(), config.head_size()), (2, 64));
        assert!(config.tie_word_embeddings && !config.use_sliding_window);
        assert_eq!(
            config.pad_token_id(),
            151643,
            "no pad_token_id: the end-of-text token"
        );
    }
    assert_eq!(Qwen2Config::qwen2_5_0_5b(24).rope_base(), v4.rope_base());
    for config in [v4, v5] {
        assert_eq!(
            qwen2(&ModelConfig::Qwen2(config.clone()).to_json().to_string()),
            config
        );
    }
}

#[test]
fn unsupported_configs_get_clear_errors() {
    let cases = [
        (
            T5_SMALL.replace(
                r#""model_type": "t5""#,
                r#""feed_forward_proj": "gated-swiglu", "model_type": "t5""#,
            ),
            "feed_forward_proj",
        ),
        (
            QWEN2_5_0_5B.replace(r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#),
            "hidden_act",
        ),
        (
            QWEN2_5_0_5B.replace(
                r#""use_sliding_window": false"#,
                r#""use_sliding_window": true"#,
            ),
            "use_sliding_window",
        ),
        (
            QWEN2_5_0_5B.replace(
                r#""rope_theta": 1000000.0"#,
                r#""rope_scaling": {"type": "yarn", "factor": 4.0}"#,
            ),
            "yarn",
        ),
        (
            QWEN2_5_0_5B.replace(r#""model_type": "qwen2""#, r#""model_type": "llama""#),
            "llama",
        ),
        (
            QWEN2_5_0_5B.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#),
            "num_key_value_heads",
        ),
        // A head width of 0 passed and broke the model later.
        (
            QWEN2_5_0_5B.replace(r#""hidden_act""#, r#""head_dim": 0, "hidden_act""#),
            "head_dim must be positive",
        ),
        // Far positions fell into negative buckets.
        (
            FLAN_T5_BASE.replace(
                r#""relative_attention_max_distance": 128"#,
                r#""relative_attention_max_distance": 2"#,
            ),
            "relative_attention_max_distance",
        ),
        // Special token ids without an embedding row panicked at the first batch.
        (
            T5_SMALL.replace(r#""eos_token_id": 1"#, r#""eos_token_id": 32128"#),
            "eos_token_id 32128 is not below vocab_size 32128",
        ),
        (
            T5_SMALL.replace(
                r#""decoder_start_token_id": 0"#,
                r#""decoder_start_token_id": 40000"#,
            ),
            "decoder_start_token_id",
        ),
        (
            QWEN2_5_0_5B.replace(r#""bos_token_id": 151643"#, r#""bos_token_id": 200000"#),
            "bos_token_id",
        ),
        (
            QWEN2_5_0_5B.replace(
                r#""eos_token_id": 151643"#,
                r#""eos_token_id": [151643, 151936]"#,
            ),
            "eos_token_id 151936",
        ),
        // A billion blocks exhausted the memory while the skeleton was built.
        (
            T5_SMALL.replace(r#""num_layers": 6"#, r#""num_layers": 1000000000"#),
            "num_layers is 1000000000",
        ),
        (
            QWEN2_5_0_5B.replace(r#""num_hidden_layers": 24"#, r#""num_hidden_layers": 1025"#),
            "num_hidden_layers",
        ),
        // Heads × head width wrapped around in release builds: a model of other sizes ran.
        (
            T5_SMALL.replace(r#""d_kv": 64"#, r#""d_kv": 4611686018427387912"#),
            "num_heads × d_kv",
        ),
        (
            QWEN2_5_0_5B.replace(
                r#""hidden_act""#,
                r#""head_dim": 4611686018427387904, "hidden_act""#,
            ),
            "num_attention_heads × head_dim",
        ),
        // Numbers that made every logit NaN.
        (
            QWEN2_5_0_5B.replace(r#""rope_theta": 1000000.0"#, r#""rope_theta": 0.0"#),
            "rope_theta must be positive",
        ),
        (
            QWEN2_5_0_5B_TRANSFORMERS_5
                .replace(r#""rope_theta": 1000000.0"#, r#""rope_theta": -5.0"#),
            "rope_theta",
        ),
        (
            QWEN2_5_0_5B.replace(r#""rms_norm_eps": 1e-06"#, r#""rms_norm_eps": -1.0"#),
            "rms_norm_eps",
        ),
        (
            T5_SMALL.replace(
                r#""layer_norm_epsilon": 1e-06"#,
                r#""layer_norm_epsilon": -1"#,
            ),
            "layer_norm_epsilon",
        ),
        (
            T5_SMALL.replace(r#""dropout_rate": 0.1"#, r#""dropout_rate": 1.5"#),
            "dropout_rate must be in [0, 1)",
        ),
    ];
    for (text, word) in cases {
        let error = parse(&text).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(word) && message.starts_with("config.json"),
            "{message}"
        );
        assert!(!matches!(error, ModelError::Json { .. }), "{message}");
    }
}

#[test]
fn tokenizer_json_loads() {
    let tokenizer = load_tokenizer(fixture("t5-v1_0")).unwrap();
    let encoding = tokenizer.encode("w5 w17 w33", false).unwrap();
    assert_eq!(encoding.get_ids(), &[5, 17, 33]);
    let error = load_tokenizer(fixture("missing")).unwrap_err().to_string();
    assert!(error.contains("tokenizer.json"), "{error}");
}

/// A token whose id leaves a gap (or repeats one) is refused: the vocabulary's size counts
/// tokens, so such an id had no embedding row and panicked at the first batch that used it.
#[test]
fn tokenizer_ids_with_gaps_or_repeats_are_refused() {
    let original = std::fs::read_to_string(fixture("t5-v1_0").join("tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap().clone();
    let count = vocab.len();
    assert!(
        vocab
            .values()
            .all(|id| (id.as_u64().unwrap() as usize) < count)
    );
    for (token, id, expected) in [
        ("guitar", 5000, format!("after {count} ids comes id 5000")),
        ("guitar", 7, "after 8 ids comes id 7".to_string()),
    ] {
        json["model"]["vocab"][token] = serde_json::json!(id);
        let directory =
            std::env::temp_dir().join(format!("gems-tokenizer-gap-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("tokenizer.json"), json.to_string()).unwrap();
        let error = load_tokenizer(&directory).unwrap_err().to_string();
        assert!(
            error.contains("tokenizer.json") && error.contains(&expected),
            "{error}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
        json["model"]["vocab"]
            .as_object_mut()
            .unwrap()
            .remove(token);
    }
}
