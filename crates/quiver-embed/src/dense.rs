//! sentence-transformers `Dense` modules: a linear layer and an activation over each pooled
//! vector, in the order `modules.json` lists them (EmbeddingGemma projects 768 → 3072 → 768).

use crate::{EmbedError, Result};
use quiver_runtime::layers::Linear;
use quiver_runtime::weights::WeightFiles;
use quiver_runtime::{LoadOptions, Quantization};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A `Dense` module as its `config.json` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseSpec {
    /// The module's folder.
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseActivation,
}

/// The activations sentence-transformers' `Dense` is built with in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "default_bias")]
    bias: bool,
    /// A Python path: `torch.nn.modules.activation.Tanh` (sentence-transformers' default).
    #[serde(default = "default_activation")]
    activation_function: String,
}

fn default_bias() -> bool {
    true
}
fn default_activation() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

impl DenseSpec {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<DenseSpec> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| EmbedError::Io {
            path: path.clone(),
            source,
        })?;
        let file: DenseFile = serde_json::from_str(&text).map_err(|e| EmbedError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let name = file
            .activation_function
            .rsplit('.')
            .next()
            .unwrap_or_default();
        let activation = match name {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            "ReLU" => DenseActivation::Relu,
            "GELU" => DenseActivation::Gelu,
            "Sigmoid" => DenseActivation::Sigmoid,
            other => {
                return Err(EmbedError::Config {
                    path,
                    message: format!(
                        "field `activation_function`: `{other}` is not supported (Identity, \
                         Tanh, ReLU, GELU, Sigmoid)"
                    ),
                })
            }
        };
        Ok(DenseSpec {
            dir: dir.to_path_buf(),
            in_features: file.in_features,
            out_features: file.out_features,
            bias: file.bias,
            activation,
        })
    }
}

/// A loaded `Dense` module.
pub struct Dense {
    linear: Linear,
    activation: DenseActivation,
    out_features: usize,
}

impl Dense {
    /// Loads the weights (`linear.weight`, `linear.bias`) from the module's
    /// `model.safetensors`, in f32 whatever the model's number format: the layer is small and
    /// runs once per text.
    pub fn load(spec: &DenseSpec) -> Result<Dense> {
        let files = WeightFiles::open(&spec.dir)?;
        let tensors = files.tensors(LoadOptions {
            quantization: Quantization::None,
            ..LoadOptions::default()
        })?;
        let linear = Linear::load(
            &tensors.root().pp("linear"),
            spec.in_features,
            spec.out_features,
            spec.bias,
        )?;
        Ok(Dense {
            linear,
            activation: spec.activation,
            out_features: spec.out_features,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `rows` vectors, row-major, through the layer and its activation.
    pub fn forward(&self, input: &[f32], rows: usize) -> Vec<f32> {
        let mut output = Vec::new();
        self.linear.forward(input, rows, &mut output);
        match self.activation {
            DenseActivation::Identity => {}
            DenseActivation::Tanh => output.iter_mut().for_each(|x| *x = x.tanh()),
            DenseActivation::Relu => output.iter_mut().for_each(|x| *x = x.max(0.0)),
            DenseActivation::Sigmoid => output
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            // torch.nn.GELU's default: the exact form.
            DenseActivation::Gelu => {
                quiver_runtime::kernels::Activation::GeluErf.apply(&mut output)
            }
        }
        output
    }
}
