//! Unconstrained greedy decoding, for checks and decoding-speed benchmarks.

use crate::error::ModelError;
use crate::generation::StepDecoder;

/// Decodes `steps` tokens per prompt, each the argmax of the model's logits.
pub fn greedy<D: StepDecoder>(
    decoder: &D,
    prompts: &[Vec<u32>],
    steps: usize,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let (mut state, logits) = decoder.start(prompts)?;
    let mut logits = Some(logits);
    let mut generated = vec![Vec::with_capacity(steps); prompts.len()];
    for step in 0..steps {
        let current = logits.take().expect("logits of the previous step");
        let best: Vec<u32> = current
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .map(|t| t as u32)
            .collect();
        for (row, &token) in best.iter().enumerate() {
            generated[row].push(token);
        }
        if step + 1 < steps {
            logits = Some(decoder.step(&mut state, &best));
        }
    }
    Ok(generated)
}
