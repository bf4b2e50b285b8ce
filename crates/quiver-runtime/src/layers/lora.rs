//! Task adapters as low-rank updates (LoRA), several per layer, one chosen per sequence.
//!
//! jina-embeddings-v3 keeps one frozen network and, per task (`retrieval.query`,
//! `retrieval.passage`, `text-matching`, ...), a rank-4 update of every dense and embedding
//! weight: `W_task = W + scale · B_task A_task` for dense layers, `E_task = E + scale · A_task
//! B_task` for embedding tables (the authors' `LoRAParametrization`, `scale = alpha / rank`).
//! The update is applied to activations instead of merged into weights, so one copy of the
//! model serves every task, and sequences of different tasks share a forward pass.

use crate::layers::DenseParts;
use crate::weights::Weights;
use crate::Result;

/// The update of a dense layer `[in] → [out]`: `y += scale · B_t (A_t x)`.
#[derive(Debug, Clone)]
pub struct Lora {
    tasks: usize,
    rank: usize,
    in_features: usize,
    out_features: usize,
    scale: f32,
    /// `A`, `[tasks, rank, in]`.
    down: Vec<f32>,
    /// `B`, `[tasks, out, rank]`.
    up: Vec<f32>,
}

/// One task's update as a device backend runs it: `x · D` (`[in, rank]`, the scale folded in),
/// then `· U` (`[rank, out]`), both row-major ([`Lora::task_products`]).
pub struct TaskProducts {
    down_t: Vec<f32>,
    up_t: Vec<f32>,
    rank: usize,
    inputs: usize,
    outputs: usize,
}

impl TaskProducts {
    pub fn down(&self) -> DenseParts<'_> {
        DenseParts {
            weight_t: &self.down_t,
            bias: None,
            inputs: self.inputs,
            outputs: self.rank,
        }
    }

    pub fn up(&self) -> DenseParts<'_> {
        DenseParts {
            weight_t: &self.up_t,
            bias: None,
            inputs: self.rank,
            outputs: self.outputs,
        }
    }
}

impl Lora {
    /// Loads `lora_A` and `lora_B` of a dense layer's parametrization.
    pub fn load(
        weights: &Weights<'_>,
        shape: AdapterShape,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let AdapterShape { tasks, rank, alpha } = shape;
        Ok(Lora {
            tasks,
            rank,
            in_features,
            out_features,
            scale: alpha / rank as f32,
            down: weights.get("lora_A", &[tasks, rank, in_features])?,
            up: weights.get("lora_B", &[tasks, out_features, rank])?,
        })
    }

    /// Task `task`'s update as two products a device backend runs (`None` past the last task).
    pub fn task_products(&self, task: usize) -> Option<TaskProducts> {
        if task >= self.tasks {
            return None;
        }
        let (rank, inputs, outputs) = (self.rank, self.in_features, self.out_features);
        let down = &self.down[task * rank * inputs..(task + 1) * rank * inputs];
        let up = &self.up[task * outputs * rank..(task + 1) * outputs * rank];
        let mut d = vec![0.0f32; inputs * rank];
        for r in 0..rank {
            for i in 0..inputs {
                d[i * rank + r] = self.scale * down[r * inputs + i];
            }
        }
        let mut u = vec![0.0f32; rank * outputs];
        for o in 0..outputs {
            for r in 0..rank {
                u[r * outputs + o] = up[o * rank + r];
            }
        }
        Some(TaskProducts {
            down_t: d,
            up_t: u,
            rank,
            inputs,
            outputs,
        })
    }

    /// How many tasks have adapters.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Adds each row's update to `output` (`[rows, out]`), from `input` (`[rows, in]`);
    /// `adapters[r]` is row `r`'s task, `None` for the base weights.
    pub fn add(&self, output: &mut [f32], input: &[f32], adapters: &[Option<u16>]) {
        let mut reduced = vec![0.0f32; self.rank];
        let rows = output
            .chunks_exact_mut(self.out_features)
            .zip(input.chunks_exact(self.in_features))
            .zip(adapters);
        for ((out, x), adapter) in rows {
            let Some(task) = adapter.map(usize::from).filter(|&t| t < self.tasks) else {
                continue;
            };
            let down = &self.down[task * self.rank * self.in_features..];
            for (r, value) in reduced.iter_mut().enumerate() {
                let a = &down[r * self.in_features..(r + 1) * self.in_features];
                *value = self.scale * a.iter().zip(x).map(|(a, x)| a * x).sum::<f32>();
            }
            let up = &self.up[task * self.out_features * self.rank..];
            for (o, b) in out.iter_mut().zip(up.chunks_exact(self.rank)) {
                *o += b.iter().zip(&reduced).map(|(b, r)| b * r).sum::<f32>();
            }
        }
    }
}

/// The update of an embedding table `[rows, width]`: `E[id] += scale · A_t[id] B_t`.
#[derive(Debug, Clone)]
pub struct EmbeddingLora {
    tasks: usize,
    rank: usize,
    rows: usize,
    width: usize,
    scale: f32,
    /// `A`, `[tasks, rows, rank]`.
    down: Vec<f32>,
    /// `B`, `[tasks, rank, width]`.
    up: Vec<f32>,
}

impl EmbeddingLora {
    pub fn load(
        weights: &Weights<'_>,
        shape: AdapterShape,
        rows: usize,
        width: usize,
    ) -> Result<Self> {
        let AdapterShape { tasks, rank, alpha } = shape;
        Ok(EmbeddingLora {
            tasks,
            rank,
            rows,
            width,
            scale: alpha / rank as f32,
            down: weights.get("lora_A", &[tasks, rows, rank])?,
            up: weights.get("lora_B", &[tasks, rank, width])?,
        })
    }

    /// Adds task `task`'s update of table row `id` to `row`.
    pub fn add(&self, row: &mut [f32], id: usize, task: u16) {
        let task = usize::from(task);
        if task >= self.tasks || id >= self.rows {
            return;
        }
        let a = &self.down[(task * self.rows + id) * self.rank..][..self.rank];
        let up = &self.up[task * self.rank * self.width..];
        for (r, &weight) in a.iter().enumerate() {
            let b = &up[r * self.width..(r + 1) * self.width];
            for (value, b) in row.iter_mut().zip(b) {
                *value += self.scale * weight * b;
            }
        }
    }
}

/// How many task adapters a model has, their rank and `alpha` (`scale = alpha / rank`).
#[derive(Debug, Clone, Copy)]
pub struct AdapterShape {
    pub tasks: usize,
    pub rank: usize,
    pub alpha: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_update_equals_the_merged_weight() {
        // W_t = W + scale · B_t A_t, so the update alone is scale · B_t A_t x.
        let lora = Lora {
            tasks: 2,
            rank: 1,
            in_features: 2,
            out_features: 3,
            scale: 0.5,
            down: vec![1.0, 2.0, /* task 1 */ -1.0, 1.0],
            up: vec![1.0, 0.0, 2.0, /* task 1 */ 3.0, 1.0, 1.0],
        };
        let input = [1.0, 1.0, 2.0, -1.0, 5.0, 5.0];
        let mut output = vec![0.0; 9];
        lora.add(&mut output, &input, &[Some(0), Some(1), None]);
        // Row 0, task 0: A x = 3, scaled 1.5, times B = [1, 0, 2].
        assert_eq!(output[..3], [1.5, 0.0, 3.0]);
        // Row 1, task 1: A x = -3, scaled -1.5, times B = [3, 1, 1].
        assert_eq!(output[3..6], [-4.5, -1.5, -1.5]);
        assert_eq!(output[6..], [0.0, 0.0, 0.0], "no adapter: base weights");
    }

    #[test]
    fn embedding_update_reads_the_row_of_the_token() {
        let lora = EmbeddingLora {
            tasks: 1,
            rank: 2,
            rows: 2,
            width: 2,
            scale: 1.0,
            down: vec![1.0, 0.0, /* row 1 */ 0.0, 2.0],
            up: vec![1.0, 1.0, /* rank 1 */ 0.5, -1.0],
        };
        let mut row = vec![0.0, 0.0];
        lora.add(&mut row, 1, 0);
        assert_eq!(row, [1.0, -2.0]);
    }
}
