use super::lora::Lora;
use crate::kernels::{
    for_row_blocks, matmul, matmul_bf16_then, matmul_few_rows, matmul_int8_then, Bf16Matrix,
    MatMut, MatRef, PackedPanels, QuantizedMatrix,
};
use crate::weights::Weights;
use crate::{Quantization, Result};
use std::ops::Range;

/// Up to this many rows (tokens in a forward pass) a layer with panel-packed weights uses
/// [`matmul_few_rows`] instead of `gemm`: it measured faster at 13 and 26 rows (a 13-token
/// query alone: 7.4 → 5.6 ms with f32 panels, about 17 % less again with f16 panels; two at
/// once: 4.6 → 3.6 ms per query) and level at 52.
pub const FEW_ROWS: usize = 48;

/// A dense layer's f32 weights, borrowed ([`Linear::dense_parts`]).
#[derive(Debug, Clone, Copy)]
pub struct DenseParts<'a> {
    /// `Wᵀ`: `[inputs, outputs]`, row-major.
    pub weight_t: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub inputs: usize,
    pub outputs: usize,
}

/// `y = x Wᵀ + b`.
///
/// `W` is stored transposed, `[in, out]`, once at load. With that layout `gemm` reads the weights
/// in place instead of repacking the whole matrix on every call, which dominated small batches:
/// a 13-token query, one at a time, went from 17 ms to 5.7 ms (77 % of its time was `pack_lhs`;
/// perf record, 100 queries one at a time).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[in_features, out_features]`, row-major.
    weight_t: Vec<f32>,
    /// The same weights in panels for the few-row kernel, when asked for.
    panels: Option<PackedPanels>,
    bias: Option<Vec<f32>>,
    /// Per-task low-rank updates, for models with task adapters.
    lora: Option<Box<Lora>>,
    /// The weights in a narrower format, when the model was loaded in one; `weight_t` is then
    /// empty.
    narrow: Option<NarrowWeights>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Loads `weight` and, when `with_bias`, `bias`.
    pub fn load(
        weights: &Weights<'_>,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
    ) -> Result<Self> {
        Self::load_tensors(
            weights,
            "weight",
            with_bias.then_some("bias"),
            in_features,
            out_features,
        )
    }

    /// Loads the weight and bias under names of the checkpoint's own choosing.
    pub fn load_tensors(
        weights: &Weights<'_>,
        weight: &str,
        bias: Option<&str>,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let weight = weights.get(weight, &[out_features, in_features])?;
        let bias = bias
            .map(|name| weights.get(name, &[out_features]))
            .transpose()?;
        Ok(Linear::new(weight, bias, in_features, out_features).laid_out_for(weights))
    }

    /// Adds the panel-packed copy of the weights that inputs of up to [`FEW_ROWS`] rows use.
    pub fn with_few_row_panels(mut self) -> Self {
        self.panels = Some(PackedPanels::pack(
            &self.weight_t,
            self.in_features,
            self.out_features,
        ));
        self
    }

    /// From a weight in the checkpoint's `[out, in]` layout.
    pub fn new(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        in_features: usize,
        out_features: usize,
    ) -> Self {
        assert_eq!(weight.len(), in_features * out_features);
        let weight_t = transpose(&weight, out_features, in_features);
        Linear {
            weight_t,
            panels: None,
            bias,
            lora: None,
            narrow: None,
            in_features,
            out_features,
        }
    }

    /// Loads layers that read the same input (Q, K and V; gate and up) as one wider product:
    /// the `weight` of each `(module, out_features)` part, stacked in order.
    pub fn load_stacked(
        weights: &Weights<'_>,
        parts: &[(&str, usize)],
        in_features: usize,
        with_bias: bool,
    ) -> Result<Self> {
        let mut weight = Vec::new();
        let mut bias = with_bias.then(Vec::new);
        for &(module, out_features) in parts {
            let part = weights.pp(module);
            weight.extend(part.get("weight", &[out_features, in_features])?);
            if let Some(bias) = bias.as_mut() {
                bias.extend(part.get("bias", &[out_features])?);
            }
        }
        let out_features = parts.iter().map(|&(_, outputs)| outputs).sum();
        Ok(Linear::new(weight, bias, in_features, out_features).laid_out_for(weights))
    }

    /// The weight layout the load options ask for: int8, bf16, or f32 with few-row panels, or
    /// plain f32.
    fn laid_out_for(self, weights: &Weights<'_>) -> Self {
        let options = weights.options();
        match options.quantization {
            Quantization::None if options.few_row_kernels => self.with_few_row_panels(),
            Quantization::None => self,
            narrow => self.narrowed(narrow),
        }
    }

    /// Keeps the weights in `format` only (see [`matmul_int8`], [`matmul_bf16`]); f32 keeps
    /// them as they are.
    pub fn narrowed(mut self, format: Quantization) -> Self {
        let (k, n) = (self.in_features, self.out_features);
        let narrow = match format {
            Quantization::None => return self,
            Quantization::Int8 => {
                NarrowWeights::Int8(QuantizedMatrix::quantize(&self.weight_t, k, n))
            }
            Quantization::Bf16 => NarrowWeights::Bf16(Bf16Matrix::pack(&self.weight_t, k, n)),
        };
        self.narrow = Some(narrow);
        self.weight_t = Vec::new();
        self.panels = None;
        self
    }

    /// The number format the weights are kept in.
    pub fn format(&self) -> Quantization {
        match self.narrow {
            None => Quantization::None,
            Some(NarrowWeights::Int8(_)) => Quantization::Int8,
            Some(NarrowWeights::Bf16(_)) => Quantization::Bf16,
        }
    }

    /// The f32 weights a device backend uploads (task adapters come apart, [`Linear::lora`]);
    /// `None` where the model was loaded in a narrower format.
    pub fn dense_parts(&self) -> Option<DenseParts<'_>> {
        if self.narrow.is_some() {
            return None;
        }
        Some(DenseParts {
            weight_t: &self.weight_t,
            bias: self.bias.as_deref(),
            inputs: self.in_features,
            outputs: self.out_features,
        })
    }

    /// The layer's task adapters, if it has them.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_deref()
    }

    /// Adds task adapters: rows whose task is given get its low-rank update.
    pub fn with_lora(mut self, lora: Lora) -> Self {
        self.lora = Some(Box::new(lora));
        self
    }

    /// Writes `rows × out_features` values into `output`, resizing it.
    pub fn forward(&self, input: &[f32], rows: usize, output: &mut Vec<f32>) {
        self.forward_then(input, rows, output, |_, _| {});
    }

    /// Like [`Linear::forward`], then runs `epilogue` on blocks of finished rows in parallel,
    /// with the range of rows each block holds.
    ///
    /// The bias add and whatever follows a layer (activation, residual + layer norm) share one
    /// pass over the output while it is hot in cache, on every core. Run serially after the
    /// product they left one core idle: fusing and parallelising them took all-MiniLM-L6-v2
    /// from 5,900 to 6,550 tokens/s (CPU use 83 % → 90 %; `quiver embed --stats`, 300 chunks).
    pub fn forward_then<F>(&self, input: &[f32], rows: usize, output: &mut Vec<f32>, epilogue: F)
    where
        F: Fn(&mut [f32], Range<usize>) + Sync,
    {
        self.forward_adapted_then(input, rows, output, None, epilogue);
    }

    /// Like [`Linear::forward`], with each row's task adapter (`row_adapters[r]`) applied.
    pub fn forward_adapted(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut Vec<f32>,
        row_adapters: Option<&[Option<u16>]>,
    ) {
        self.forward_adapted_then(input, rows, output, row_adapters, |_, _| {});
    }

    /// [`Linear::forward_then`] with each row's task adapter applied before the epilogue.
    pub fn forward_adapted_then<F>(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut Vec<f32>,
        row_adapters: Option<&[Option<u16>]>,
        epilogue: F,
    ) where
        F: Fn(&mut [f32], Range<usize>) + Sync,
    {
        output.resize(rows * self.out_features, 0.0);
        let finish = |block: &mut [f32], range: Range<usize>| {
            if let Some(bias) = &self.bias {
                for row in block.chunks_exact_mut(self.out_features) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            if let (Some(lora), Some(adapters)) = (&self.lora, row_adapters) {
                let inputs = &input[range.start * self.in_features..range.end * self.in_features];
                lora.add(block, inputs, &adapters[range.clone()]);
            }
            epilogue(block, range);
        };
        match (&self.narrow, &self.panels) {
            (Some(NarrowWeights::Int8(int8)), _) => {
                let input = &input[..rows * self.in_features];
                return matmul_int8_then(output, input, rows, int8, finish);
            }
            (Some(NarrowWeights::Bf16(bf16)), _) => {
                let input = &input[..rows * self.in_features];
                return matmul_bf16_then(output, input, rows, bf16, finish);
            }
            (None, Some(panels)) if rows <= FEW_ROWS => matmul_few_rows(
                output,
                &input[..rows * self.in_features],
                rows,
                panels,
                super::pool_threads(),
            ),
            _ => matmul(
                MatMut::row_major(output, rows, self.out_features),
                MatRef::row_major(input, rows, self.in_features),
                MatRef::row_major(&self.weight_t, self.in_features, self.out_features),
                1.0,
                false,
                super::pool_threads(),
            ),
        }
        for_row_blocks(output, self.out_features, finish);
    }
}

/// A dense layer's weights in a format narrower than f32.
#[derive(Debug, Clone)]
enum NarrowWeights {
    Int8(QuantizedMatrix),
    Bf16(Bf16Matrix),
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    // In square tiles, so reads and writes both stay within a few cache lines: a model's load
    // spent a sixth of its time here striding a whole column per value.
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let row = &values[r * cols..(r + 1) * cols];
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = row[c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transposing_by_tiles_moves_every_value_of_ragged_shapes() {
        for (rows, cols) in [(1, 1), (37, 70), (64, 32), (5, 100)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let out = transpose(&values, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(out[c * rows + r], values[r * cols + c], "{rows}x{cols}");
                }
            }
        }
    }
}
