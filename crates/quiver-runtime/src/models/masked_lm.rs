//! BERT with its masked-language-model head: every token's hidden state mapped to one logit per
//! vocabulary entry (`BertForMaskedLM`'s `cls.predictions`: dense, activation, layer norm, then
//! the word-embedding table as decoder, plus a bias). SPLADE sparse encoders (naver/splade-*,
//! opensearch neural-sparse) are this, max-pooled ([`crate::Pooling::Splade`]).

use super::bert::{BertModel, Config};
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::kernels::Activation;
use crate::layers::{LayerNorm, Linear};
use crate::weights::Weights;
use crate::{PackedBatch, Result, RuntimeError};

/// BERT's `layer_norm_eps` when the config leaves it out.
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;

pub struct MaskedLmModel {
    dims: ModelDims,
    encoder: BertModel,
    transform: Linear,
    activation: Activation,
    norm: LayerNorm,
    /// `[hidden] → [vocab]`: the word-embedding table (tied), or the checkpoint's own decoder.
    decoder: Linear,
}

impl MaskedLmModel {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let encoder = BertModel::load(model_config, checkpoint)?;
        let h = config.encoder.hidden_size;
        let vocab = config.encoder.vocab_size;
        let head = checkpoint.pp("cls.predictions");
        let activation =
            Activation::from_config_name(&config.encoder.hidden_act).ok_or_else(|| {
                RuntimeError::Config {
                    path: model_config.path.clone(),
                    message: format!(
                        "field `hidden_act`: `{}` is not supported",
                        config.encoder.hidden_act
                    ),
                }
            })?;
        let eps = config
            .encoder
            .layer_norm_eps
            .unwrap_or(DEFAULT_LAYER_NORM_EPS) as f32;
        let bias = match head.get_optional("bias", &[vocab])? {
            Some(bias) => bias,
            None => head.get("decoder.bias", &[vocab])?,
        };
        let weight = match head.get_optional("decoder.weight", &[vocab, h])? {
            Some(own) => own,
            // Tied checkpoints store the table once, in the encoder.
            None => BertModel::weights(checkpoint)?
                .get("embeddings.word_embeddings.weight", &[vocab, h])?,
        };
        Ok(MaskedLmModel {
            dims: ModelDims {
                // Each token's output is one logit per vocabulary entry.
                hidden_size: vocab,
                max_positions: encoder.max_positions(),
                vocab_size: vocab,
            },
            transform: Linear::load(&head.pp("transform.dense"), h, h, true)?,
            activation,
            norm: LayerNorm::load(&head.pp("transform.LayerNorm"), h, eps)?,
            decoder: Linear::new(weight, Some(bias), h, vocab),
            encoder,
        })
    }
}

impl EncoderModel for MaskedLmModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let hidden = self.encoder.run(batch)?;
        let rows = batch.num_tokens();
        let mut transformed = Vec::new();
        self.transform.forward(&hidden, rows, &mut transformed);
        self.activation.apply(&mut transformed);
        self.norm.forward(&mut transformed);
        let mut logits = Vec::new();
        self.decoder.forward(&transformed, rows, &mut logits);
        Ok(logits)
    }
}
