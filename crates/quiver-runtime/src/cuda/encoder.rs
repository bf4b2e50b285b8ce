//! A model on an NVIDIA GPU: the layers of a [`Stack`] uploaded once, run with Quiver's kernels
//! (`kernels.cu`) and cuBLAS, and pooled on the card, so hidden states stay there.
//!
//! Each step is one of `src/gpu_reference.rs`'s, whose CPU arithmetic matches every
//! architecture's forward pass; this file only moves the same steps onto the card. It has not
//! yet run on one (issue #20): so that it can never hand out wrong vectors unseen, [`upload`]
//! runs a check batch through the GPU and the CPU model it came from and refuses the GPU where
//! they disagree (the load check).
//!
//! Matrix products: cuBLAS `GemmEx` with f32 accumulation, inputs in the model's [`Format`].
//! Activations between kernels stay f32; each product reads a copy in the format that the
//! kernel before it wrote.

use super::kernels::{self, activation_code, pooling_code};
use super::Gpu;
use crate::cuda_plan::{key_tile, row_tasks, tasks_used, QUERIES_PER_BLOCK};
use crate::kernels::Activation;
use crate::layers::{DenseParts, EmbeddingLora, Linear, NormParts, Visibility};
use crate::models::post_norm::{FeedForward, Positions};
use crate::models::pre_norm::PreNormStack;
use crate::models::stack::{Layers, Rows, Stack, TokenTypes};
use crate::models::ModelDims;
use crate::{EncoderModel, PackedBatch, Pooling, Result, RuntimeError};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig};
use cudarc::driver::{PushKernelArg, ValidAsZeroBits};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The number format of the weights and of each product's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    F32,
    Bf16,
}

impl Format {
    fn suffix(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::Bf16 => "bf16",
        }
    }

    fn blas_type(self) -> blas_sys::cudaDataType {
        match self {
            Format::F32 => blas_sys::cudaDataType::CUDA_R_32F,
            Format::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
        }
    }

    /// The cosine between the card's and the CPU's pooled vectors that the load check asks
    /// for: the parity goals (the CPU holds f32 parity with `transformers`).
    fn least_cosine(self) -> f32 {
        match self {
            Format::F32 => 0.9999,
            Format::Bf16 => 0.999,
        }
    }
}

/// Values on the card in the model's format: f32, or bf16 as its bits.
enum Narrow {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

/// Threads of a block for row-wise and element-wise kernels.
const THREADS: u32 = 256;
/// `MAX_HEAD_DIM` in `kernels.cu`.
const MAX_HEAD_DIM: usize = 256;

/// The card, its stream, cuBLAS and the compiled kernels of one format.
struct Card {
    name: String,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    format: Format,
}

struct Dense {
    /// `Wᵀ`, `[inputs, outputs]`.
    weight: Narrow,
    bias: Option<Narrow>,
    inputs: usize,
    outputs: usize,
    /// Each task adapter's two products (`Lora::task_products`), by task.
    lora: Vec<(Dense, Dense)>,
}

struct Norm {
    gamma: Narrow,
    beta: Option<Narrow>,
    eps: f32,
    rms: bool,
}

enum DeviceFeedForward {
    Dense {
        intermediate: Dense,
        output: Dense,
        activation: Activation,
    },
    Gated {
        gate_up: Dense,
        down: Dense,
        width: usize,
        activation: Activation,
    },
}

struct PostNormLayer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    feed_forward: DeviceFeedForward,
    output_norm: Norm,
}

struct PreNormLayer {
    attention_norm: Option<Norm>,
    qkv: Dense,
    heads: Option<(Norm, Norm)>,
    attention_out: Dense,
    attention_out_norm: Option<Norm>,
    feed_forward_norm: Norm,
    feed_forward: DeviceFeedForward,
    feed_forward_out_norm: Option<Norm>,
    attention_kind: usize,
}

/// A layer's rotation (absent: positions came with the embeddings), which keys it sees, and
/// the relative-position bias on its scores (MPNet's: `[heads][2 · span − 1]`, and the span).
struct AttentionKind {
    inverse_frequencies: Option<CudaSlice<f32>>,
    visibility: Visibility,
    bias: Option<(CudaSlice<f32>, usize)>,
}

enum DeviceLayers {
    PostNorm {
        layers: Vec<PostNormLayer>,
        kind: AttentionKind,
    },
    PreNorm {
        layers: Vec<PreNormLayer>,
        kinds: Vec<AttentionKind>,
        final_norm: Norm,
    },
}

struct Embeddings {
    word: Narrow,
    scale: f32,
    positions: Option<(Narrow, usize)>,
    /// The table, and whether the batch's token types pick its rows (else row 0 for all).
    token_types: Option<(Narrow, bool, usize)>,
    /// Task updates of the word and token-type rows, added on the host (a few values a token).
    adapters: Option<(EmbeddingLora, EmbeddingLora)>,
    norm: Option<Norm>,
}

/// Sizes the layers share.
#[derive(Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The widest feed-forward product (gate and up side by side, where gated).
    widest: usize,
}

impl Shape {
    fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Device memory one token of a batch takes: the buffers of [`Activations`].
    fn bytes_per_token(&self, format: Format) -> usize {
        let narrow = match format {
            Format::F32 => 4,
            Format::Bf16 => 2,
        };
        let f32_values = 2 * self.hidden + self.qkv_width() + self.widest;
        let narrow_values = self.hidden + self.heads * self.head_dim + self.widest;
        // Ids, positions and the few per-sequence tables.
        4 * f32_values + narrow * narrow_values + 64
    }
}

/// A model uploaded to a GPU.
pub struct GpuEncoder {
    card: Mutex<Card>,
    dims: ModelDims,
    shape: Shape,
    embeddings: Embeddings,
    layers: DeviceLayers,
    token_budget: usize,
}

/// Uploads `model`'s layers to GPU `ordinal` in `format`, then checks them against `model`
/// (the load check). Fails naming what is missing where the architecture has no device stack.
pub fn upload(model: &dyn EncoderModel, ordinal: usize, format: Format) -> Result<GpuEncoder> {
    let gpu = super::open(ordinal)?;
    let Some(stack) = model.stack() else {
        return Err(RuntimeError::NoGpuArchitecture(gpu.to_string()));
    };
    let card = Card::new(gpu, format)?;
    let encoder = GpuEncoder::new(card, &stack, model.dims())?;
    encoder.check_against(model)?;
    Ok(encoder)
}

impl Card {
    fn new(gpu: Gpu, format: Format) -> Result<Self> {
        let name = gpu.to_string();
        let failed = driver_error(&gpu.name);
        // One stream, so every launch and copy runs in order: cudarc's per-buffer events
        // would only add work.
        // SAFETY: nothing here uses a second stream.
        unsafe { gpu.context.disable_event_tracking() };
        let stream = gpu.context.default_stream();
        let ptx = kernels::compile(gpu.compute_capability)?;
        let module = gpu.context.load_module(ptx).map_err(&failed)?;
        let mut functions = HashMap::new();
        for &base in kernels::PER_FORMAT {
            let function = module
                .load_function(&format!("{base}_{}", format.suffix()))
                .map_err(&failed)?;
            functions.insert(base, function);
        }
        for &base in kernels::SHARED {
            functions.insert(base, module.load_function(base).map_err(&failed)?);
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|error| RuntimeError::Cuda {
            device: name.clone(),
            message: format!("cuBLAS: {error:?}"),
        })?;
        Ok(Card {
            name,
            stream,
            blas,
            functions,
            format,
        })
    }

    fn failed(&self) -> impl Fn(DriverError) -> RuntimeError + '_ {
        driver_error(&self.name)
    }

    fn upload_f32(&self, values: &[f32]) -> Result<CudaSlice<f32>> {
        self.stream.memcpy_stod(values).map_err(self.failed())
    }

    fn upload_u32(&self, values: &[u32]) -> Result<CudaSlice<u32>> {
        self.stream.memcpy_stod(values).map_err(self.failed())
    }

    fn upload_i32(&self, values: &[i32]) -> Result<CudaSlice<i32>> {
        self.stream.memcpy_stod(values).map_err(self.failed())
    }

    fn upload_narrow(&self, values: &[f32]) -> Result<Narrow> {
        Ok(match self.format {
            Format::F32 => Narrow::F32(self.upload_f32(values)?),
            Format::Bf16 => {
                let bits: Vec<u16> = values
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                Narrow::Bf16(self.stream.memcpy_stod(&bits).map_err(self.failed())?)
            }
        })
    }

    fn zeros<T: cudarc::driver::DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(len.max(1)).map_err(self.failed())
    }

    fn narrow_zeros(&self, len: usize) -> Result<Narrow> {
        Ok(match self.format {
            Format::F32 => Narrow::F32(self.zeros(len)?),
            Format::Bf16 => Narrow::Bf16(self.zeros(len)?),
        })
    }

    fn ptr<T>(&self, slice: &CudaSlice<T>) -> u64 {
        slice.device_ptr(&self.stream).0
    }

    fn narrow_ptr(&self, values: &Narrow) -> u64 {
        match values {
            Narrow::F32(slice) => self.ptr(slice),
            Narrow::Bf16(slice) => self.ptr(slice),
        }
    }

    fn optional_ptr(&self, values: Option<&Narrow>) -> u64 {
        values.map_or(0, |values| self.narrow_ptr(values))
    }

    fn function(&self, name: &'static str) -> &CudaFunction {
        &self.functions[name]
    }

    fn dense(&self, parts: DenseParts<'_>) -> Result<Dense> {
        Ok(Dense {
            weight: self.upload_narrow(parts.weight_t)?,
            bias: parts.bias.map(|b| self.upload_narrow(b)).transpose()?,
            inputs: parts.inputs,
            outputs: parts.outputs,
            lora: Vec::new(),
        })
    }

    fn linear(&self, linear: &Linear) -> Result<Dense> {
        let parts = linear.dense_parts().ok_or_else(|| RuntimeError::Cuda {
            device: self.name.clone(),
            message: "a dense layer is narrowed; the GPU uploads f32 weights".into(),
        })?;
        let mut dense = self.dense(parts)?;
        if let Some(lora) = linear.lora() {
            for products in (0..lora.tasks()).filter_map(|task| lora.task_products(task)) {
                dense
                    .lora
                    .push((self.dense(products.down())?, self.dense(products.up())?));
            }
        }
        Ok(dense)
    }

    fn norm(&self, parts: NormParts<'_>) -> Result<Norm> {
        Ok(Norm {
            gamma: self.upload_narrow(parts.gamma)?,
            beta: parts.beta.map(|b| self.upload_narrow(b)).transpose()?,
            eps: parts.eps,
            rms: parts.rms,
        })
    }

    fn elementwise(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `y = x Wᵀ (+ bias)`: `x` `[rows, inputs]` in the model's format, `y` f32.
    fn gemm(&self, x: &Narrow, dense: &Dense, rows: usize, y: &CudaSlice<f32>) -> Result<()> {
        let (one, zero) = (1.0f32, 0.0f32);
        let ty = self.format.blas_type();
        // Row-major `y[rows, out] = x[rows, in] · Wᵀ[in, out]` is column-major
        // `yᵀ[out, rows] = Wᵀᵀ[out, in] · xᵀ[in, rows]`, with each buffer read as it lies.
        // SAFETY: the buffers hold `outputs · inputs`, `rows · inputs` and `rows · outputs`
        // values of the types named.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                dense.outputs as i32,
                rows as i32,
                dense.inputs as i32,
                (&one as *const f32).cast(),
                self.narrow_ptr(&dense.weight) as *const std::ffi::c_void,
                ty,
                dense.outputs as i32,
                self.narrow_ptr(x) as *const std::ffi::c_void,
                ty,
                dense.inputs as i32,
                (&zero as *const f32).cast(),
                self.ptr(y) as *mut std::ffi::c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                dense.outputs as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|error| match error.0 {
            blas_sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED => RuntimeError::OutOfMemory {
                device: self.name.clone(),
                tokens: rows,
            },
            _ => RuntimeError::Cuda {
                device: self.name.clone(),
                message: format!("cuBLAS: {error:?}"),
            },
        })?;
        if dense.bias.is_some() {
            self.bias_activation(
                y,
                dense.bias.as_ref(),
                Some(y),
                None,
                rows,
                dense.outputs,
                None,
            )?;
        }
        Ok(())
    }

    /// `bias_activation`.
    #[allow(clippy::too_many_arguments)]
    fn bias_activation(
        &self,
        x: &CudaSlice<f32>,
        bias: Option<&Narrow>,
        out: Option<&CudaSlice<f32>>,
        out_narrow: Option<&Narrow>,
        rows: usize,
        cols: usize,
        activation: Option<Activation>,
    ) -> Result<()> {
        let (x, bias) = (self.ptr(x), self.optional_ptr(bias));
        let out = out.map_or(0, |out| self.ptr(out));
        let out_narrow = self.optional_ptr(out_narrow);
        let (rows, cols, code) = (rows as i64, cols as i32, activation_code(activation));
        let mut launch = self.stream.launch_builder(self.function("bias_activation"));
        launch
            .arg(&x)
            .arg(&bias)
            .arg(&out)
            .arg(&out_narrow)
            .arg(&rows)
            .arg(&cols)
            .arg(&code);
        // SAFETY: the arguments are `bias_activation`'s, in order, over buffers of `rows ·
        // cols` values.
        unsafe { launch.launch(Self::elementwise(rows as usize * cols as usize)) }
            .map_err(self.failed())?;
        Ok(())
    }

    /// `layer_norm` or `rms_norm` over `rows` rows.
    #[allow(clippy::too_many_arguments)]
    fn norm_rows(
        &self,
        norm: &Norm,
        x: &CudaSlice<f32>,
        residual: Option<&CudaSlice<f32>>,
        sum: Option<&CudaSlice<f32>>,
        out: Option<&CudaSlice<f32>>,
        out_narrow: Option<&Narrow>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let x = self.ptr(x);
        let residual = residual.map_or(0, |r| self.ptr(r));
        let gamma = self.narrow_ptr(&norm.gamma);
        let beta = self.optional_ptr(norm.beta.as_ref());
        let sum = sum.map_or(0, |s| self.ptr(s));
        let out = out.map_or(0, |o| self.ptr(o));
        let out_narrow = self.optional_ptr(out_narrow);
        let (cols, eps) = (cols as i32, norm.eps);
        let name = if norm.rms { "rms_norm" } else { "layer_norm" };
        let mut launch = self.stream.launch_builder(self.function(name));
        launch.arg(&x).arg(&residual).arg(&gamma);
        if !norm.rms {
            launch.arg(&beta);
        }
        launch
            .arg(&sum)
            .arg(&out)
            .arg(&out_narrow)
            .arg(&cols)
            .arg(&eps);
        let config = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments are the norm kernel's, in order, over `rows · cols` values.
        unsafe { launch.launch(config) }.map_err(self.failed())?;
        Ok(())
    }

    fn add(&self, x: &CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<()> {
        let (x_ptr, y_ptr, count) = (self.ptr(x), self.ptr(y), n as i64);
        let mut launch = self.stream.launch_builder(self.function("add"));
        launch.arg(&x_ptr).arg(&y_ptr).arg(&count);
        // SAFETY: `add` over two buffers of `n` values.
        unsafe { launch.launch(Self::elementwise(n)) }.map_err(self.failed())?;
        Ok(())
    }
}

fn driver_error(device: &str) -> impl Fn(DriverError) -> RuntimeError + '_ {
    move |error| {
        if error.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            RuntimeError::OutOfMemory {
                device: device.to_string(),
                tokens: 0,
            }
        } else {
            RuntimeError::Cuda {
                device: device.to_string(),
                message: error.to_string(),
            }
        }
    }
}

/// A whole table of rows as f32, for upload.
fn all_rows(rows: Rows<'_>, count: usize) -> Vec<f32> {
    match rows {
        Rows::Dense(values) => values.to_vec(),
        Rows::Table(table) => table.gather(&(0..count as u32).collect::<Vec<_>>()),
    }
}

fn visibility_code(visibility: Visibility) -> (i32, i32) {
    match visibility {
        Visibility::All => (0, 0),
        Visibility::Earlier => (1, 0),
        Visibility::Within(window) => (2, window as i32),
    }
}

/// The activations of one batch.
struct Activations {
    tokens: usize,
    hidden: CudaSlice<f32>,
    hidden_narrow: Narrow,
    qkv: CudaSlice<f32>,
    context: Narrow,
    projected: CudaSlice<f32>,
    wide: CudaSlice<f32>,
    wide_narrow: Narrow,
    seq_starts: CudaSlice<i32>,
    tile_seq: CudaSlice<i32>,
    tile_first: CudaSlice<i32>,
    tiles: usize,
    positions: CudaSlice<u32>,
    /// Each token's task (-1: none), and the tasks the batch uses.
    row_tasks: CudaSlice<i32>,
    tasks: Vec<usize>,
}

impl GpuEncoder {
    fn new(card: Card, stack: &Stack<'_>, dims: ModelDims) -> Result<Self> {
        let h = dims.hidden_size;
        let e = &stack.embeddings;
        let embeddings = Embeddings {
            word: card.upload_narrow(&all_rows(e.word, dims.vocab_size))?,
            scale: e.scale,
            positions: e
                .positions
                .as_ref()
                .map(|p| Ok::<_, RuntimeError>((card.upload_narrow(p.table)?, p.first)))
                .transpose()?,
            token_types: match e.token_types {
                None => None,
                Some(TokenTypes::PerToken(table)) => {
                    Some((card.upload_narrow(table)?, true, table.len() / h))
                }
                Some(TokenTypes::Constant(row)) => Some((card.upload_narrow(row)?, false, 1)),
            },
            adapters: e.adapters.cloned(),
            norm: e.norm.map(|n| card.norm(n.parts())).transpose()?,
        };
        let feed_forward = |ff: &FeedForward| -> Result<DeviceFeedForward> {
            Ok(match ff {
                FeedForward::Dense {
                    intermediate,
                    output,
                    activation,
                } => DeviceFeedForward::Dense {
                    intermediate: card.linear(intermediate)?,
                    output: card.linear(output)?,
                    activation: *activation,
                },
                FeedForward::SwiGlu {
                    gate_up,
                    down,
                    width,
                } => DeviceFeedForward::Gated {
                    gate_up: card.linear(gate_up)?,
                    down: card.linear(down)?,
                    width: *width,
                    activation: Activation::Silu,
                },
            })
        };
        let (layers, shape) = match &stack.layers {
            Layers::PostNorm {
                layers,
                shape,
                positions,
            } => {
                let (inverse_frequencies, bias) = match positions {
                    Positions::InEmbeddings => (None, None),
                    Positions::Rotary(rotary) => {
                        (Some(card.upload_f32(rotary.inverse_frequencies())?), None)
                    }
                    Positions::RelativeBias(bias) => {
                        let (table, span) = bias.table();
                        (None, Some((card.upload_f32(table)?, span)))
                    }
                };
                let device_layers = layers
                    .iter()
                    .map(|layer| {
                        Ok(PostNormLayer {
                            qkv: card.linear(&layer.qkv)?,
                            attention_out: card.linear(&layer.attention_out)?,
                            attention_norm: card.norm(layer.attention_norm.parts())?,
                            feed_forward: feed_forward(&layer.feed_forward)?,
                            output_norm: card.norm(layer.output_norm.parts())?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let a = shape.attention;
                let shape = Shape {
                    hidden: h,
                    heads: a.num_heads,
                    kv_heads: a.num_kv_heads,
                    head_dim: a.head_dim,
                    widest: 2 * shape.intermediate,
                };
                let kind = AttentionKind {
                    inverse_frequencies,
                    visibility: Visibility::All,
                    bias,
                };
                (
                    DeviceLayers::PostNorm {
                        layers: device_layers,
                        kind,
                    },
                    shape,
                )
            }
            Layers::PreNorm(stack) => pre_norm(&card, stack, h)?,
        };
        if shape.head_dim > MAX_HEAD_DIM || shape.head_dim % 2 == 1 {
            return Err(RuntimeError::Cuda {
                device: card.name.clone(),
                message: format!(
                    "heads {} wide: the attention kernel takes even widths up to {MAX_HEAD_DIM}",
                    shape.head_dim
                ),
            });
        }
        // What stays free once the weights are up, less a fifth for cuBLAS's workspace and
        // the allocator, bounds a batch: every activation buffer grows with its tokens.
        card.stream
            .context()
            .bind_to_thread()
            .map_err(card.failed())?;
        let (free, _) = cudarc::driver::result::mem_get_info().map_err(card.failed())?;
        let token_budget = (free / 5 * 4 / shape.bytes_per_token(card.format)).max(1);
        Ok(GpuEncoder {
            card: Mutex::new(card),
            dims,
            shape,
            embeddings,
            layers,
            token_budget,
        })
    }

    /// The load check: a batch of two sequences through the card and through `model`; their
    /// mean-pooled vectors must agree to [`Format::least_cosine`].
    fn check_against(&self, model: &dyn EncoderModel) -> Result<()> {
        let vocab = self.dims.vocab_size.max(2) as u32;
        let longest = self.dims.max_positions.clamp(1, 48);
        let sequences: Vec<Vec<u32>> = [longest, longest.div_ceil(3)]
            .iter()
            .map(|&n| (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect())
            .collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let skip = [0, 0];
        let ours = self.embed(&batch, Pooling::Mean, &skip)?;
        let cpu = Pooling::Mean.pool(
            &model.forward(&batch)?,
            self.dims.hidden_size,
            &batch,
            &skip,
        );
        let least = ours
            .iter()
            .zip(&cpu)
            .map(|(a, b)| cosine(a, b))
            .fold(f32::INFINITY, f32::min);
        let format = self.card()?.format;
        if least.is_nan() || least < format.least_cosine() {
            return Err(RuntimeError::Cuda {
                device: self.card()?.name.clone(),
                message: format!(
                    "the GPU's vectors differ from the CPU's (cosine {least:.6}, at least {} \
                     needed at {format:?}); use `--device cpu`",
                    format.least_cosine()
                ),
            });
        }
        Ok(())
    }

    fn card(&self) -> Result<std::sync::MutexGuard<'_, Card>> {
        self.card.lock().map_err(|_| RuntimeError::Cuda {
            device: "cuda".into(),
            message: "an earlier batch panicked while it held the card".into(),
        })
    }

    /// Runs the layers over `batch`, leaving the final hidden states in the activations.
    fn run_on_card(&self, card: &Card, batch: &PackedBatch) -> Result<Activations> {
        let result = self.run_layers(card, batch);
        result.map_err(|error| match error {
            RuntimeError::OutOfMemory { device, .. } => RuntimeError::OutOfMemory {
                device,
                tokens: batch.num_tokens(),
            },
            other => other,
        })
    }

    fn activations(&self, card: &Card, batch: &PackedBatch) -> Result<Activations> {
        let tokens = batch.num_tokens();
        let s = self.shape;
        let mut seq_starts = vec![0i32];
        let (mut tile_seq, mut tile_first) = (Vec::new(), Vec::new());
        for (index, range) in batch.ranges().enumerate() {
            seq_starts.push(range.end as i32);
            for first in (0..range.len()).step_by(QUERIES_PER_BLOCK) {
                tile_seq.push(index as i32);
                tile_first.push(first as i32);
            }
        }
        let positions: Vec<u32> = batch
            .ranges()
            .flat_map(|range| 0..range.len() as u32)
            .collect();
        let row_tasks = row_tasks(batch);
        let tasks = tasks_used(&row_tasks);
        Ok(Activations {
            tokens,
            hidden: card.zeros(tokens * s.hidden)?,
            hidden_narrow: card.narrow_zeros(tokens * s.hidden)?,
            qkv: card.zeros(tokens * s.qkv_width())?,
            context: card.narrow_zeros(tokens * s.heads * s.head_dim)?,
            projected: card.zeros(tokens * s.hidden)?,
            wide: card.zeros(tokens * s.widest)?,
            wide_narrow: card.narrow_zeros(tokens * s.widest)?,
            seq_starts: card.upload_i32(&seq_starts)?,
            tiles: tile_seq.len(),
            tile_seq: card.upload_i32(&tile_seq)?,
            tile_first: card.upload_i32(&tile_first)?,
            positions: card.upload_u32(&positions)?,
            row_tasks: card.upload_i32(&row_tasks)?,
            tasks,
        })
    }

    fn run_layers(&self, card: &Card, batch: &PackedBatch) -> Result<Activations> {
        let a = self.activations(card, batch)?;
        self.embed_tokens(card, batch, &a)?;
        let (t, h) = (a.tokens, self.shape.hidden);
        match &self.layers {
            DeviceLayers::PostNorm { layers, kind } => {
                for layer in layers {
                    product(card, &a, &a.hidden_narrow, &layer.qkv, &a.qkv)?;
                    self.attend(card, &a, kind)?;
                    product(card, &a, &a.context, &layer.attention_out, &a.projected)?;
                    add_and_norm(card, &a, &layer.attention_norm, h)?;
                    self.feed_forward(card, &a, &layer.feed_forward)?;
                    add_and_norm(card, &a, &layer.output_norm, h)?;
                }
            }
            DeviceLayers::PreNorm {
                layers,
                kinds,
                final_norm,
            } => {
                for layer in layers {
                    match &layer.attention_norm {
                        Some(norm) => {
                            let narrow = Some(&a.hidden_narrow);
                            card.norm_rows(norm, &a.hidden, None, None, None, narrow, t, h)?
                        }
                        None => {
                            let narrow = Some(&a.hidden_narrow);
                            card.bias_activation(&a.hidden, None, None, narrow, t, h, None)?
                        }
                    }
                    product(card, &a, &a.hidden_narrow, &layer.qkv, &a.qkv)?;
                    if let Some((q, k)) = &layer.heads {
                        self.head_norms(card, &a, q, k)?;
                    }
                    self.attend(card, &a, &kinds[layer.attention_kind])?;
                    product(card, &a, &a.context, &layer.attention_out, &a.projected)?;
                    if let Some(norm) = &layer.attention_out_norm {
                        let p = Some(&a.projected);
                        card.norm_rows(norm, &a.projected, None, None, p, None, t, h)?;
                    }
                    // hidden += projected, and the feed-forward norm of the sum, in one pass.
                    let (sum, narrow) = (Some(&a.hidden), Some(&a.hidden_narrow));
                    let norm = &layer.feed_forward_norm;
                    card.norm_rows(norm, &a.hidden, Some(&a.projected), sum, None, narrow, t, h)?;
                    self.feed_forward(card, &a, &layer.feed_forward)?;
                    if let Some(norm) = &layer.feed_forward_out_norm {
                        let p = Some(&a.projected);
                        card.norm_rows(norm, &a.projected, None, None, p, None, t, h)?;
                    }
                    card.add(&a.hidden, &a.projected, t * h)?;
                }
                let out = Some(&a.hidden);
                card.norm_rows(final_norm, &a.hidden, None, None, out, None, t, h)?;
            }
        }
        Ok(a)
    }

    /// `embed`, then the embeddings' norm; leaves `hidden` and its narrow copy.
    fn embed_tokens(&self, card: &Card, batch: &PackedBatch, a: &Activations) -> Result<()> {
        let e = &self.embeddings;
        let h = self.shape.hidden;
        let ids = card.upload_u32(&batch.token_ids)?;
        let first = e.positions.as_ref().map_or(0, |(_, first)| *first as u32);
        let position_ids: Vec<u32> = batch
            .ranges()
            .flat_map(|range| first..first + range.len() as u32)
            .collect();
        let position_ids = card.upload_u32(&position_ids)?;
        let typed = matches!(e.token_types, Some((_, true, _))) && !batch.token_types.is_empty();
        let type_ids = if typed {
            let rows = e.token_types.as_ref().map_or(0, |(_, _, rows)| *rows);
            if let Some(&ty) = batch.token_types.iter().find(|&&ty| ty as usize >= rows) {
                return Err(RuntimeError::Batch(format!(
                    "token type {ty} is outside the model's {rows} types"
                )));
            }
            let ids: Vec<u32> = batch.token_types.iter().map(|&ty| u32::from(ty)).collect();
            Some(card.upload_u32(&ids)?)
        } else {
            None
        };
        let out = card.ptr(&a.hidden);
        let words = card.narrow_ptr(&e.word);
        let positions = card.optional_ptr(e.positions.as_ref().map(|(table, _)| table));
        let types = card.optional_ptr(e.token_types.as_ref().map(|(table, _, _)| table));
        let (ids, position_ids) = (card.ptr(&ids), card.ptr(&position_ids));
        let type_ids = type_ids.as_ref().map_or(0, |t| card.ptr(t));
        let (width, scale) = (h as i32, e.scale);
        let mut launch = card.stream.launch_builder(card.function("embed"));
        launch
            .arg(&out)
            .arg(&words)
            .arg(&positions)
            .arg(&types)
            .arg(&ids)
            .arg(&position_ids)
            .arg(&type_ids)
            .arg(&width)
            .arg(&scale);
        let config = LaunchConfig {
            grid_dim: (a.tokens as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `embed`'s arguments in order; ids were checked against the vocabulary.
        unsafe { launch.launch(config) }.map_err(card.failed())?;
        if let (Some((word, token_type)), Some(tasks)) = (&e.adapters, batch.token_adapters()) {
            // The task updates of each token's rows: rank-sized products, on the host.
            let mut update = vec![0.0f32; a.tokens * h];
            let rows = update.chunks_exact_mut(h).zip(&batch.token_ids);
            for ((row, &id), task) in rows.zip(tasks) {
                if let Some(task) = task {
                    word.add(row, id as usize, task);
                    token_type.add(row, 0, task);
                }
            }
            card.add(&a.hidden, &card.upload_f32(&update)?, a.tokens * h)?;
        }
        let (t, narrow) = (a.tokens, Some(&a.hidden_narrow));
        match &e.norm {
            Some(norm) => {
                let out = Some(&a.hidden);
                card.norm_rows(norm, &a.hidden, None, None, out, narrow, t, h)
            }
            None => card.bias_activation(&a.hidden, None, None, narrow, t, h, None),
        }
    }

    fn head_norms(&self, card: &Card, a: &Activations, q: &Norm, k: &Norm) -> Result<()> {
        let s = self.shape;
        let qkv = card.ptr(&a.qkv);
        let (q_weight, k_weight) = (card.narrow_ptr(&q.gamma), card.narrow_ptr(&k.gamma));
        let (heads, kv_heads, head_dim) = (s.heads as i32, s.kv_heads as i32, s.head_dim as i32);
        let (row, tokens, eps) = (s.qkv_width() as i32, a.tokens as i64, q.eps);
        let mut launch = card.stream.launch_builder(card.function("head_rms_norm"));
        launch
            .arg(&qkv)
            .arg(&q_weight)
            .arg(&k_weight)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&head_dim)
            .arg(&row)
            .arg(&tokens)
            .arg(&eps);
        let warps = a.tokens * (s.heads + s.kv_heads);
        let config = LaunchConfig {
            grid_dim: ((warps * 32).div_ceil(THREADS as usize) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `head_rms_norm`'s arguments in order; one warp per (token, head).
        unsafe { launch.launch(config) }.map_err(card.failed())?;
        Ok(())
    }

    /// Rotation (where the kind has one), then attention into `context`.
    fn attend(&self, card: &Card, a: &Activations, kind: &AttentionKind) -> Result<()> {
        let s = self.shape;
        let qkv = card.ptr(&a.qkv);
        if let Some(frequencies) = &kind.inverse_frequencies {
            let (positions, frequencies) = (card.ptr(&a.positions), card.ptr(frequencies));
            let (tokens, rotated) = (a.tokens as i64, (s.heads + s.kv_heads) as i32);
            let (head_dim, row) = (s.head_dim as i32, s.qkv_width() as i32);
            let mut launch = card.stream.launch_builder(card.function("rotary"));
            launch
                .arg(&qkv)
                .arg(&positions)
                .arg(&frequencies)
                .arg(&tokens)
                .arg(&rotated)
                .arg(&head_dim)
                .arg(&row);
            let pairs = a.tokens * (s.heads + s.kv_heads) * s.head_dim / 2;
            // SAFETY: `rotary`'s arguments in order.
            unsafe { launch.launch(Card::elementwise(pairs)) }.map_err(card.failed())?;
        }
        let key_tile = key_tile(s.head_dim);
        let out = card.narrow_ptr(&a.context);
        let (starts, tile_seq, tile_first) = (
            card.ptr(&a.seq_starts),
            card.ptr(&a.tile_seq),
            card.ptr(&a.tile_first),
        );
        let (heads, kv_heads, head_dim) = (s.heads as i32, s.kv_heads as i32, s.head_dim as i32);
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let (visibility, window) = visibility_code(kind.visibility);
        let (bias, bias_span) = kind.bias.as_ref().map_or((0u64, 0i32), |(table, span)| {
            (card.ptr(table), *span as i32)
        });
        let key_tile_arg = key_tile as i32;
        let mut launch = card.stream.launch_builder(card.function("attention"));
        launch
            .arg(&qkv)
            .arg(&out)
            .arg(&starts)
            .arg(&tile_seq)
            .arg(&tile_first)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&head_dim)
            .arg(&key_tile_arg)
            .arg(&scale)
            .arg(&visibility)
            .arg(&window)
            .arg(&bias)
            .arg(&bias_span);
        let config = LaunchConfig {
            grid_dim: (a.tiles as u32, s.heads as u32, 1),
            block_dim: ((QUERIES_PER_BLOCK * 32) as u32, 1, 1),
            shared_mem_bytes: (key_tile * (2 * s.head_dim + 1) * 4) as u32,
        };
        // SAFETY: `attention`'s arguments in order, its tiles built above.
        unsafe { launch.launch(config) }.map_err(card.failed())?;
        Ok(())
    }

    /// The feed-forward block from `hidden_narrow` into `projected`.
    fn feed_forward(&self, card: &Card, a: &Activations, ff: &DeviceFeedForward) -> Result<()> {
        let t = a.tokens;
        match ff {
            DeviceFeedForward::Dense {
                intermediate,
                output,
                activation,
            } => {
                product(card, a, &a.hidden_narrow, intermediate, &a.wide)?;
                let narrow = Some(&a.wide_narrow);
                let act = Some(*activation);
                card.bias_activation(&a.wide, None, None, narrow, t, intermediate.outputs, act)?;
                product(card, a, &a.wide_narrow, output, &a.projected)
            }
            DeviceFeedForward::Gated {
                gate_up,
                down,
                width,
                activation,
            } => {
                product(card, a, &a.hidden_narrow, gate_up, &a.wide)?;
                let (gate_up_ptr, out) = (card.ptr(&a.wide), card.narrow_ptr(&a.wide_narrow));
                let (bias, rows, width_arg) = (0u64, t as i64, *width as i32);
                let code = activation_code(Some(*activation));
                let mut launch = card
                    .stream
                    .launch_builder(card.function("gated_activation"));
                launch
                    .arg(&gate_up_ptr)
                    .arg(&bias)
                    .arg(&out)
                    .arg(&rows)
                    .arg(&width_arg)
                    .arg(&code);
                // SAFETY: `gated_activation`'s arguments in order (the product's bias was
                // added by `gemm`).
                unsafe { launch.launch(Card::elementwise(t * width)) }.map_err(card.failed())?;
                product(card, a, &a.wide_narrow, down, &a.projected)
            }
        }
    }
}

/// A pre-norm stack's layers on the card. A config's query scale is folded into the query
/// heads' norm, or else into the query rows of the QKV product: the same numbers, one kernel
/// fewer.
fn pre_norm(card: &Card, stack: &PreNormStack, h: usize) -> Result<(DeviceLayers, Shape)> {
    let shape = stack.shape;
    let q_width = shape.num_heads * shape.head_dim;
    let layers = stack
        .layers
        .iter()
        .map(|layer| {
            let (dense, norms) = (&layer.projections, &layer.norms);
            let mut qkv = card.linear(&dense.qkv)?;
            let mut heads = None;
            if let Some((q, k)) = &norms.heads {
                let mut q_parts = q.parts();
                let scaled: Vec<f32>;
                if let Some(scale) = stack.query_scale {
                    scaled = q_parts.gamma.iter().map(|g| g * scale).collect();
                    q_parts.gamma = &scaled;
                }
                heads = Some((card.norm(q_parts)?, card.norm(k.parts())?));
            } else if let Some(scale) = stack.query_scale {
                let parts = dense.qkv.dense_parts().ok_or_else(|| RuntimeError::Cuda {
                    device: card.name.clone(),
                    message: "a narrowed QKV product".into(),
                })?;
                let outputs = parts.outputs;
                let weight: Vec<f32> = parts
                    .weight_t
                    .iter()
                    .enumerate()
                    .map(|(i, w)| if i % outputs < q_width { w * scale } else { *w })
                    .collect();
                let bias: Option<Vec<f32>> = parts.bias.map(|b| {
                    b.iter()
                        .enumerate()
                        .map(|(i, v)| if i < q_width { v * scale } else { *v })
                        .collect()
                });
                qkv = card.dense(DenseParts {
                    weight_t: &weight,
                    bias: bias.as_deref(),
                    ..parts
                })?;
            }
            let optional = |norm: &Option<crate::models::pre_norm::Norm>| {
                norm.as_ref().map(|n| card.norm(n.parts())).transpose()
            };
            Ok(PreNormLayer {
                attention_norm: optional(&norms.attention)?,
                qkv,
                heads,
                attention_out: card.linear(&dense.attention_out)?,
                attention_out_norm: optional(&norms.attention_out)?,
                feed_forward_norm: card.norm(norms.feed_forward.parts())?,
                feed_forward: DeviceFeedForward::Gated {
                    gate_up: card.linear(&dense.gate_up)?,
                    down: card.linear(&dense.down)?,
                    width: stack.intermediate,
                    activation: stack.activation,
                },
                feed_forward_out_norm: optional(&norms.feed_forward_out)?,
                attention_kind: layer.attention_kind,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let kinds = stack
        .attention
        .iter()
        .map(|kind| {
            Ok(AttentionKind {
                inverse_frequencies: Some(card.upload_f32(kind.rotary.inverse_frequencies())?),
                visibility: kind.visibility,
                bias: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let device_shape = Shape {
        hidden: h,
        heads: shape.num_heads,
        kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        widest: 2 * stack.intermediate,
    };
    Ok((
        DeviceLayers::PreNorm {
            layers,
            kinds,
            final_norm: card.norm(stack.final_norm.parts())?,
        },
        device_shape,
    ))
}

/// `y = x Wᵀ (+ bias)`, plus each task adapter's update on its own sequences' tokens: `x · D`,
/// other tasks' rows zeroed, then `· U`, added to `y`.
fn product(
    card: &Card,
    a: &Activations,
    x: &Narrow,
    dense: &Dense,
    y: &CudaSlice<f32>,
) -> Result<()> {
    let t = a.tokens;
    card.gemm(x, dense, t, y)?;
    for &task in &a.tasks {
        let Some((down, up)) = dense.lora.get(task) else {
            continue;
        };
        let reduced: CudaSlice<f32> = card.zeros(t * down.outputs)?;
        card.gemm(x, down, t, &reduced)?;
        let (values, row_tasks) = (card.ptr(&reduced), card.ptr(&a.row_tasks));
        let (task_arg, rows, cols) = (task as i32, t as i64, down.outputs as i32);
        let mut launch = card.stream.launch_builder(card.function("mask_rows"));
        launch
            .arg(&values)
            .arg(&row_tasks)
            .arg(&task_arg)
            .arg(&rows)
            .arg(&cols);
        // SAFETY: `mask_rows`' arguments in order, over `t · rank` values.
        unsafe { launch.launch(Card::elementwise(t * down.outputs)) }.map_err(card.failed())?;
        let reduced_narrow = card.narrow_zeros(t * down.outputs)?;
        let narrow = Some(&reduced_narrow);
        card.bias_activation(&reduced, None, None, narrow, t, down.outputs, None)?;
        let update: CudaSlice<f32> = card.zeros(t * up.outputs)?;
        card.gemm(&reduced_narrow, up, t, &update)?;
        card.add(y, &update, t * up.outputs)?;
    }
    Ok(())
}

/// A post-norm layer's `hidden = norm(projected + hidden)`, with its copy for the next product.
fn add_and_norm(card: &Card, a: &Activations, norm: &Norm, h: usize) -> Result<()> {
    let (out, narrow) = (Some(&a.hidden), Some(&a.hidden_narrow));
    card.norm_rows(
        norm,
        &a.projected,
        Some(&a.hidden),
        None,
        out,
        narrow,
        a.tokens,
        h,
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

impl EncoderModel for GpuEncoder {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn token_budget(&self) -> Option<usize> {
        Some(self.token_budget)
    }

    /// Hidden states back to the host (late interaction, rerankers' heads).
    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let card = self.card()?;
        let a = self.run_on_card(&card, batch)?;
        card.stream.memcpy_dtov(&a.hidden).map_err(card.failed())
    }

    /// Pooled on the card: only one vector per sequence comes back.
    fn embed(
        &self,
        batch: &PackedBatch,
        pooling: Pooling,
        skip: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let dims = self.dims;
        batch.validate(dims.max_positions, dims.vocab_size)?;
        let card = self.card()?;
        let a = self.run_on_card(&card, batch)?;
        let h = self.shape.hidden;
        let sequences = batch.num_sequences();
        let pooled: CudaSlice<f32> = card.zeros(sequences * h)?;
        let skip: Vec<i32> = (0..sequences)
            .map(|i| skip.get(i).copied().unwrap_or(0) as i32)
            .collect();
        let skip = card.upload_i32(&skip)?;
        let (hidden, out) = (card.ptr(&a.hidden), card.ptr(&pooled));
        let (starts, skip_ptr) = (card.ptr(&a.seq_starts), card.ptr(&skip));
        let (count, width, code) = (sequences as i32, h as i32, pooling_code(pooling));
        let mut launch = card.stream.launch_builder(card.function("pool"));
        launch
            .arg(&hidden)
            .arg(&out)
            .arg(&starts)
            .arg(&skip_ptr)
            .arg(&count)
            .arg(&width)
            .arg(&code);
        let config = LaunchConfig {
            grid_dim: (h.div_ceil(THREADS as usize) as u32, sequences as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `pool`'s arguments in order.
        unsafe { launch.launch(config) }.map_err(card.failed())?;
        let flat = card.stream.memcpy_dtov(&pooled).map_err(card.failed())?;
        Ok(flat.chunks_exact(h).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu_reference::tests::{fixture, STACKED_FIXTURES};
    use crate::{load_model_with, Device, LoadOptions, Quantization};

    /// On a GPU: every architecture with a device stack loads at f32 and bf16 (which runs the
    /// load check), and its pooled vectors and hidden states match the CPU's. Without one (CI),
    /// loading names the driver's library or says there is no card; never a panic, never the
    /// CPU in the GPU's place.
    #[test]
    fn every_stack_runs_on_a_gpu_or_the_error_says_what_is_missing() {
        let batch = PackedBatch::from_sequences(&[vec![5u32, 17, 3, 9, 11, 2, 8], vec![4, 1, 6]]);
        for name in STACKED_FIXTURES {
            let dir = fixture(name);
            for quantization in [Quantization::None, Quantization::Bf16] {
                let on_gpu = LoadOptions {
                    quantization,
                    device: Device::Cuda(0),
                    ..Default::default()
                };
                match load_model_with(&dir, on_gpu) {
                    Ok(model) => {
                        let cpu = load_model_with(
                            &dir,
                            LoadOptions {
                                quantization: Quantization::None,
                                ..Default::default()
                            },
                        )
                        .unwrap();
                        let ours = model.embed(&batch, Pooling::Mean, &[0, 1]).unwrap();
                        let theirs = cpu.embed(&batch, Pooling::Mean, &[0, 1]).unwrap();
                        let least = if quantization == Quantization::None {
                            0.9999
                        } else {
                            0.999
                        };
                        for (a, b) in ours.iter().zip(&theirs) {
                            assert!(cosine(a, b) >= least, "{name} {quantization:?}");
                        }
                        let hidden = model.forward(&batch).unwrap();
                        assert_eq!(hidden.len(), cpu.forward(&batch).unwrap().len());
                    }
                    Err(RuntimeError::CudaLibrary { library, .. }) => {
                        assert_eq!(library, "libcuda")
                    }
                    Err(RuntimeError::NoSuchGpu { count, .. }) => assert_eq!(count, 0),
                    Err(other) => panic!("{name}: {other}"),
                }
            }
        }
    }
}
