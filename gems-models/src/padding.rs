//! Host rows of token ids into Int tensors: rectangular matrices, and prompts padded by a
//! model's convention (T5 on the right, Qwen2 on the left).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::ModelError;

/// Which side padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

/// `[rows, longest]` ids and mask for `prompts`, padded with `pad` on `side`.
pub(crate) fn pad(
    prompts: &[Vec<u32>],
    pad: u32,
    side: Side,
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Int>), ModelError> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::InvalidInput(format!("prompt {i} is empty")));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len());
    let mut mask = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let padding = longest - prompt.len();
        let tokens = prompt.iter().map(|&t| t as i64);
        let (row, ones): (Vec<i64>, Vec<i64>) = match side {
            Side::Left => (
                std::iter::repeat_n(pad as i64, padding)
                    .chain(tokens)
                    .collect(),
                std::iter::repeat_n(0, padding)
                    .chain(std::iter::repeat_n(1, prompt.len()))
                    .collect(),
            ),
            Side::Right => (
                tokens
                    .chain(std::iter::repeat_n(pad as i64, padding))
                    .collect(),
                std::iter::repeat_n(1, prompt.len())
                    .chain(std::iter::repeat_n(0, padding))
                    .collect(),
            ),
        };
        ids.push(row);
        mask.push(ones);
    }
    Ok((
        int_matrix(&ids, "prompts", device)?,
        int_matrix(&mask, "prompt mask", device)?,
    ))
}

/// A `[rows, columns]` Int tensor from rectangular host rows.
pub(crate) fn int_matrix(
    rows: &[Vec<i64>],
    what: &str,
    device: &Device,
) -> Result<Tensor<2, Int>, ModelError> {
    let columns = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || columns == 0 {
        return Err(ModelError::InvalidInput(format!("{what} is empty")));
    }
    if let Some(i) = rows.iter().position(|row| row.len() != columns) {
        return Err(ModelError::InvalidInput(format!(
            "{what}: row {i} has {} entries, row 0 has {columns}",
            rows[i].len()
        )));
    }
    let values: Vec<i64> = rows.concat();
    Ok(Tensor::from_data(
        TensorData::new(values, [rows.len(), columns]),
        device,
    ))
}
