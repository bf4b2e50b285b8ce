use crate::dense::Dense;
use crate::postprocess::{l2_normalize, truncate_dimensions};
use crate::tokenize::{check_token_ids, ParsedTokenizer};
use crate::{EmbedError, Result, SentenceTransformerConfig, TextTokenizer, TruncationSide};
use quiver_runtime::{
    load_model_with, Device, EncoderModel, LoadOptions, PackedBatch, Pooling, Quantization,
};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How a model is loaded.
#[derive(Debug, Clone, Default)]
pub struct EmbedderOptions {
    /// Truncate inputs at this many tokens instead of the model's own limit (never above the
    /// model's position count).
    pub max_length: Option<usize>,
    /// Override the pooling read from the model folder.
    pub pooling: Option<Pooling>,
    pub device: Device,
    /// Keep weights a second time, packed in half precision for inputs of a few tokens: single
    /// short queries run about a third faster for 1.5 times the weight memory (see
    /// [`quiver_runtime::LoadOptions`]).
    pub few_row_kernels: bool,
    /// The dense layers' number format; the default is [`Quantization::for_this_machine`].
    pub quantization: Quantization,
}

impl EmbedderOptions {
    /// Every other option at its default, in f32: the reference's numbers, for what must match
    /// them closely.
    pub fn f32() -> EmbedderOptions {
        EmbedderOptions {
            quantization: Quantization::None,
            ..EmbedderOptions::default()
        }
    }
}

/// [`Embedder::embed_until`] tokenises and embeds this many texts at a time: enough for
/// batches of similar lengths, few enough that tokenising them takes a fraction of a second.
const TEXTS_PER_ROUND: usize = 4096;

/// How one call turns texts into vectors.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// A prompt the model defines (`query`, `document`, ...). `None` uses the model's default
    /// prompt, if it names one.
    pub prompt_name: Option<String>,
    /// A literal prompt, used instead of a named one.
    pub prompt: Option<String>,
    /// Matryoshka: keep this many leading dimensions (then normalise).
    pub dimensions: Option<usize>,
    /// Force normalisation on or off; `None` follows the model (its `Normalize` module).
    pub normalize: Option<bool>,
    /// At most this many sequences in one forward pass.
    pub max_batch_sequences: usize,
    /// At most this many tokens in one forward pass (one over-long sequence still runs alone).
    pub max_batch_tokens: usize,
    /// Which end of an over-long text is cut.
    pub truncation: TruncationSide,
    /// The task adapter to run with (jina-embeddings-v3: `retrieval.query`, ...). `None`: the
    /// adapter named like the prompt, if the model has one; else the base weights.
    pub task: Option<String>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            prompt_name: None,
            prompt: None,
            dimensions: None,
            normalize: None,
            max_batch_sequences: 64,
            max_batch_tokens: 8192,
            truncation: TruncationSide::Right,
            task: None,
        }
    }
}

/// One input to embed: a text, or token ids the model runs exactly as sent (no prompt, no
/// special tokens added), as TEI's and OpenAI's APIs accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    TokenIds(Vec<u32>),
}

impl From<String> for EmbedInput {
    fn from(text: String) -> Self {
        EmbedInput::Text(text)
    }
}

/// Texts tokenised for the model: what [`Embedder::embed_sequences`] takes.
#[derive(Debug, Clone)]
pub struct EncodedTexts {
    /// Token ids of each text, special tokens included, cut at the max length.
    pub token_ids: Vec<Vec<u32>>,
    /// How every sequence of this call runs: prompt tokens left out of pooling, task adapter.
    pub setup: SequenceSetup,
    /// Whether each text was longer than the max length (and so was cut).
    pub truncated: Vec<bool>,
}

/// What [`Embedder::embed_sequences`] needs to know of a sequence besides its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceSetup {
    /// Leading prompt tokens left out of pooling.
    pub pooling_skip: usize,
    /// The task adapter it runs with (an index into the model's adapters), if any.
    pub adapter: Option<u16>,
}

/// Limits on one forward pass.
#[derive(Debug, Clone, Copy)]
pub struct BatchBudget {
    pub max_sequences: usize,
    /// One sequence longer than this still runs, alone.
    pub max_tokens: usize,
}

impl From<&EmbedOptions> for BatchBudget {
    fn from(options: &EmbedOptions) -> Self {
        BatchBudget {
            max_sequences: options.max_batch_sequences,
            max_tokens: options.max_batch_tokens,
        }
    }
}

/// What happens to a pooled vector before it is handed out.
#[derive(Debug, Clone, Copy)]
pub struct OutputOptions {
    /// Matryoshka: leading dimensions kept.
    pub dimensions: usize,
    pub normalize: bool,
}

impl OutputOptions {
    pub fn apply(&self, vector: &mut Vec<f32>) {
        truncate_dimensions(vector, self.dimensions);
        if self.normalize {
            l2_normalize(vector);
        }
    }
}

/// A model ready to embed: weights, tokenizer and sentence-transformers pipeline settings.
pub struct Embedder {
    model: Box<dyn EncoderModel>,
    /// sentence-transformers `Dense` modules, run on each pooled vector in order.
    dense: Vec<Dense>,
    tokenizer: TextTokenizer,
    config: SentenceTransformerConfig,
    dir: PathBuf,
    quantization: Quantization,
    backed_off: BackOff,
}

impl Embedder {
    /// Loads a resolved model folder (see [`crate::resolve_model`]).
    pub fn load(dir: &Path, options: &EmbedderOptions) -> Result<Self> {
        let mut config = SentenceTransformerConfig::read(dir)?;
        if let Some(pooling) = options.pooling {
            config.pooling = pooling;
        }
        let load_options = LoadOptions {
            // Vocabulary logits magnify the half-precision panels' rounding: on the tiny
            // SPLADE fixture, short inputs came out up to 8e-3 from transformers with them
            // and 7e-6 without (`/embed_sparse`, 1 and 8 texts), so SPLADE stays in f32.
            few_row_kernels: options.few_row_kernels && config.pooling != Pooling::Splade,
            quantization: options.quantization,
            masked_lm_head: config.pooling == Pooling::Splade,
            // `load_model_with` resolves it (`auto`) and opens a GPU before reading weights.
            device: options.device,
        };
        // The tokenizer is parsed on a second thread while the weights load: a command-line
        // search waits on both before its one query.
        let (model, parsed) = std::thread::scope(|scope| {
            let parsed = scope.spawn(|| ParsedTokenizer::read(dir));
            let model = load_model_with(dir, load_options);
            let parsed = parsed
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (model, parsed)
        });
        let (model, parsed) = (model?, parsed?);
        let max_length = options
            .max_length
            .or(config.max_seq_length)
            .unwrap_or(usize::MAX)
            .min(model.max_positions());
        if max_length < 2 {
            return Err(EmbedError::MaxLength(max_length));
        }
        let tokenizer = TextTokenizer::with_max_length(parsed, max_length)?;
        let mut width = model.hidden_size();
        let mut dense = Vec::with_capacity(config.dense.len());
        for spec in &config.dense {
            if spec.in_features != width {
                return Err(EmbedError::Config {
                    path: spec.dir.join("config.json"),
                    message: format!(
                        "field `in_features` is {}, but the vectors reaching this module have {width} dimensions",
                        spec.in_features
                    ),
                });
            }
            width = spec.out_features;
            dense.push(Dense::load(spec)?);
        }
        let backed_off = BackOff::new(model.token_budget());
        Ok(Embedder {
            model,
            dense,
            tokenizer,
            config,
            dir: dir.to_path_buf(),
            quantization: options.quantization,
            backed_off,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number format the dense layers run in.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// Width of the vectors before any Matryoshka truncation.
    /// Width of the vectors handed out: the model's hidden size, or the last `Dense` module's.
    pub fn dimension(&self) -> usize {
        self.dense
            .last()
            .map_or(self.model.hidden_size(), Dense::out_features)
    }

    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    pub fn config(&self) -> &SentenceTransformerConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// One vector per text, in input order.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        self.embed_with_progress(texts, options, |_| {})
    }

    /// Like [`Embedder::embed`], calling `progress` with the number of texts embedded in each
    /// forward pass as it finishes.
    pub fn embed_with_progress<S, P>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        progress: P,
    ) -> Result<Vec<Vec<f32>>>
    where
        S: AsRef<str>,
        P: Fn(usize),
    {
        self.embed_until(texts, options, |done| {
            progress(done);
            ControlFlow::Continue(())
        })
    }

    /// Like [`Embedder::embed_with_progress`], but `hook` can stop the job between two forward
    /// passes ([`EmbedError::Interrupted`]): how a front end honours Ctrl-C within one pass.
    pub fn embed_until<S, H>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        hook: H,
    ) -> Result<Vec<Vec<f32>>>
    where
        S: AsRef<str>,
        H: FnMut(usize) -> ControlFlow<()>,
    {
        Ok(self.embed_counted(texts, options, hook)?.0)
    }

    /// [`Embedder::embed_until`], with the number of tokens the model ran (after truncation,
    /// prompts and special tokens included): what a caller's throughput is counted in.
    pub fn embed_counted<S, H>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        hook: H,
    ) -> Result<(Vec<Vec<f32>>, usize)>
    where
        S: AsRef<str>,
        H: FnMut(usize) -> ControlFlow<()>,
    {
        let output = self.output_options(options)?;
        let budget = BatchBudget::from(options);
        let mut hook = hook;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        // A round of texts is tokenised, then embedded in length-sorted batches: the hook is
        // heard at least once per round, so a stop never waits for a whole large input to be
        // tokenised, and token ids are held for one round only.
        for round in texts.chunks(TEXTS_PER_ROUND) {
            let encoded = self.encode(round, options)?;
            let sequences: Vec<&[u32]> = encoded.token_ids.iter().map(Vec::as_slice).collect();
            tokens += sequences.iter().map(|s| s.len()).sum::<usize>();
            let setups = vec![encoded.setup; sequences.len()];
            let mut pooled = self.embed_sequences(&sequences, &setups, budget, &mut hook)?;
            for vector in &mut pooled {
                output.apply(vector);
            }
            vectors.append(&mut pooled);
        }
        Ok((vectors, tokens))
    }

    /// Tokenises texts as `options` ask (prompt, truncation side): the first half of
    /// [`Embedder::embed`], for callers that batch sequences from many requests together.
    pub fn encode<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<EncodedTexts> {
        let prompt = self.prompt_text(options)?;
        // Cut before the prompt and lowercasing copy the text (see `within_reach`).
        let (prepared, cut): (Vec<Cow<'_, str>>, Vec<bool>) = texts
            .iter()
            .map(|text| {
                let (within, cut) = self
                    .tokenizer
                    .within_reach(text.as_ref(), options.truncation);
                (self.prepare_text(prompt, within), cut)
            })
            .unzip();
        let encodings = self
            .tokenizer
            .encode_batch_from(&prepared, options.truncation)?;
        let pooling_skip = match prompt {
            Some(prompt) if !self.config.include_prompt && !prompt.is_empty() => self
                .tokenizer
                .prompt_length(&self.prepare_text(None, prompt))?,
            _ => 0,
        };
        let (token_ids, truncated): (Vec<_>, Vec<bool>) = encodings.into_iter().unzip();
        let truncated = truncated
            .into_iter()
            .zip(cut)
            .map(|(a, b)| a || b)
            .collect();
        Ok(EncodedTexts {
            token_ids,
            setup: SequenceSetup {
                pooling_skip,
                adapter: self.adapter(options)?,
            },
            truncated,
        })
    }

    /// Like [`Embedder::encode`] for inputs that may be token ids. Ids are the model's input
    /// exactly as sent: checked against the vocabulary, cut at the max length like text (at
    /// `options.truncation`'s side), never given a prompt, so a request that mixes them with a
    /// prompt is refused. Any input without tokens is refused too.
    pub fn encode_inputs(
        &self,
        inputs: &[EmbedInput],
        options: &EmbedOptions,
    ) -> Result<EncodedTexts> {
        let texts: Vec<&str> = inputs
            .iter()
            .filter_map(|input| match input {
                EmbedInput::Text(text) => Some(text.as_str()),
                EmbedInput::TokenIds(_) => None,
            })
            .collect();
        let encoded = if texts.len() == inputs.len() {
            self.encode(&texts, options)?
        } else {
            if let Some(prompt) = self.prompt_text(options)?.filter(|p| !p.is_empty()) {
                return Err(EmbedError::PromptWithTokenIds {
                    prompt: options
                        .prompt_name
                        .clone()
                        .or_else(|| self.config.default_prompt_name.clone())
                        .map_or_else(|| format!("{prompt:?}"), |name| format!("`{name}`")),
                });
            }
            let mut encoded_texts = self.encode(&texts, options)?;
            let mut from_texts = encoded_texts
                .token_ids
                .drain(..)
                .zip(encoded_texts.truncated.drain(..));
            let vocab = self.vocab_size();
            let max_length = self.max_length();
            let mut token_ids = Vec::with_capacity(inputs.len());
            let mut truncated = Vec::with_capacity(inputs.len());
            for (index, input) in inputs.iter().enumerate() {
                let (ids, cut) = match input {
                    EmbedInput::Text(_) => from_texts.next().unwrap_or_default(),
                    EmbedInput::TokenIds(ids) => {
                        check_token_ids(index, ids, vocab)?;
                        let cut = ids.len() > max_length;
                        let kept = match options.truncation {
                            _ if !cut => &ids[..],
                            TruncationSide::Right => &ids[..max_length],
                            TruncationSide::Left => &ids[ids.len() - max_length..],
                        };
                        (kept.to_vec(), cut)
                    }
                };
                token_ids.push(ids);
                truncated.push(cut);
            }
            EncodedTexts {
                token_ids,
                setup: encoded_texts.setup,
                truncated,
            }
        };
        if let Some(input) = encoded.token_ids.iter().position(Vec::is_empty) {
            return Err(EmbedError::NoTokens { input });
        }
        Ok(encoded)
    }

    /// Runs the model over token sequences and pools each into one vector of
    /// [`Embedder::dimension`] values, neither truncated nor normalised (see
    /// [`OutputOptions::apply`]). Sequence `i` runs as `setups[i]` says (prompt tokens left out
    /// of pooling, task adapter). `hook` hears how many sequences each forward pass finished,
    /// and stops the job when it breaks ([`EmbedError::Interrupted`]).
    pub fn embed_sequences<H: FnMut(usize) -> ControlFlow<()>>(
        &self,
        sequences: &[&[u32]],
        setups: &[SequenceSetup],
        budget: BatchBudget,
        hook: H,
    ) -> Result<Vec<Vec<f32>>> {
        let pooling = self.config.pooling;
        run_batches(
            &self.backed_off,
            sequences,
            setups,
            budget,
            hook,
            |batch, skips| {
                let pooled = self.model.embed(batch, pooling, skips)?;
                Ok(if self.dense.is_empty() {
                    pooled
                } else {
                    self.project(pooled)
                })
            },
        )
    }

    /// The model's last hidden state of every token of each sequence (prompt and special
    /// tokens included), unpooled: the input of late-interaction search. Rows have
    /// [`Embedder::hidden_size`] values; no `Dense` module or normalisation applies.
    pub fn token_states(
        &self,
        sequences: &[&[u32]],
        setups: &[SequenceSetup],
        budget: BatchBudget,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let width = self.model.hidden_size();
        let unstopped = |_| ControlFlow::Continue(());
        run_batches(
            &self.backed_off,
            sequences,
            setups,
            budget,
            unstopped,
            |batch, _| {
                let hidden = self.model.forward(batch)?;
                Ok(batch
                    .ranges()
                    .map(|range| {
                        hidden[range.start * width..range.end * width]
                            .chunks_exact(width)
                            .map(<[f32]>::to_vec)
                            .collect()
                    })
                    .collect())
            },
        )
    }

    /// Width of the model's hidden states (what [`Embedder::token_states`] gives).
    pub fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }

    /// Ids the model's embedding table has: every token id it can run is below this.
    pub fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    /// Pooled vectors through the `Dense` modules, as one matrix per module.
    fn project(&self, pooled: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let rows = pooled.len();
        let mut matrix: Vec<f32> = pooled.into_iter().flatten().collect();
        for dense in &self.dense {
            matrix = dense.forward(&matrix, rows);
        }
        let width = self.dimension();
        matrix.chunks_exact(width).map(<[f32]>::to_vec).collect()
    }

    /// The text the tokenizer sees for `text` under `options` (with the prompt, lowercased if
    /// the model asks for it), and the way from its byte offsets back to `text`'s.
    pub fn input_text(&self, text: &str, options: &EmbedOptions) -> Result<InputText> {
        let prompt = self.prompt_text(options)?;
        let prepared = self.prepare_text(prompt, text).into_owned();
        Ok(InputText::new(
            prepared,
            prompt.unwrap_or(""),
            text,
            self.config.do_lower_case,
        ))
    }

    /// Matryoshka width and normalisation for `options`, checked against this model.
    pub fn output_options(&self, options: &EmbedOptions) -> Result<OutputOptions> {
        Ok(OutputOptions {
            dimensions: self.output_dimensions(options)?,
            normalize: options.normalize.unwrap_or(self.config.normalize),
        })
    }

    fn output_dimensions(&self, options: &EmbedOptions) -> Result<usize> {
        let available = self.dimension();
        match options.dimensions {
            Some(requested) if requested == 0 || requested > available => {
                Err(EmbedError::Dimensions {
                    requested,
                    available,
                })
            }
            Some(requested) => Ok(requested),
            None => Ok(available),
        }
    }

    /// Names of the task adapters the model has (empty for most models).
    pub fn tasks(&self) -> &[String] {
        self.model.adapters()
    }

    /// The adapter `options` select: the named task, else the one named like the prompt.
    fn adapter(&self, options: &EmbedOptions) -> Result<Option<u16>> {
        let tasks = self.tasks();
        let position = |name: &str| tasks.iter().position(|task| task == name);
        if let Some(task) = &options.task {
            return match position(task) {
                Some(index) => Ok(u16::try_from(index).ok()),
                None => Err(EmbedError::UnknownTask {
                    name: task.clone(),
                    available: if tasks.is_empty() {
                        "none (this model has no task adapters)".into()
                    } else {
                        tasks.join(", ")
                    },
                }),
            };
        }
        let prompt_name = options
            .prompt_name
            .as_ref()
            .or(self.config.default_prompt_name.as_ref());
        Ok(prompt_name
            .and_then(|name| position(name))
            .and_then(|index| u16::try_from(index).ok()))
    }

    fn prompt_text<'a>(&'a self, options: &'a EmbedOptions) -> Result<Option<&'a str>> {
        if let Some(prompt) = &options.prompt {
            return Ok(Some(prompt));
        }
        match options
            .prompt_name
            .as_ref()
            .or(self.config.default_prompt_name.as_ref())
        {
            Some(name) => self.config.prompt(name).map(Some),
            None => Ok(None),
        }
    }

    /// The text the tokenizer sees: prompt first, lowercased if the model asks for it. Borrowed
    /// unchanged when neither applies, so plain inputs are not copied.
    fn prepare_text<'t>(&self, prompt: Option<&str>, text: &'t str) -> Cow<'t, str> {
        let joined = match prompt {
            Some(prompt) => Cow::Owned(format!("{prompt}{text}")),
            None => Cow::Borrowed(text),
        };
        if self.config.do_lower_case {
            Cow::Owned(joined.to_lowercase())
        } else {
            joined
        }
    }
}

/// What the tokenizer sees for a caller's text, with the way back to the caller's offsets.
#[derive(Debug, Clone)]
pub struct InputText {
    /// The prompt, then the caller's text, lowercased when the model asks for it.
    pub text: String,
    /// Where the caller's text begins in `text`.
    start: usize,
    /// For each character of the caller's text: where its (lowercased) form begins in `text`,
    /// and where it begins in the caller's text. Lowercasing can change a character's length
    /// (`ẞ` is 3 bytes, `ß` 2), so no single shift maps one onto the other.
    origins: Vec<(usize, usize)>,
    original_len: usize,
}

impl InputText {
    fn new(text: String, prompt: &str, original: &str, lowercased: bool) -> InputText {
        let width = |c: char| -> usize {
            if lowercased {
                c.to_lowercase().map(char::len_utf8).sum()
            } else {
                c.len_utf8()
            }
        };
        let start: usize = prompt.chars().map(width).sum();
        let mut at = start;
        let origins = original
            .char_indices()
            .map(|(offset, c)| {
                let origin = (at, offset);
                at += width(c);
                origin
            })
            .collect();
        InputText {
            text,
            start,
            origins,
            original_len: original.len(),
        }
    }

    /// The caller's byte offset for byte `offset` of [`InputText::text`]: `None` inside the
    /// prompt; an offset inside the lowercased form of one character maps to that character.
    pub fn original_offset(&self, offset: usize) -> Option<usize> {
        if offset < self.start {
            return None;
        }
        if offset >= self.text.len() {
            return Some(self.original_len);
        }
        let next = self.origins.partition_point(|&(at, _)| at <= offset);
        let (_, original) = self.origins.get(next.checked_sub(1)?)?;
        Some(*original)
    }
}

/// Whether every value of a model output is a number.
trait Finite {
    fn is_finite(&self) -> bool;
}

impl Finite for Vec<f32> {
    fn is_finite(&self) -> bool {
        self.iter().all(|x| x.is_finite())
    }
}

impl Finite for Vec<Vec<f32>> {
    fn is_finite(&self) -> bool {
        self.iter().all(Finite::is_finite)
    }
}

/// Runs sequences through the model in token-budgeted batches; `run` turns each batch into
/// one output per sequence, which comes back in input order. Any non-finite value fails
/// the call: NaN (`null` in JSON) is never handed out as a value.
///
/// A device that runs out of memory on a batch gets it again in smaller parts, and `backed_off`
/// keeps the smaller budget for the embedder's later calls: nothing is lost, and the
/// first back-off is reported once.
fn run_batches<T, H, R>(
    backed_off: &BackOff,
    sequences: &[&[u32]],
    setups: &[SequenceSetup],
    budget: BatchBudget,
    mut hook: H,
    mut run: R,
) -> Result<Vec<T>>
where
    T: Default + Clone + Finite,
    H: FnMut(usize) -> ControlFlow<()>,
    R: FnMut(&PackedBatch, &[usize]) -> Result<Vec<T>>,
{
    let mut outputs: Vec<T> = vec![T::default(); sequences.len()];
    let mut budget = backed_off.limit(budget);
    let mut pending: VecDeque<Vec<usize>> =
        plan_batches(sequences, 0..sequences.len(), budget).into();
    while let Some(batch_indices) = pending.pop_front() {
        let batch_sequences: Vec<&[u32]> = batch_indices.iter().map(|&i| sequences[i]).collect();
        let batch_skips: Vec<usize> = batch_indices
            .iter()
            .map(|&i| setups[i].pooling_skip)
            .collect();
        let mut batch = PackedBatch::from_sequences(&batch_sequences);
        if batch_indices.iter().any(|&i| setups[i].adapter.is_some()) {
            batch.adapters = batch_indices.iter().map(|&i| setups[i].adapter).collect();
        }
        let finished = match run(&batch, &batch_skips) {
            Err(EmbedError::Runtime(error)) if error.is_out_of_memory() => {
                let Some(smaller) = backed_off.shrink(budget, &batch, &error) else {
                    return Err(error.into());
                };
                budget = smaller;
                let left = batch_indices.into_iter().chain(pending.drain(..).flatten());
                pending = plan_batches(sequences, left, budget).into();
                continue;
            }
            other => other?,
        };
        for (index, output) in batch_indices.into_iter().zip(finished) {
            if !output.is_finite() {
                return Err(EmbedError::NonFiniteOutput { input: index });
            }
            outputs[index] = output;
        }
        if hook(batch_sequences.len()).is_break() {
            return Err(EmbedError::Interrupted);
        }
    }
    Ok(outputs)
}

/// The batch size a device's memory allows: what the model's device says it holds
/// ([`EncoderModel::token_budget`]), then what its out-of-memory errors teach. Pipelines that
/// embed on GPUs size batches to the card and back off by a quarter on such an error.
#[derive(Debug)]
struct BackOff {
    /// At most this many tokens in one batch.
    max_tokens: AtomicUsize,
    reported: AtomicBool,
}

impl BackOff {
    fn new(device_budget: Option<usize>) -> Self {
        BackOff {
            max_tokens: AtomicUsize::new(device_budget.unwrap_or(usize::MAX)),
            reported: AtomicBool::new(false),
        }
    }

    fn limit(&self, budget: BatchBudget) -> BatchBudget {
        BatchBudget {
            max_tokens: budget
                .max_tokens
                .min(self.max_tokens.load(Ordering::Relaxed)),
            ..budget
        }
    }

    /// The budget to run `failed`'s sequences again with: a quarter fewer tokens than it
    /// held, so it splits. `None` when it is one sequence, which no smaller batch holds.
    fn shrink(
        &self,
        budget: BatchBudget,
        failed: &PackedBatch,
        error: &quiver_runtime::RuntimeError,
    ) -> Option<BatchBudget> {
        if failed.num_sequences() < 2 {
            return None;
        }
        let max_tokens = failed.num_tokens() * 3 / 4;
        self.max_tokens.fetch_min(max_tokens, Ordering::Relaxed);
        if !self.reported.swap(true, Ordering::Relaxed) {
            tracing::warn!("{error}: running it again in smaller batches, of at most {max_tokens} tokens from now on");
        }
        Some(BatchBudget {
            max_tokens,
            ..budget
        })
    }
}

/// Groups the sequences at `indices` into forward passes: longest first, so each batch holds
/// sequences of similar length, bounded by a token budget and a sequence count.
pub(crate) fn plan_batches(
    token_ids: &[&[u32]],
    indices: impl IntoIterator<Item = usize>,
    budget: BatchBudget,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = indices.into_iter().collect();
    order.sort_by_key(|&i| std::cmp::Reverse(token_ids[i].len()));
    let max_sequences = budget.max_sequences.max(1);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    for index in order {
        let len = token_ids[index].len();
        let full = current.len() >= max_sequences || tokens + len > budget.max_tokens;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        current.push(index);
        tokens += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_runtime::RuntimeError;

    #[test]
    fn input_offsets_survive_lowercasing_that_changes_lengths() {
        let original = "ẞig İstanbul CAFÉ 東京 Straße";
        let prompt = "Query: ";
        let text = format!("{prompt}{original}").to_lowercase();
        let input = InputText::new(text.clone(), prompt, original, true);
        assert_eq!(input.original_offset(0), None);
        assert_eq!(input.original_offset(prompt.len() - 1), None);
        // Every word of the lowercased text maps back onto the same word of the original.
        for word in ["ßig", "stanbul", "café", "東京", "straße"] {
            let at = text.find(word).expect(word);
            let start = input.original_offset(at).unwrap();
            let stop = input.original_offset(at + word.len()).unwrap();
            let back = original[start..stop].to_lowercase();
            assert!(
                back.starts_with(word.chars().next().unwrap()),
                "{word}: {back}"
            );
            assert_eq!(back.chars().count(), word.chars().count(), "{word}: {back}");
        }
        assert_eq!(input.original_offset(text.len()), Some(original.len()));
        // `İ` lowercases to two characters (`i` and a combining dot): both map back to it.
        let dotted = text.find('\u{307}').unwrap();
        let capital = original.find('İ').unwrap();
        assert_eq!(input.original_offset(dotted), Some(capital));
        assert_eq!(input.original_offset(dotted - 1), Some(capital));
        // Without lowercasing: a plain shift by the prompt.
        let plain = InputText::new(format!("{prompt}{original}"), prompt, original, false);
        assert_eq!(plain.original_offset(prompt.len() + 4), Some(4));
    }

    /// A device that holds at most 150 tokens: batches planned for 400 run out of memory, run
    /// again smaller, and every sequence's output still comes back in place; the budget learnt
    /// holds for the next call, and one sequence too long for the device fails as it must.
    #[test]
    fn out_of_memory_shrinks_the_batch_and_loses_nothing() {
        let lengths = [40usize, 90, 10, 60, 30, 70, 20, 50];
        let ids: Vec<Vec<u32>> = lengths
            .iter()
            .map(|&n| vec![u32::try_from(n).unwrap(); n])
            .collect();
        let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let setups = vec![SequenceSetup::default(); sequences.len()];
        let budget = BatchBudget {
            max_sequences: 64,
            max_tokens: 400,
        };
        let device = |batch: &PackedBatch, _: &[usize]| -> Result<Vec<Vec<f32>>> {
            if batch.num_tokens() > 150 {
                return Err(RuntimeError::OutOfMemory {
                    device: "test".into(),
                    tokens: batch.num_tokens(),
                }
                .into());
            }
            Ok(batch
                .ranges()
                .map(|range| vec![range.len() as f32])
                .collect())
        };
        let backed_off = BackOff::new(None);
        let mut passes = 0;
        let counted = |n| {
            passes += n;
            ControlFlow::Continue(())
        };
        let outputs = run_batches(&backed_off, &sequences, &setups, budget, counted, device)
            .expect("smaller batches fit");
        let expected: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![n as f32]).collect();
        assert_eq!(outputs, expected);
        assert_eq!(passes, lengths.len(), "each sequence ran once");
        let learnt = backed_off.limit(budget).max_tokens;
        assert!(learnt <= 150 * 4 / 3, "{learnt}");

        let mut failures = 0;
        let counting_device = |batch: &PackedBatch, skips: &[usize]| {
            let result = device(batch, skips);
            failures += usize::from(result.is_err());
            result
        };
        let unstopped = |_| ControlFlow::Continue(());
        run_batches(
            &backed_off,
            &sequences,
            &setups,
            budget,
            unstopped,
            counting_device,
        )
        .expect("the learnt budget fits");
        assert!(
            failures <= 1,
            "{failures} out-of-memory errors on the second call"
        );

        // A device that says what it holds caps the first batches already.
        assert_eq!(BackOff::new(Some(120)).limit(budget).max_tokens, 120);
        assert_eq!(BackOff::new(None).limit(budget).max_tokens, 400);

        let long = vec![7u32; 200];
        let error = run_batches(
            &backed_off,
            &[&long[..]],
            &setups[..1],
            budget,
            unstopped,
            device,
        )
        .unwrap_err();
        assert!(
            matches!(&error, EmbedError::Runtime(e) if e.is_out_of_memory()),
            "{error}"
        );
    }

    #[test]
    fn batches_respect_token_budget_and_count() {
        let lengths = [5usize, 100, 3, 100, 50, 1];
        let ids: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![0; n]).collect();
        let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let budget = BatchBudget {
            max_sequences: 2,
            max_tokens: 150,
        };
        let batches = plan_batches(&sequences, 0..sequences.len(), budget);
        assert_eq!(batches, vec![vec![1], vec![3, 4], vec![0, 2], vec![5]]);
        let all: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(all, lengths.len());
    }
}
