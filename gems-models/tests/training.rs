//! What training code relies on: gradients for every parameter, vocabulary growth, frozen
//! pre-trained vocabulary rows, the linear-input observer, and random initialisation.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor};
use common::*;
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::T5Config;
use gems_models::{
    Backbone, GradientFactoring, IGNORE_INDEX, LinearInputObserver, LmBatch, ModelConfig,
    ModelKind, parameter_paths,
};

/// What is wrong with each parameter's gradient (by [`gradients_by_path`]): missing,
/// non-finite, or all zero.
fn gradient_problems(gradients: &BTreeMap<String, Option<Vec<f32>>>) -> Vec<String> {
    gradients
        .iter()
        .filter_map(|(path, gradient)| match gradient {
            None => Some(format!("{path}: no gradient")),
            Some(v) if v.iter().any(|x| !x.is_finite()) => {
                Some(format!("{path}: non-finite gradient"))
            }
            Some(v) if v.iter().all(|x| *x == 0.0) => Some(format!("{path}: zero gradient")),
            Some(_) => None,
        })
        .collect()
}

#[test]
fn every_parameter_gets_a_finite_gradient() {
    let device = Device::flex().autodiff();
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied", "qwen2-untied"] {
        // With the vocabulary grown, as training does for item tokens: the resized tables must
        // be trainable leaves on an autodiff device.
        let loaded = Backbone::load(fixture(name), &device).unwrap();
        let vocab = loaded.vocab_size();
        let model = loaded.resize_token_embeddings(vocab + 3);
        let loss = model.loss(&Reference::load(name).batch(&device)).unwrap();
        let gradients = gradients_by_path(&model, &loss.backward());
        assert_eq!(gradients.len(), parameter_paths(&model).len());
        let problems = gradient_problems(&gradients);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

#[test]
fn grown_vocabulary_starts_at_the_mean_embedding_and_keeps_old_logits() {
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied", "qwen2-untied"] {
        let model = load(name);
        let reference = Reference::load(name);
        let batch = reference.batch(&device());
        let before = model.logits(&batch).unwrap();
        let [rows, length, vocab] = before.dims();
        let grown = model.clone().resize_token_embeddings(vocab + 5);
        assert_eq!(grown.vocab_size(), vocab + 5);
        assert_eq!(grown.is_tied(), model.is_tied());
        let after = grown.logits(&batch).unwrap();
        assert_eq!(after.dims(), [rows, length, vocab + 5]);
        let kept = after.clone().narrow(2, 0, vocab);
        let error = max_abs_diff(&values(kept), &values(before), |_| true);
        assert!(error < 1e-5, "{name}: old logits moved by {error}");
        // New tokens: all five logits equal (same row), equal to the logit of the mean row.
        let new = values(after.narrow(2, vocab, 5));
        for chunk in new.chunks(5) {
            assert!(
                chunk.iter().all(|v| (v - chunk[0]).abs() < 1e-5),
                "{name}: {chunk:?}"
            );
        }
        let shapes: BTreeMap<String, Vec<usize>> = parameter_paths(&grown).into_iter().collect();
        let embedding = if model.kind() == ModelKind::T5 {
            "shared.weight"
        } else {
            "model.embed_tokens.weight"
        };
        assert_eq!(shapes[embedding][0], vocab + 5);
        if !model.is_tied() {
            assert_eq!(shapes["lm_head.weight"][0], vocab + 5);
        }
        // The grown model saves and trains.
        let labelled = batch.clone();
        assert!(
            grown
                .loss(&labelled)
                .unwrap()
                .into_scalar::<f32>()
                .is_finite()
        );
        // Shrinking back restores the original logits.
        let shrunk = grown.resize_token_embeddings(vocab);
        let error = max_abs_diff(
            &values(shrunk.logits(&batch).unwrap()),
            &values(model.logits(&batch).unwrap()),
            |_| true,
        );
        assert!(error < 1e-5, "{name}");
    }
}

/// Records every observation.
#[derive(Default)]
struct Recorder {
    seen: BTreeMap<String, Vec<Vec<f32>>>,
    rows: BTreeMap<String, usize>,
}

impl LinearInputObserver for Recorder {
    fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        assert!(
            !inputs.is_require_grad(),
            "{path}: observed inputs are detached"
        );
        let [rows, width] = inputs.dims();
        let values: Vec<f32> = inputs.into_data().iter::<f32>().collect();
        *self.rows.entry(path.to_string()).or_default() += rows;
        self.seen
            .entry(path.to_string())
            .or_default()
            .extend(values.chunks(width).map(<[f32]>::to_vec));
    }
}

/// The paths of the matrices the optimizer projects: attention q/k/v/o and MLP, minus `.weight`.
fn projected(model: &Backbone) -> BTreeSet<String> {
    parameter_paths(model)
        .into_iter()
        .filter_map(|(path, shape)| (shape.len() == 2).then_some(path))
        .filter(|path| {
            !path.contains("embed")
                && !path.contains("shared")
                && !path.starts_with("lm_head")
                && !path.contains("relative_attention_bias")
        })
        .map(|path| path.trim_end_matches(".weight").to_string())
        .collect()
}

#[test]
fn observer_sees_every_projected_linear_at_real_tokens() {
    let device = Device::flex().autodiff();
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied"] {
        let model = Backbone::load(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let batch = reference.batch(&device);
        let mut recorder = Recorder::default();
        let loss = model
            .forward_observed(&batch, &mut recorder)
            .unwrap()
            .into_scalar::<f32>();
        assert_eq!(loss, model.loss(&batch).unwrap().into_scalar::<f32>());

        let seen: BTreeSet<String> = recorder.seen.keys().cloned().collect();
        assert_eq!(seen, projected(&model), "{name}");
        let tokens: usize = reference
            .ints("attention_mask")
            .iter()
            .flatten()
            .map(|&m| m as usize)
            .sum();
        let labelled = reference
            .ints("labels")
            .iter()
            .flatten()
            .filter(|&&l| l != -100)
            .count();
        for (path, rows) in &recorder.rows {
            let cross_memory =
                path.contains("EncDecAttention.k") || path.contains("EncDecAttention.v");
            let expected = match model.kind() {
                ModelKind::T5 if path.starts_with("decoder") && !cross_memory => labelled,
                _ => tokens,
            };
            assert_eq!(*rows, expected, "{name}: {path}");
        }
        // q, k and v of one attention see the same input.
        let layer = match model.kind() {
            ModelKind::T5 => [
                "encoder.block.1.layer.0.SelfAttention.q",
                "encoder.block.1.layer.0.SelfAttention.k",
                "encoder.block.1.layer.0.SelfAttention.v",
            ],
            ModelKind::Qwen2 => [
                "model.layers.1.self_attn.q_proj",
                "model.layers.1.self_attn.k_proj",
                "model.layers.1.self_attn.v_proj",
            ],
        };
        assert_eq!(recorder.seen[layer[0]], recorder.seen[layer[1]]);
        assert_eq!(recorder.seen[layer[0]], recorder.seen[layer[2]]);

        // The first attention's input is the RMS-normed embedding of each real token, in row order.
        let (embedding, norm, query) = match model.kind() {
            ModelKind::T5 => (
                "shared.weight",
                "encoder.block.0.layer.0.layer_norm.weight",
                "encoder.block.0.layer.0.SelfAttention.q",
            ),
            ModelKind::Qwen2 => (
                "model.embed_tokens.weight",
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.self_attn.q_proj",
            ),
        };
        let table = param_values(&model, embedding);
        let scale = param_values(&model, norm);
        let width = scale.len();
        let ids = reference.ints("input_ids").concat();
        let mask = reference.ints("attention_mask").concat();
        let expected: Vec<Vec<f32>> = ids
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m == 1)
            .map(|(&id, _)| {
                let row = &table[id as usize * width..(id as usize + 1) * width];
                let rms = (row.iter().map(|v| v * v).sum::<f32>() / width as f32 + 1e-6).sqrt();
                row.iter().zip(&scale).map(|(v, s)| v / rms * s).collect()
            })
            .collect();
        let seen = &recorder.seen[query];
        assert_eq!(seen.len(), expected.len());
        let error = max_abs_diff(&seen.concat(), &expected.concat(), |_| true);
        assert!(error < 1e-5, "{name}: {error}");
    }
}

#[test]
fn random_models_follow_the_config_and_hf_initialisation() {
    let device = device();
    device.seed(7);
    let config = T5Config::compact(300);
    let model = Backbone::new(&ModelConfig::T5(config.clone()), &device).unwrap();
    assert!(model.is_tied());
    let shapes: BTreeMap<String, Vec<usize>> = parameter_paths(&model).into_iter().collect();
    assert_eq!(shapes["shared.weight"], vec![300, 128]);
    assert_eq!(
        shapes["encoder.block.1.layer.1.DenseReluDense.wi.weight"],
        vec![512, 128]
    );
    assert!(
        !shapes
            .contains_key("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")
    );

    // Standard deviations of HF's `_init_weights` (factor 1): q ~ (d_model·d_kv)^-1/2, wo ~ d_ff^-1/2, shared ~ 1.
    let std = |name: &str| {
        let values = param_values(&model, name);
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32).sqrt()
    };
    let near = |found: f32, expected: f64| (found as f64 - expected).abs() < 0.1 * expected;
    assert!(near(
        std("encoder.block.0.layer.0.SelfAttention.q.weight"),
        (128.0f64 * 32.0).powf(-0.5)
    ));
    assert!(near(
        std("decoder.block.1.layer.2.DenseReluDense.wo.weight"),
        512f64.powf(-0.5)
    ));
    assert!(near(std("shared.weight"), 1.0));
    assert_eq!(
        param_values(&model, "decoder.final_layer_norm.weight"),
        vec![1.0; 128]
    );

    let qwen = Qwen2Config::new(200, 64, 96, 2, 4, 2);
    let model = Backbone::new(&ModelConfig::Qwen2(qwen), &device).unwrap();
    let values = param_values(&model, "model.layers.0.mlp.up_proj.weight");
    let rms = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
    assert!((rms - 0.02).abs() < 0.002, "{rms}");
    assert!(
        param_values(&model, "model.layers.0.self_attn.q_proj.bias")
            .iter()
            .all(|v| *v == 0.0)
    );
    let ids = vec![vec![3i64, 9, 27, 4]];
    let batch =
        gems_models::LmBatch::from_rows(&ids, &[vec![1; 4]], &[vec![-100, 9, 27, 4]], &device)
            .unwrap();
    let loss = model.loss(&batch).unwrap().into_scalar::<f32>();
    assert!(
        (loss - (200f32).ln()).abs() < 0.5,
        "a random model is near uniform: {loss}"
    );
}

/// Values of one parameter, by HF name.
fn param_values(model: &Backbone, name: &str) -> Vec<f32> {
    struct Find<'a> {
        name: &'a str,
        path: Vec<String>,
        found: Option<Vec<f32>>,
    }
    impl ModuleVisitor for Find<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.path.join(".") == self.name {
                self.found = Some(param.val().into_data().iter::<f32>().collect());
            }
        }
    }
    let mut find = Find {
        name,
        path: Vec::new(),
        found: None,
    };
    model.visit(&mut find);
    find.found.unwrap_or_else(|| panic!("no parameter {name}"))
}

#[test]
fn dropout_is_off_until_switched_on_and_acts_only_with_autodiff() {
    let name = "t5-v1_0";
    let autodiff = Device::flex().autodiff();
    // The fixture was saved with dropout_rate 0; use HF's default of 0.1.
    let directory = scratch("dropout");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), directory.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(directory.join("config.json")).unwrap();
    std::fs::write(
        directory.join("config.json"),
        config.replace(r#""dropout_rate": 0.0"#, r#""dropout_rate": 0.1"#),
    )
    .unwrap();
    let model = Backbone::load(&directory, &autodiff).unwrap();
    let batch = Reference::load(name).batch(&autodiff);
    let loss = |model: &Backbone| model.loss(&batch).unwrap().into_scalar::<f32>();
    let expected = Reference::load(name).0["loss"].as_f64().unwrap() as f32;
    assert!((loss(&model) - expected).abs() < 1e-5, "off by default");

    let training = model.clone().with_dropout(true);
    let (first, second) = (loss(&training), loss(&training));
    assert!(
        first != second && first != loss(&model),
        "dropout draws new masks: {first} {second}"
    );
    let grads = training.loss(&batch).unwrap().backward();
    let problems = gradient_problems(&gradients_by_path(&training, &grads));
    assert!(problems.is_empty(), "{problems:?}");

    assert_eq!(loss(&training.with_dropout(false)), loss(&model));
    let plain = Backbone::load(&directory, &device())
        .unwrap()
        .with_dropout(true);
    let plain_loss = plain
        .loss(&Reference::load(name).batch(&device()))
        .unwrap()
        .into_scalar::<f32>();
    assert!(
        (plain_loss - expected).abs() < 1e-5,
        "no dropout without autodiff"
    );
    std::fs::remove_dir_all(directory).unwrap();
}

/// Mean pooling of the model's own states: each row's mean over its real tokens only, so that
/// padding a row more does not change its embedding.
#[test]
fn mean_hidden_states_average_real_tokens_only() {
    let device = Device::flex();
    for name in ["t5-v1_1", "qwen2-tied"] {
        let model = Backbone::load(fixture(name), &device).unwrap();
        let ids = [5i64, 9, 17];
        let embed = |row: Vec<i64>, mask: Vec<i64>| {
            let width = row.len();
            let ids = Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(row, [1, width]),
                &device,
            );
            let mask = Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(mask, [1, width]),
                &device,
            );
            values(model.mean_hidden_states(ids, mask))
        };
        let plain = embed(ids.to_vec(), vec![1, 1, 1]);
        // Right padding for T5 (as its batches are), left padding for Qwen2.
        let padded = if name.starts_with("t5") {
            embed(vec![5, 9, 17, 0, 0], vec![1, 1, 1, 0, 0])
        } else {
            embed(vec![0, 0, 5, 9, 17], vec![0, 0, 1, 1, 1])
        };
        assert_eq!(plain.len(), model.config().hidden_size());
        let worst = plain
            .iter()
            .zip(&padded)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{name}: padding changed the embedding by {worst}"
        );
        // Rows of different lengths, padded by the model's own convention: each row as alone.
        let rows = values(
            model
                .embed_token_rows(&[vec![5, 9], vec![5, 9, 17]])
                .unwrap(),
        );
        let short = embed(vec![5, 9], vec![1, 1]);
        let width = plain.len();
        for (row, alone) in [(&rows[..width], &short), (&rows[width..], &plain)] {
            let worst = row
                .iter()
                .zip(alone)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{name}: a padded row differs from itself alone by {worst}"
            );
        }
        assert!(
            model.embed_token_rows(&[vec![5], vec![]]).is_err(),
            "{name}: an empty row is an error"
        );
    }
}

/// Every float parameter's id, by path.
fn parameter_ids(model: &Backbone) -> BTreeMap<String, burn::module::ParamId> {
    #[derive(Default)]
    struct Ids {
        path: Vec<String>,
        ids: BTreeMap<String, burn::module::ParamId>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.ids.insert(self.path.join("."), param.id);
        }
    }
    let mut ids = Ids::default();
    model.visit(&mut ids);
    ids.ids
}

/// `batch` with some input tokens and labels replaced by the tokens `first..first + 5`.
fn with_added_tokens(batch: &LmBatch, first: usize, device: &Device) -> LmBatch {
    let rows = |tensor: &Tensor<2, burn::tensor::Int>| -> Vec<Vec<i64>> {
        let [_, width] = tensor.dims();
        let flat: Vec<i64> = tensor.to_data().iter::<i64>().collect();
        flat.chunks(width).map(<[i64]>::to_vec).collect()
    };
    let mask = rows(&batch.attention_mask);
    let replace = |ids: Vec<Vec<i64>>, every: usize, keep: &dyn Fn(usize, usize, i64) -> bool| {
        let mut n = 0;
        ids.into_iter()
            .enumerate()
            .map(|(r, row)| {
                row.into_iter()
                    .enumerate()
                    .map(|(c, id)| {
                        if !keep(r, c, id) {
                            return id;
                        }
                        n += 1;
                        match n % every {
                            0 => (first + n % 5) as i64,
                            _ => id,
                        }
                    })
                    .collect()
            })
            .collect::<Vec<Vec<i64>>>()
    };
    let input_ids = replace(rows(&batch.input_ids), 3, &|r, c, _| mask[r][c] == 1);
    let labels = replace(rows(&batch.labels), 2, &|_, _, id| id != IGNORE_INDEX);
    LmBatch::from_rows(&input_ids, &mask, &labels, device).unwrap()
}

/// Freezing the pre-trained tokens' rows changes nothing the model computes and saves, and its
/// backward pass gives gradients of the added rows only, equal to those rows of the whole
/// matrices' gradients: for the tied and untied T5 and Qwen2, with the added tokens used both
/// as inputs and as labels.
#[test]
fn frozen_pretrained_tokens_compute_the_same_and_train_the_added_rows_only() {
    let device = Device::flex().autodiff();
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied", "qwen2-untied"] {
        let loaded = Backbone::load(fixture(name), &device).unwrap();
        let pretrained = loaded.vocab_size();
        let whole = loaded.resize_token_embeddings(pretrained + 5);
        let batch = with_added_tokens(&Reference::load(name).batch(&device), pretrained, &device);
        let split = whole.clone().freeze_pretrained_tokens(pretrained).unwrap();
        assert_eq!(split.vocab_size(), pretrained + 5, "{name}");
        assert_eq!(split.first_added_token(), Some(pretrained), "{name}");

        let matrices: Vec<String> = whole
            .token_matrices()
            .iter()
            .map(|(path, _)| path.to_string())
            .collect();
        let frozen: Vec<String> = matrices.iter().map(|m| format!("{m}.weight")).collect();
        assert_eq!(split.frozen_parameters(), frozen, "{name}");
        assert!(whole.frozen_parameters().is_empty(), "{name}");

        let (whole_loss, split_loss) = (whole.loss(&batch).unwrap(), split.loss(&batch).unwrap());
        let (a, b) = (
            whole_loss.clone().into_scalar::<f32>(),
            split_loss.clone().into_scalar::<f32>(),
        );
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{name}: loss {a} vs {b}");
        let logits_error = max_abs_diff(
            &values(whole.logits(&batch).unwrap()),
            &values(split.logits(&batch).unwrap()),
            |_| true,
        );
        assert!(
            logits_error < 1e-5,
            "{name}: logits differ by {logits_error}"
        );

        let whole_grads = burn::optim::GradientsParams::from_grads(whole_loss.backward(), &whole);
        let mut split_grads =
            burn::optim::GradientsParams::from_grads(split_loss.backward(), &split);
        let (whole_ids, split_ids) = (parameter_ids(&whole), parameter_ids(&split));
        for matrix in &matrices {
            let weight = format!("{matrix}.weight");
            assert!(
                split_grads.get::<2>(split_ids[&weight]).is_none(),
                "{name}: the frozen rows of {matrix} got a gradient"
            );
            let expected = whole_grads
                .get::<2>(whole_ids[&weight])
                .unwrap()
                .narrow(0, pretrained, 5);
            let added = split_grads
                .remove::<2>(split_ids[&format!("{matrix}.added")])
                .unwrap_or_else(|| panic!("{name}: no gradient for the added rows of {matrix}"));
            assert_eq!(added.dims(), expected.dims(), "{name}: {matrix}");
            let (expected, added) = (values(expected), values(added));
            assert!(
                expected.iter().any(|v| *v != 0.0),
                "{name}: the batch must use the added tokens"
            );
            let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            let error = max_abs_diff(&added, &expected, |_| true);
            assert!(
                error <= 1e-5 * scale,
                "{name}: {matrix}: {error} of {scale}"
            );
        }
        // The other parameters' gradients are untouched by the split.
        let path = if whole.kind() == ModelKind::T5 {
            "decoder.block.0.layer.0.SelfAttention.q.weight"
        } else {
            "model.layers.0.self_attn.q_proj.weight"
        };
        let error = max_abs_diff(
            &values(whole_grads.get::<2>(whole_ids[path]).unwrap()),
            &values(split_grads.get::<2>(split_ids[path]).unwrap()),
            |_| true,
        );
        assert!(error < 1e-5, "{name}: {path} gradient differs by {error}");

        // Saved, the split model is the whole one: same names, shapes and values.
        let (whole_dir, split_dir) = (
            scratch(&format!("{name}-whole")),
            scratch(&format!("{name}-split")),
        );
        whole.save(&whole_dir).unwrap();
        split.save(&split_dir).unwrap();
        let read =
            |dir: &std::path::Path| std::fs::read(dir.join(gems_models::WEIGHTS_FILE)).unwrap();
        assert!(
            read(&whole_dir) == read(&split_dir),
            "{name}: the saved checkpoints differ"
        );

        // Refused: freezing twice, or at a token outside 1..=vocab.
        assert!(split.clone().freeze_pretrained_tokens(pretrained).is_err());
        assert!(whole.clone().freeze_pretrained_tokens(0).is_err());
        assert!(
            whole
                .clone()
                .freeze_pretrained_tokens(pretrained + 6)
                .is_err()
        );
    }
}

/// Every parameter's gradient by path, `None` where it has none.
fn gradients_by_path(model: &Backbone, grads: &Gradients) -> BTreeMap<String, Option<Vec<f32>>> {
    struct Collect<'a> {
        grads: &'a Gradients,
        path: Vec<String>,
        found: BTreeMap<String, Option<Vec<f32>>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let grad = param.val().grad(self.grads).map(values);
            self.found.insert(self.path.join("."), grad);
        }
    }
    let mut collect = Collect {
        grads,
        path: Vec::new(),
        found: BTreeMap::new(),
    };
    model.visit(&mut collect);
    collect.found
}

#[test]
fn factored_linear_layers_give_their_gradient_as_inputs_and_output_gradients() {
    let device = Device::flex().autodiff();
    for name in ["t5-v1_0", "t5-v1_1", "qwen2-tied"] {
        let model = Backbone::load(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let batch = reference.batch(&device);
        let plain_loss = model.loss(&batch).unwrap();
        let plain = gradients_by_path(&model, &plain_loss.backward());

        // Every linear layer is named; the encoder-decoder's embedding too, which is no
        // linear layer and must be left alone.
        let shapes: BTreeMap<String, Vec<usize>> = parameter_paths(&model).into_iter().collect();
        let named: Vec<String> = projected(&model)
            .into_iter()
            .map(|path| format!("{path}.weight"))
            .chain(["shared.weight".to_string()])
            .collect();
        let mut factoring = GradientFactoring::new(named.clone());
        let loss = model.loss_factored(&batch, &mut factoring).unwrap();
        assert_eq!(
            loss.clone().into_scalar::<f32>(),
            plain_loss.into_scalar::<f32>()
        );
        let mut grads = loss.backward();
        let factors = factoring.take_factors(&mut grads);
        let factored = gradients_by_path(&model, &grads);

        // A layer is factored exactly where its N rows make factors smaller than the gradient.
        let (prompt, target) = (reference.ints("input_ids"), reference.ints("labels"));
        let prompt_rows = prompt.len() * prompt[0].len();
        let target_rows = target.len() * target[0].len();
        let expected: BTreeSet<String> = named
            .iter()
            .filter(|path| !path.starts_with("shared"))
            .filter(|path| {
                let [d_in, d_out] = shapes[*path][..] else {
                    unreachable!()
                };
                let cross_memory =
                    path.contains("EncDecAttention.k.") || path.contains("EncDecAttention.v.");
                let rows = match model.kind() {
                    ModelKind::T5 if path.starts_with("decoder") && !cross_memory => target_rows,
                    _ => prompt_rows,
                };
                rows * (d_in + d_out) < d_in * d_out
            })
            .cloned()
            .collect();
        let got: BTreeSet<String> = factors.iter().map(|f| f.weight_path.clone()).collect();
        assert_eq!(got, expected, "{name}");
        assert!(!got.is_empty(), "{name}");

        // Each factored weight has no gradient of its own; its factors multiply out (in float64,
        // on the host) to the plain pass's gradient.
        for f in &factors {
            let [rows, d_in] = f.inputs.dims();
            let d_out = f.output_gradients.dims()[1];
            assert_eq!(f.output_gradients.dims()[0], rows);
            assert!(
                factored[&f.weight_path].is_none(),
                "{name}: {}",
                f.weight_path
            );
            let (x, dy) = (values(f.inputs.clone()), values(f.output_gradients.clone()));
            let expanded: Vec<f32> = (0..d_in * d_out)
                .map(|ij| {
                    let (i, j) = (ij / d_out, ij % d_out);
                    (0..rows)
                        .map(|r| x[r * d_in + i] as f64 * dy[r * d_out + j] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            let want = plain[&f.weight_path].as_ref().unwrap();
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let error = max_abs_diff(&expanded, want, |_| true);
            assert!(
                error <= 1e-5 * scale.max(1.0),
                "{name}: {} off by {error}",
                f.weight_path
            );
        }
        // Every other parameter (biases of factored layers included) keeps its plain gradient.
        for (path, want) in &plain {
            if got.contains(path) {
                continue;
            }
            let have = factored[path]
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: {path}"));
            let error = max_abs_diff(have, want.as_ref().unwrap(), |_| true);
            assert!(error <= 1e-6, "{name}: {path} off by {error}");
        }
    }
}
