//! The arithmetic of Quiver's CUDA kernels (`src/cuda/kernels.cu`) on the CPU, step for step:
//! the same tiles of keys and the same online softmax, the same order of sums (each thread's
//! strided partial sum, then a warp's butterfly), the same rounding to bf16. The tests here
//! hold each against the CPU layers, which hold parity with `transformers`, so a kernel that
//! matches its reference on a card is right. Built for tests only; no GPU needed.
//!
//! Pooling's reference is [`crate::Pooling::pool`] itself: the `pool` kernel sums each
//! column's tokens in the same order.

use crate::cuda_plan::{key_tile, row_tasks, tasks_used, QUERIES_PER_BLOCK};
use crate::kernels::Activation;
use crate::layers::{AttentionShape, DenseParts, Linear, NormParts, Visibility};
use crate::models::post_norm::{FeedForward, Positions};
use crate::models::stack::{Layers, Stack, TokenTypes};
use crate::PackedBatch;

/// Threads of a warp.
const WARP: usize = 32;

/// `warp_sum`: lane `i` adds lane `i ^ offset`'s value for offsets 16, 8, 4, 2, 1; every lane
/// ends with the same sum, as addition commutes.
fn warp_sum(lanes: &[f32; WARP]) -> f32 {
    butterfly(lanes, |a, b| a + b)
}

/// `warp_max`.
fn warp_max(lanes: &[f32; WARP]) -> f32 {
    butterfly(lanes, f32::max)
}

fn butterfly(lanes: &[f32; WARP], combine: impl Fn(f32, f32) -> f32) -> f32 {
    let mut values = *lanes;
    let mut offset = WARP / 2;
    while offset > 0 {
        let before = values;
        for (lane, value) in values.iter_mut().enumerate() {
            *value = combine(before[lane], before[lane ^ offset]);
        }
        offset /= 2;
    }
    values[0]
}

/// `block_sum` over `threads` threads (a multiple of 32), thread `t` holding `partial[t]`.
fn block_sum(partial: &[f32]) -> f32 {
    let mut warps = [0.0f32; WARP];
    for (warp, lanes) in partial.chunks_exact(WARP).enumerate() {
        warps[warp] = warp_sum(lanes.try_into().expect("whole warps"));
    }
    warp_sum(&warps)
}

/// `narrow<bf16>`: f32 to bf16 bits, to nearest with ties to even; NaN stays NaN.
pub fn narrow_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 0x40) as u16
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// `norm<T, RMS>` of one row of `x + residual` over `threads` threads: the normalised row.
pub fn norm_row(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    rms: bool,
    threads: usize,
) -> Vec<f32> {
    let cols = x.len();
    let value = |c: usize| x[c] + residual.map_or(0.0, |r| r[c]);
    let strided = |term: &dyn Fn(usize) -> f32| -> Vec<f32> {
        (0..threads)
            .map(|t| (t..cols).step_by(threads).map(term).sum())
            .collect()
    };
    let mean = if rms {
        0.0
    } else {
        block_sum(&strided(&value)) / cols as f32
    };
    let squares = strided(&|c| {
        let d = value(c) - mean;
        d * d
    });
    let inverse = 1.0 / (block_sum(&squares) / cols as f32 + eps).sqrt();
    (0..cols)
        .map(|c| (value(c) - mean) * inverse * gamma[c] + beta.map_or(0.0, |b| b[c]))
        .collect()
}

/// `activate`: the formulas of the kernel, with its constants, in f64 (the kernel's erff,
/// tanhf and expf are correct to about an f32 ulp).
pub fn activate(x: f32, activation: Option<Activation>) -> f32 {
    let x64 = f64::from(x);
    let y = match activation {
        None => x64,
        Some(Activation::GeluErf) => 0.5 * x64 * (1.0 + erf(x64 * std::f64::consts::FRAC_1_SQRT_2)),
        Some(Activation::GeluTanh) => {
            let inner = f64::from(0.797_884_6_f32) * (x64 + f64::from(0.044_715_f32) * x64.powi(3));
            0.5 * x64 * (1.0 + inner.tanh())
        }
        Some(Activation::Relu) => x64.max(0.0),
        Some(Activation::Silu) => x64 / (1.0 + (-x64).exp()),
    };
    y as f32
}

/// erf by its Taylor series below 3, by its asymptotic complement above: slow, exact to f64
/// rounding for the range activations see (the CPU's fast erf is judged against it too).
pub(crate) fn erf(x: f64) -> f64 {
    if x.abs() > 3.0 {
        // erfc(x) ~ e^{-x²} / (x √π) · (1 − 1/(2x²) + 3/(4x⁴)), ample past 3 in f32 terms.
        let x2 = x * x;
        let tail = (-x2).exp() / (x.abs() * std::f64::consts::PI.sqrt())
            * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2));
        return x.signum() * (1.0 - tail);
    }
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// `rotary`, in place on a fused `[tokens, row]` Q, K, V buffer.
pub fn rotary(
    qkv: &mut [f32],
    positions: &[u32],
    inverse_frequencies: &[f32],
    shape: AttentionShape,
) {
    let row = shape.qkv_width();
    let half = shape.head_dim / 2;
    for (token, &position) in qkv.chunks_exact_mut(row).zip(positions) {
        for head in 0..shape.num_heads + shape.num_kv_heads {
            let h = &mut token[head * shape.head_dim..(head + 1) * shape.head_dim];
            for (pair, &frequency) in inverse_frequencies.iter().enumerate() {
                let (sine, cosine) = (position as f32 * frequency).sin_cos();
                let (a, b) = (h[pair], h[pair + half]);
                h[pair] = a * cosine - b * sine;
                h[pair + half] = b * cosine + a * sine;
            }
        }
    }
}

/// `visible_keys`.
fn visible_keys(visibility: Visibility, query: usize, len: usize) -> std::ops::Range<usize> {
    match visibility {
        Visibility::All => 0..len,
        Visibility::Earlier => 0..query + 1,
        Visibility::Within(window) => query.saturating_sub(window)..(query + window + 1).min(len),
    }
}

/// A relative-position table as the kernel reads it: `[heads][2 · span − 1]`, offset `i − j`
/// at index `i − j + span − 1`.
pub struct BiasTable<'a> {
    pub table: &'a [f32],
    pub span: usize,
}

/// `attention`: `[tokens, heads · head_dim]` from a fused Q, K, V buffer of the sequences
/// `seq_starts` marks, block by block and tile by tile as the kernel runs.
pub fn attention(
    qkv: &[f32],
    seq_starts: &[usize],
    shape: AttentionShape,
    visibility: Visibility,
    bias: Option<&BiasTable<'_>>,
) -> Vec<f32> {
    let d = shape.head_dim;
    let (heads, kv_heads) = (shape.num_heads, shape.num_kv_heads);
    let row = shape.qkv_width();
    let tile_keys = key_tile(d);
    let scale = 1.0 / (d as f32).sqrt();
    let tokens = *seq_starts.last().unwrap_or(&0);
    let mut out = vec![0.0f32; tokens * heads * d];
    for window in seq_starts.windows(2) {
        let (start, len) = (window[0], window[1] - window[0]);
        for head in 0..heads {
            let kv_head = head / (heads / kv_heads);
            let query_at = |t: usize| &qkv[(start + t) * row + head * d..][..d];
            let key_at = |t: usize| &qkv[(start + t) * row + (heads + kv_head) * d..][..d];
            let value_at =
                |t: usize| &qkv[(start + t) * row + (heads + kv_heads + kv_head) * d..][..d];
            let head_bias = bias.map(|b| &b.table[head * (2 * b.span - 1)..][..2 * b.span - 1]);
            for first_query in (0..len).step_by(QUERIES_PER_BLOCK) {
                let last_query = (first_query + QUERIES_PER_BLOCK).min(len) - 1;
                let block_keys = visible_keys(visibility, first_query, len).start
                    ..visible_keys(visibility, last_query, len).end;
                for query in first_query..=last_query {
                    let mine = visible_keys(visibility, query, len);
                    let q = query_at(query);
                    let mut running_max = f32::NEG_INFINITY;
                    let mut running_sum = 0.0f32;
                    let mut output = vec![0.0f32; d];
                    for tile in block_keys.clone().step_by(tile_keys) {
                        let in_tile = tile_keys.min(block_keys.end - tile);
                        let mut scores = [f32::NEG_INFINITY; WARP];
                        for (lane, score) in scores.iter_mut().enumerate().take(in_tile) {
                            let key = tile + lane;
                            if mine.contains(&key) {
                                let k = key_at(key);
                                let dot = (0..d).fold(0.0f32, |dot, c| q[c].mul_add(k[c], dot));
                                *score = dot * scale;
                                if let (Some(table), Some(b)) = (head_bias, bias) {
                                    *score += table[query + b.span - 1 - key];
                                }
                            }
                        }
                        let tile_max = warp_max(&scores);
                        if tile_max == f32::NEG_INFINITY {
                            continue;
                        }
                        let new_max = running_max.max(tile_max);
                        let rescale = (running_max - new_max).exp();
                        let weights = scores.map(|score| {
                            if score == f32::NEG_INFINITY {
                                0.0
                            } else {
                                (score - new_max).exp()
                            }
                        });
                        running_sum = running_sum * rescale + warp_sum(&weights);
                        output.iter_mut().for_each(|o| *o *= rescale);
                        for (j, &weight) in weights.iter().enumerate().take(in_tile) {
                            let v = value_at(tile + j);
                            for (o, &value) in output.iter_mut().zip(v) {
                                *o = weight.mul_add(value, *o);
                            }
                        }
                        running_max = new_max;
                    }
                    let destination = &mut out[(start + query) * heads * d + head * d..][..d];
                    for (o, value) in destination.iter_mut().zip(output) {
                        *o = value / running_sum;
                    }
                }
            }
        }
    }
    out
}

/// A matrix product as cuBLAS runs it for a [`DenseParts`]: `x Wᵀ + b`, `[rows, outputs]`.
pub fn dense(x: &[f32], parts: DenseParts<'_>) -> Vec<f32> {
    let (inputs, outputs) = (parts.inputs, parts.outputs);
    let mut y = Vec::with_capacity(x.len() / inputs * outputs);
    for row in x.chunks_exact(inputs) {
        for o in 0..outputs {
            let dot = row.iter().enumerate().fold(0.0f32, |sum, (i, v)| {
                v.mul_add(parts.weight_t[i * outputs + o], sum)
            });
            y.push(dot + parts.bias.map_or(0.0, |b| b[o]));
        }
    }
    y
}

/// Norms every `gamma.len()`-wide row of `x` (plus `residual`) as `norm` does on 256 threads.
fn norm_rows(x: &[f32], residual: Option<&[f32]>, parts: NormParts<'_>) -> Vec<f32> {
    let cols = parts.gamma.len();
    x.chunks_exact(cols)
        .enumerate()
        .flat_map(|(r, row)| {
            let res = residual.map(|res| &res[r * cols..(r + 1) * cols]);
            norm_row(row, res, parts.gamma, parts.beta, parts.eps, parts.rms, 256)
        })
        .collect()
}

/// `head_rms_norm`: each query head by `q`, each key head by `k`, in place.
fn head_norms(qkv: &mut [f32], shape: AttentionShape, q: NormParts<'_>, k: NormParts<'_>) {
    let d = shape.head_dim;
    for token in qkv.chunks_exact_mut(shape.qkv_width()) {
        for head in 0..shape.num_heads + shape.num_kv_heads {
            let parts = if head < shape.num_heads { q } else { k };
            let values = &mut token[head * d..(head + 1) * d];
            let lanes: [f32; WARP] = std::array::from_fn(|lane| {
                (lane..d).step_by(WARP).map(|c| values[c] * values[c]).sum()
            });
            let inverse = 1.0 / (warp_sum(&lanes) / d as f32 + parts.eps).sqrt();
            for (v, g) in values.iter_mut().zip(parts.gamma) {
                *v = *v * inverse * g;
            }
        }
    }
}

/// Each token's position within its sequence, from `first`: what the host sends the kernels.
fn positions(batch: &PackedBatch, first: usize) -> Vec<u32> {
    batch
        .ranges()
        .flat_map(|range| (first..first + range.len()).map(|p| p as u32))
        .collect()
}

/// The hidden states a device backend computes for `batch`, step by step as it runs a
/// [`Stack`], each step with its kernel's arithmetic: what `EncoderModel::forward` gives, to
/// f32 rounding.
pub fn run_stack(stack: &Stack<'_>, batch: &PackedBatch, hidden_size: usize) -> Vec<f32> {
    let h = hidden_size;
    let embeddings = &stack.embeddings;
    let row_tasks = row_tasks(batch);
    let mut hidden = embeddings.word.gather(&batch.token_ids, h);
    let position_rows = embeddings
        .positions
        .as_ref()
        .map(|p| (p.table, positions(batch, p.first)));
    for (t, row) in hidden.chunks_exact_mut(h).enumerate() {
        row.iter_mut().for_each(|v| *v *= embeddings.scale);
        if let Some((table, at)) = &position_rows {
            let p = at[t] as usize;
            row.iter_mut()
                .zip(&table[p * h..])
                .for_each(|(v, x)| *v += x);
        }
        let type_row = match embeddings.token_types {
            None => None,
            Some(TokenTypes::Constant(row)) => Some(row),
            Some(TokenTypes::PerToken(table)) => {
                let ty = batch.token_types.get(t).copied().unwrap_or(0) as usize;
                Some(&table[ty * h..(ty + 1) * h])
            }
        };
        if let Some(type_row) = type_row {
            row.iter_mut().zip(type_row).for_each(|(v, x)| *v += x);
        }
        if let (Some((word, token_type)), Ok(task)) =
            (embeddings.adapters, u16::try_from(row_tasks[t]))
        {
            word.add(row, batch.token_ids[t] as usize, task);
            token_type.add(row, 0, task);
        }
    }
    if let Some(norm) = embeddings.norm {
        hidden = norm_rows(&hidden, None, norm.parts());
    }
    let seq_starts: Vec<usize> = std::iter::once(0)
        .chain(batch.ranges().map(|range| range.end))
        .collect();
    let at_zero = positions(batch, 0);
    match &stack.layers {
        Layers::PostNorm {
            layers,
            shape,
            positions,
        } => {
            let bias = match positions {
                Positions::RelativeBias(bias) => {
                    let (table, span) = bias.table();
                    Some(BiasTable { table, span })
                }
                _ => None,
            };
            for layer in layers.iter() {
                let mut qkv = adapted(&hidden, &layer.qkv, &row_tasks);
                if let Positions::Rotary(rotation) = positions {
                    rotary(
                        &mut qkv,
                        &at_zero,
                        rotation.inverse_frequencies(),
                        shape.attention,
                    );
                }
                let context = attention(
                    &qkv,
                    &seq_starts,
                    shape.attention,
                    Visibility::All,
                    bias.as_ref(),
                );
                let projected = adapted(&context, &layer.attention_out, &row_tasks);
                hidden = norm_rows(&projected, Some(&hidden), layer.attention_norm.parts());
                let output = match &layer.feed_forward {
                    FeedForward::Dense {
                        intermediate,
                        output,
                        activation,
                    } => {
                        let inner = adapted(&hidden, intermediate, &row_tasks);
                        let activated: Vec<f32> = inner
                            .iter()
                            .map(|&x| activate(x, Some(*activation)))
                            .collect();
                        adapted(&activated, output, &row_tasks)
                    }
                    FeedForward::SwiGlu {
                        gate_up,
                        down,
                        width,
                    } => {
                        let both = adapted(&hidden, gate_up, &row_tasks);
                        dense(&gated(&both, *width, Activation::Silu), parts(down))
                    }
                };
                hidden = norm_rows(&output, Some(&hidden), layer.output_norm.parts());
            }
        }
        Layers::PreNorm(stack) => {
            let shape = stack.shape;
            for layer in &stack.layers {
                let (dense_layers, norms) = (&layer.projections, &layer.norms);
                let normed = match &norms.attention {
                    Some(norm) => norm_rows(&hidden, None, norm.parts()),
                    None => hidden.clone(),
                };
                let mut qkv = dense(&normed, parts(&dense_layers.qkv));
                if let Some((q, k)) = &norms.heads {
                    head_norms(&mut qkv, shape, q.parts(), k.parts());
                }
                if let Some(scale) = stack.query_scale {
                    for token in qkv.chunks_exact_mut(shape.qkv_width()) {
                        token[..shape.hidden()].iter_mut().for_each(|x| *x *= scale);
                    }
                }
                let kind = &stack.attention[layer.attention_kind];
                rotary(&mut qkv, &at_zero, kind.rotary.inverse_frequencies(), shape);
                let context = attention(&qkv, &seq_starts, shape, kind.visibility, None);
                let mut projected = dense(&context, parts(&dense_layers.attention_out));
                if let Some(norm) = &norms.attention_out {
                    projected = norm_rows(&projected, None, norm.parts());
                }
                hidden.iter_mut().zip(&projected).for_each(|(x, p)| *x += p);
                let normed = norm_rows(&hidden, None, norms.feed_forward.parts());
                let both = dense(&normed, parts(&dense_layers.gate_up));
                let activated = gated(&both, stack.intermediate, stack.activation);
                let mut projected = dense(&activated, parts(&dense_layers.down));
                if let Some(norm) = &norms.feed_forward_out {
                    projected = norm_rows(&projected, None, norm.parts());
                }
                hidden.iter_mut().zip(&projected).for_each(|(x, p)| *x += p);
            }
            hidden = norm_rows(&hidden, None, stack.final_norm.parts());
        }
    }
    hidden
}

/// `mask_rows`: rows of another task than `task` set to zero.
pub fn mask_rows(x: &mut [f32], row_tasks: &[i32], task: i32, cols: usize) {
    for (row, &row_task) in x.chunks_exact_mut(cols).zip(row_tasks) {
        if row_task != task {
            row.fill(0.0);
        }
    }
}

/// A dense layer with its task adapters as a device runs it: the base product, then for each
/// task the batch uses, `x · D` with other tasks' rows zeroed, `· U`, added.
fn adapted(x: &[f32], linear: &Linear, row_tasks: &[i32]) -> Vec<f32> {
    let mut y = dense(x, parts(linear));
    let Some(lora) = linear.lora() else {
        return y;
    };
    for task in tasks_used(row_tasks) {
        let Some(products) = lora.task_products(task) else {
            continue;
        };
        let down = products.down();
        let mut reduced = dense(x, down);
        mask_rows(&mut reduced, row_tasks, task as i32, down.outputs);
        y.iter_mut()
            .zip(dense(&reduced, products.up()))
            .for_each(|(y, z)| *y += z);
    }
    y
}

fn parts(linear: &Linear) -> DenseParts<'_> {
    linear.dense_parts().expect("f32 weights, no adapters")
}

/// `gated_activation`: `act(gate) · other` over rows of the gate then the other projection.
fn gated(gate_up: &[f32], width: usize, activation: Activation) -> Vec<f32> {
    gate_up
        .chunks_exact(2 * width)
        .flat_map(|row| {
            (0..width).map(move |j| activate(row[j], Some(activation)) * row[width + j])
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels;
    use crate::layers::{self_attention, AttentionProducts, RelativePositionBias, Rotary};
    use crate::PackedBatch;

    /// Deterministic values in [-1, 1), no two alike in a run of thousands.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn bf16_rounding_is_the_half_crates() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // halfway between 1 and 1 + 2⁻⁷: to even, 1
            1.0 + 3.0 / 256.0, // halfway, to even upward
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(1), // smallest subnormal
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        cases.extend(values(10_000, 7).iter().map(|v| v * 1e4));
        for x in cases {
            assert_eq!(
                narrow_bf16(x),
                half::bf16::from_f32(x).to_bits(),
                "{x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }

    /// Layer and RMS norms with the residual add, at widths of real models, over 256 and 1,024
    /// threads; one row sits on a large offset, where a one-pass variance would cancel.
    #[test]
    fn norms_match_the_cpu_layers() {
        for (cols, seed) in [(384usize, 1u64), (1024, 2), (1536, 3)] {
            let mut x = values(2 * cols, seed);
            x[cols..].iter_mut().for_each(|v| *v = *v * 0.01 + 1000.0);
            let residual = values(2 * cols, seed + 10);
            let gamma: Vec<f32> = values(cols, seed + 20).iter().map(|g| g + 1.0).collect();
            let beta = values(cols, seed + 30);
            let mut layer = x.clone();
            kernels::add_layer_norm(&mut layer, &residual, &gamma, &beta, 1e-12);
            let mut rms: Vec<f32> = x.iter().zip(&residual).map(|(a, b)| a + b).collect();
            kernels::rms_norm(&mut rms, &gamma, 1e-6);
            for threads in [256, 1024] {
                for r in 0..2 {
                    // On the offset row, the mean itself carries f32's rounding of a sum near
                    // 1000 · cols (CPU and GPU add in different orders): 2e-4 of a unit. A
                    // one-pass variance there would be off by whole units.
                    let tolerance = if r == 0 { 2e-5 } else { 1e-3 };
                    let span = r * cols..(r + 1) * cols;
                    let row = &x[span.clone()];
                    let res = Some(&residual[span.clone()]);
                    let ours = norm_row(row, res, &gamma, Some(&beta), 1e-12, false, threads);
                    let difference = max_difference(&ours, &layer[span.clone()]);
                    assert!(
                        difference < tolerance,
                        "layer norm {cols}/{threads}/{r}: {difference}"
                    );
                    let ours = norm_row(row, res, &gamma, None, 1e-6, true, threads);
                    let difference = max_difference(&ours, &rms[span]);
                    assert!(
                        difference < tolerance,
                        "rms norm {cols}/{threads}/{r}: {difference}"
                    );
                }
            }
        }
    }

    /// The kernel's activation formulas against the CPU's, and its gated unit (gate first)
    /// against `gated_linear_unit`.
    #[test]
    fn activations_match_the_cpu_layers() {
        let xs: Vec<f32> = values(4000, 5).iter().map(|v| v * 8.0).collect();
        for activation in [
            Activation::GeluErf,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Silu,
        ] {
            let mut cpu = xs.clone();
            activation.apply(&mut cpu);
            let ours: Vec<f32> = xs.iter().map(|&x| activate(x, Some(activation))).collect();
            let difference = max_difference(&ours, &cpu);
            assert!(difference < 2e-6, "{activation:?}: {difference}");
            let width = 50;
            let mut gated = Vec::new();
            kernels::gated_linear_unit(&xs, width, activation, &mut gated);
            let ours: Vec<f32> = xs
                .chunks_exact(2 * width)
                .flat_map(|row| {
                    (0..width).map(move |j| activate(row[j], Some(activation)) * row[width + j])
                })
                .collect();
            let difference = max_difference(&ours, &gated);
            assert!(difference < 2e-5, "gated {activation:?}: {difference}");
        }
        assert_eq!(activate(-3.5, None), -3.5);
    }

    #[test]
    fn rotary_matches_the_cpu_layer() {
        let shape = AttentionShape {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 64,
        };
        let batch = PackedBatch::from_sequences(&[vec![0u32; 700], vec![0u32; 5]]);
        let original = values(batch.num_tokens() * shape.qkv_width(), 9);
        let mut cpu = original.clone();
        let layer = Rotary::new(shape.head_dim, 1_000_000.0);
        layer.apply(&mut cpu, &batch, shape);
        let positions: Vec<u32> = batch
            .ranges()
            .flat_map(|range| 0..range.len() as u32)
            .collect();
        let inverse_frequencies: Vec<f32> = (0..shape.head_dim / 2)
            .map(|i| 1.0 / 1_000_000.0f32.powf((2 * i) as f32 / shape.head_dim as f32))
            .collect();
        let mut ours = original;
        rotary(&mut ours, &positions, &inverse_frequencies, shape);
        assert_eq!(ours, cpu);
    }

    /// The tiled online softmax against the CPU's attention, which scores whole rows: every
    /// visibility, grouped-query heads, a relative-position bias, heads 64 and 256 wide (two
    /// tile sizes), and sequences that end mid-tile and mid-block.
    #[test]
    fn tiled_attention_matches_the_cpu_layer() {
        let lengths = [1usize, 7, 33, 300];
        let sequences: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![0u32; n]).collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let seq_starts: Vec<usize> = std::iter::once(0)
            .chain(batch.ranges().map(|range| range.end))
            .collect();
        for (heads, kv_heads, head_dim) in [(4usize, 4usize, 64usize), (4, 2, 256), (6, 1, 32)] {
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim,
            };
            // Scores of a few units, as trained models have, so the softmax is not flat.
            let qkv: Vec<f32> = values(batch.num_tokens() * shape.qkv_width(), head_dim as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let span = 300;
            let offset_bias = |head: usize, offset: isize| {
                ((head as f32 + 1.0) * (offset as f32).abs().ln_1p()).sin()
            };
            let cpu_bias = RelativePositionBias::new(heads, span, offset_bias);
            let table: Vec<f32> = (0..heads)
                .flat_map(|head| {
                    (0..2 * span - 1)
                        .map(move |i| offset_bias(head, i as isize - (span as isize - 1)))
                })
                .collect();
            let bias = BiasTable {
                table: &table,
                span,
            };
            for visibility in [Visibility::All, Visibility::Earlier, Visibility::Within(20)] {
                for with_bias in [false, true] {
                    let mut cpu = Vec::new();
                    self_attention(
                        &qkv,
                        &batch,
                        shape,
                        visibility,
                        with_bias.then_some(&cpu_bias),
                        AttentionProducts::F32,
                        &mut cpu,
                    );
                    let ours = attention(
                        &qkv,
                        &seq_starts,
                        shape,
                        visibility,
                        with_bias.then_some(&bias),
                    );
                    let difference = max_difference(&ours, &cpu);
                    assert!(
                        difference < 1e-5,
                        "{shape:?} {visibility:?} bias {with_bias}: {difference}"
                    );
                }
            }
        }
    }

    /// A tiny random-weight model of `crates/quiver-embed/tests/fixtures/tiny`.
    pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../quiver-embed/tests/fixtures/tiny")
            .join(name)
    }

    /// Each architecture's stack, run with the kernels' arithmetic, against its own forward
    /// pass: the steps a device backend takes are the model's. Sequences of 1 to 45 tokens,
    /// the longest over a tile of keys.
    fn check_stack(dir: &std::path::Path, lengths: &[usize]) {
        let model = crate::load_model_with(
            dir,
            crate::LoadOptions {
                quantization: crate::Quantization::None,
                ..Default::default()
            },
        )
        .unwrap();
        let vocab = model.vocab_size() as u64;
        let ids = values(lengths.iter().sum(), vocab);
        let mut at = 0;
        let sequences: Vec<Vec<u32>> = lengths
            .iter()
            .map(|&n| {
                at += n;
                ids[at - n..at]
                    .iter()
                    .map(|v| ((v + 1.0) / 2.0 * (vocab - 1) as f32) as u32)
                    .collect()
            })
            .collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let expected = model.forward(&batch).unwrap();
        let stack = model.stack().expect("a device stack");
        let ours = run_stack(&stack, &batch, model.hidden_size());
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let difference = max_difference(&ours, &expected);
        assert!(
            difference <= 1e-4 * scale.max(1.0),
            "{}: {difference} (values up to {scale})",
            dir.display()
        );
    }

    /// The tiny fixtures of every architecture with a device stack (MPNet and Gemma 3 are
    /// checked on their real weights below).
    pub(crate) const STACKED_FIXTURES: [&str; 9] = [
        "jina-v3",
        "roberta",
        "xlm-roberta",
        "nomic-bert",
        "nomic-bert-transformers",
        "qwen2",
        "qwen2-bidirectional",
        "qwen3",
        "modernbert",
    ];

    #[test]
    fn every_stack_runs_as_its_model_does() {
        for name in STACKED_FIXTURES {
            check_stack(&fixture(name), &[1, 9, 45, 5]);
        }
    }

    /// MPNet's relative-position bias, on all-mpnet-base-v2's real weights
    /// (`scripts/fetch-test-models`: `$QUIVER_TEST_MODELS`, else `models/` at the root).
    #[test]
    fn mpnets_stack_runs_as_the_model_does() {
        let dir = std::env::var_os("QUIVER_TEST_MODELS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
            })
            .join("all-mpnet-base-v2");
        assert!(
            dir.join("model.safetensors").is_file(),
            "{} is missing: run scripts/fetch-test-models",
            dir.display()
        );
        check_stack(&dir, &[9, 35]);
    }

    /// Gemma 3's extra norms, query scale and sliding-window layers, on the real weights
    /// (`scripts/fetch-embeddinggemma`, as the embedder's tests use).
    #[test]
    fn embeddinggemmas_stack_runs_as_the_model_does() {
        let dir = std::env::var_os("QUIVER_EMBEDDINGGEMMA")
            .expect("set QUIVER_EMBEDDINGGEMMA=$(scripts/fetch-embeddinggemma)");
        check_stack(std::path::Path::new(&dir), &[6, 3]);
    }

    /// jina-embeddings-v3's task adapters, on the word and token-type rows and on every
    /// dense layer: sequences of different tasks and none in one batch.
    #[test]
    fn task_adapters_run_as_the_model_runs_them() {
        let model = crate::load_model_with(
            &fixture("jina-v3"),
            crate::LoadOptions {
                quantization: crate::Quantization::None,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(model.adapters().len() >= 2);
        let sequences: Vec<Vec<u32>> = [7usize, 40, 3, 12]
            .iter()
            .map(|&n| (0..n as u32).map(|i| (i * 13 + 5) % 100).collect())
            .collect();
        let mut batch = PackedBatch::from_sequences(&sequences);
        batch.adapters = vec![Some(0), Some(1), None, Some(0)];
        let expected = model.forward(&batch).unwrap();
        let ours = run_stack(&model.stack().unwrap(), &batch, model.hidden_size());
        let difference = max_difference(&ours, &expected);
        assert!(difference < 1e-4, "{difference}");
        // The adapters move the states: without them the same ids give others.
        let plain = PackedBatch::from_sequences(&sequences);
        assert!(max_difference(&model.forward(&plain).unwrap(), &expected) > 1e-3);
    }
}
