//! The sentence-transformers files of a model folder: `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json` and `config_sentence_transformers.json`.
//!
//! A plain Hugging Face folder without them gets sentence-transformers' own defaults for a bare
//! transformer: mean pooling, no normalisation, no prompts.

use crate::dense::DenseSpec;
use crate::{EmbedError, Result};
use quiver_runtime::Pooling;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformerConfig {
    pub pooling: Pooling,
    /// Whether prompt tokens count in the pooled mean (`include_prompt` in the pooling config).
    pub include_prompt: bool,
    /// `Dense` modules after pooling, in order.
    pub dense: Vec<DenseSpec>,
    /// A `Normalize` module closes the pipeline.
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
    /// Named prompts such as `query` and `document`, prepended to the text.
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
}

impl Default for SentenceTransformerConfig {
    fn default() -> Self {
        SentenceTransformerConfig {
            pooling: Pooling::Mean,
            include_prompt: true,
            dense: Vec::new(),
            normalize: false,
            max_seq_length: None,
            do_lower_case: false,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
        }
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    module_type: String,
}

/// sentence-transformers' `SpladePooling` settings (its defaults when the file is absent).
#[derive(Deserialize, Default)]
struct SpladePoolingFile {
    pooling_strategy: Option<String>,
    activation_function: Option<String>,
}

fn splade_from(file: &SpladePoolingFile) -> std::result::Result<Pooling, String> {
    match (
        file.pooling_strategy.as_deref().unwrap_or("max"),
        file.activation_function.as_deref().unwrap_or("relu"),
    ) {
        ("max", "relu") => Ok(Pooling::Splade),
        (strategy, activation) => Err(format!(
            "fields `pooling_strategy` / `activation_function`: `{strategy}` / `{activation}` \
             is not supported yet (only `max` / `relu`, standard SPLADE)"
        )),
    }
}

#[derive(Deserialize)]
struct PoolingFile {
    /// Newer sentence-transformers releases write one `pooling_mode` string.
    pooling_mode: Option<String>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    include_prompt: Option<bool>,
}

#[derive(Deserialize, Default)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EmbedError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| EmbedError::Config {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
}

/// The last segment of a module's Python type: `sentence_transformers.models.Pooling` → `Pooling`.
fn module_kind(module_type: &str) -> &str {
    module_type.rsplit('.').next().unwrap_or(module_type)
}

impl SentenceTransformerConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let mut config = SentenceTransformerConfig::default();
        let modules_path = dir.join("modules.json");
        if let Some(modules) = read_json::<Vec<ModuleEntry>>(&modules_path)? {
            for module in modules {
                match module_kind(&module.module_type) {
                    "Transformer" | "SentenceTransformer" | "MLMTransformer" => {}
                    "SpladePooling" => {
                        let path = dir.join(&module.path).join("config.json");
                        let file = read_json::<SpladePoolingFile>(&path)?.unwrap_or_default();
                        config.pooling = splade_from(&file).map_err(|message| {
                            EmbedError::Config {
                                path: path.clone(),
                                message,
                            }
                        })?;
                    }
                    "Pooling" => {
                        let path = dir.join(&module.path).join("config.json");
                        let file = read_json::<PoolingFile>(&path)?.ok_or_else(|| {
                            EmbedError::Io {
                                path: path.clone(),
                                source: std::io::ErrorKind::NotFound.into(),
                            }
                        })?;
                        config.pooling = pooling_from(&file).map_err(|message| {
                            EmbedError::Config {
                                path: path.clone(),
                                message,
                            }
                        })?;
                        config.include_prompt = file.include_prompt.unwrap_or(true);
                    }
                    "Dense" => config.dense.push(DenseSpec::read(&dir.join(&module.path))?),
                    "Normalize" => config.normalize = true,
                    other => {
                        return Err(EmbedError::Config {
                            path: modules_path,
                            message: format!(
                                "module `{other}` ({}) is not supported yet; supported: Transformer, MLMTransformer, Pooling, SpladePooling, Dense, Normalize",
                                module.module_type
                            ),
                        })
                    }
                }
            }
        }
        if let Some(file) = read_json::<SentenceBertFile>(&dir.join("sentence_bert_config.json"))? {
            config.max_seq_length = file.max_seq_length;
            config.do_lower_case = file.do_lower_case;
        }
        if let Some(file) =
            read_json::<SentenceTransformersFile>(&dir.join("config_sentence_transformers.json"))?
        {
            config.prompts = file.prompts;
            config.default_prompt_name = file.default_prompt_name.filter(|name| !name.is_empty());
        }
        Ok(config)
    }

    /// The prompt text for a name, or a clear error listing the names the model has.
    pub fn prompt(&self, name: &str) -> Result<&str> {
        self.prompts
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| EmbedError::UnknownPrompt {
                name: name.to_string(),
                available: if self.prompts.is_empty() {
                    "(none)".to_string()
                } else {
                    self.prompts.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }
}

fn pooling_from(file: &PoolingFile) -> std::result::Result<Pooling, String> {
    if let Some(mode) = &file.pooling_mode {
        return pooling_by_name(mode);
    }
    let flags = [
        (file.pooling_mode_cls_token, Pooling::Cls),
        (file.pooling_mode_mean_tokens, Pooling::Mean),
        (file.pooling_mode_max_tokens, Pooling::Max),
        (file.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        (file.pooling_mode_lasttoken, Pooling::LastToken),
    ];
    if file.pooling_mode_weightedmean_tokens {
        return Err("weighted-mean pooling is not supported yet".into());
    }
    let chosen: Vec<Pooling> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, p)| *p)
        .collect();
    match chosen.as_slice() {
        [one] => Ok(*one),
        [] => Err("no pooling mode is switched on".into()),
        _ => Err("several pooling modes at once (concatenated vectors) are not supported".into()),
    }
}

/// Parses the names sentence-transformers accepts for `pooling_mode` (and `--pooling`).
pub fn pooling_by_name(name: &str) -> std::result::Result<Pooling, String> {
    match name {
        "cls" => Ok(Pooling::Cls),
        "mean" => Ok(Pooling::Mean),
        "max" => Ok(Pooling::Max),
        "mean_sqrt_len_tokens" | "mean_sqrt_len" => Ok(Pooling::MeanSqrtLen),
        "lasttoken" | "last_token" | "last" => Ok(Pooling::LastToken),
        "splade" => Ok(Pooling::Splade),
        other => Err(format!(
            "pooling mode `{other}` is not supported; supported: cls, mean, max, mean_sqrt_len_tokens, lasttoken, splade"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("quiver-st-config-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, body) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        dir
    }

    #[test]
    fn reads_pooling_normalize_prompts_and_length() {
        let dir = folder(&[
            (
                "modules.json",
                r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                    {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                    {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
            ),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_cls_token": true, "include_prompt": false}"#,
            ),
            ("sentence_bert_config.json", r#"{"max_seq_length": 128}"#),
            (
                "config_sentence_transformers.json",
                r#"{"prompts": {"query": "search_query: ", "document": ""}, "default_prompt_name": null}"#,
            ),
        ]);
        let config = SentenceTransformerConfig::read(&dir).unwrap();
        assert_eq!(config.pooling, Pooling::Cls);
        assert!(!config.include_prompt);
        assert!(config.normalize);
        assert_eq!(config.max_seq_length, Some(128));
        assert_eq!(config.prompt("query").unwrap(), "search_query: ");
        let error = config.prompt("passage").unwrap_err().to_string();
        assert!(error.contains("document, query"), "{error}");
    }

    #[test]
    fn malformed_files_name_themselves() {
        let dir = folder(&[("modules.json", "[{\"path\": 3}]")]);
        let error = SentenceTransformerConfig::read(&dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains("modules.json"), "{error}");
        let dir = folder(&[(
            "modules.json",
            r#"[{"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        )]);
        let error = SentenceTransformerConfig::read(&dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains("Dense"), "{error}");
    }

    #[test]
    fn plain_folder_gets_defaults() {
        let dir = folder(&[("config.json", "{}")]);
        assert_eq!(
            SentenceTransformerConfig::read(&dir).unwrap(),
            SentenceTransformerConfig::default()
        );
    }
}
