//! The index's settings, typed: what every vector in it was made with, and so how documents and
//! queries must be embedded against it.

use super::records::IndexStatus;
use super::schema::put_meta;
use super::write::bump_generation;
use super::{db_error, Store};
use crate::error::{IndexError, Result};
use crate::{is_keyword_weight, model_keyword_weight};
use quiver_embed::{EmbedOptions, Quantization};

/// What every vector in an index was made with, and how it is searched. Two runs with different
/// vector settings must not mix their vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSettings {
    pub model: String,
    pub dimension: usize,
    pub normalize: bool,
    pub document_prompt: Option<String>,
    pub query_prompt: Option<String>,
    /// The number format the model ran in: queries must be embedded the same way.
    pub quantization: Quantization,
    /// Hybrid search's keyword weight (the vector ranking's is 1): every front end searches
    /// with it. Like the query prompt, it touches no stored vector.
    pub keyword_weight: f64,
}

impl IndexSettings {
    /// How every text stored in this index (chunk, signature) is embedded. With
    /// [`IndexSettings::query_options`], the one statement of the index's embedding rule: the
    /// indexer, every search front end and `quiver eval` embed through these two.
    pub fn document_options(&self) -> EmbedOptions {
        self.options(self.document_prompt.clone())
    }

    /// How a query searching this index must be embedded.
    pub fn query_options(&self) -> EmbedOptions {
        self.options(self.query_prompt.clone())
    }

    pub(super) fn options(&self, prompt_name: Option<String>) -> EmbedOptions {
        EmbedOptions {
            prompt_name,
            dimensions: Some(self.dimension),
            normalize: Some(self.normalize),
            ..EmbedOptions::default()
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "model {}{} with {} dimensions (normalize {}, document prompt {:?})",
            self.model,
            match self.quantization {
                Quantization::None => String::new(),
                other => format!(" ({})", other.name()),
            },
            self.dimension,
            self.normalize,
            self.document_prompt
        )
    }
}

impl Store {
    pub fn settings(&self) -> Result<Option<IndexSettings>> {
        let Some(model) = self.meta("model")? else {
            return Ok(None);
        };
        let dimension_text = self.meta("dimension")?.unwrap_or_default();
        let dimension = dimension_text
            .parse()
            .map_err(|_| IndexError::BadMetadata {
                field: "dimension",
                value: dimension_text,
            })?;
        // Indexes made before the weight was recorded take their model's.
        let keyword_weight = match self.meta("keyword_weight")? {
            None => model_keyword_weight(&model),
            Some(text) => text.parse().ok().filter(|&w| is_keyword_weight(w)).ok_or(
                IndexError::BadMetadata {
                    field: "keyword_weight",
                    value: text,
                },
            )?,
        };
        Ok(Some(IndexSettings {
            keyword_weight,
            model,
            dimension,
            normalize: self.meta("normalize")?.as_deref() != Some("false"),
            document_prompt: self.meta("document_prompt")?.filter(|p| !p.is_empty()),
            query_prompt: self.meta("query_prompt")?.filter(|p| !p.is_empty()),
            // Indexes made before int8 indexing have no such key: they are f32.
            quantization: match self.meta("quantization")? {
                None => Quantization::None,
                Some(name) => Quantization::from_name(&name).ok_or(IndexError::BadMetadata {
                    field: "quantization",
                    value: name,
                })?,
            },
        }))
    }

    /// The settings of an index that holds vectors; an empty one is an error naming it.
    pub fn indexed_settings(&self) -> Result<IndexSettings> {
        self.settings()?
            .ok_or_else(|| IndexError::EmptyIndex(self.dir.clone()))
    }

    /// What the index holds and how it was made.
    pub fn status(&self) -> Result<IndexStatus> {
        let settings = self.indexed_settings()?;
        Ok(IndexStatus {
            index: self.dir.clone(),
            root: self.meta("root")?,
            model: settings.model,
            dimension: settings.dimension,
            normalize: settings.normalize,
            document_prompt: settings.document_prompt,
            query_prompt: settings.query_prompt,
            quantization: settings.quantization.name(),
            keyword_weight: settings.keyword_weight,
            chunking: self.meta("chunking")?,
            stats: self.stats()?,
            vector_files: crate::vectors::status(self)?,
        })
    }

    /// Records `settings` on a new index; on an existing one, checks they match. With
    /// `reembed`, a mismatch empties the index (in one transaction) and records the new ones.
    pub fn adopt_settings(&mut self, settings: &IndexSettings, reembed: bool) -> Result<()> {
        match self.settings()? {
            Some(stored) if stored == *settings => return Ok(()),
            // The query prompt and the keyword weight touch no stored vector: they are
            // recorded, nothing re-embedded.
            Some(stored)
                if IndexSettings {
                    query_prompt: settings.query_prompt.clone(),
                    keyword_weight: settings.keyword_weight,
                    ..stored.clone()
                } == *settings =>
            {
                self.set_meta(
                    "query_prompt",
                    settings.query_prompt.as_deref().unwrap_or_default(),
                )?;
                return self.set_meta("keyword_weight", &settings.keyword_weight.to_string());
            }
            Some(stored) if !reembed => {
                return Err(IndexError::SettingsChanged {
                    path: self.dir.clone(),
                    stored: stored.describe(),
                    requested: settings.describe(),
                })
            }
            _ => {}
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error(&self.dir, e))?;
        let run = || -> rusqlite::Result<()> {
            tx.execute_batch("DELETE FROM chunks; DELETE FROM chunks_fts; DELETE FROM vectors; DELETE FROM files;")?;
            bump_generation(&tx)?;
            let pairs = [
                ("model", settings.model.clone()),
                ("dimension", settings.dimension.to_string()),
                ("normalize", settings.normalize.to_string()),
                (
                    "document_prompt",
                    settings.document_prompt.clone().unwrap_or_default(),
                ),
                (
                    "query_prompt",
                    settings.query_prompt.clone().unwrap_or_default(),
                ),
                ("quantization", settings.quantization.name().to_string()),
                ("keyword_weight", settings.keyword_weight.to_string()),
            ];
            for (key, value) in pairs {
                put_meta(&tx, key, &value)?;
            }
            Ok(())
        };
        run().map_err(|e| db_error(&self.dir, e))?;
        tx.commit().map_err(|e| db_error(&self.dir, e))
    }
}
