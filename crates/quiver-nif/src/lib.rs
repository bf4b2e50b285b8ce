//! `Elixir.Quiver.Native`: the engine's library calls made callable from Elixir (the `quiver`
//! Mix project under `elixir/`).
//!
//! What it does: loads a model into a [`quiver_engine::Engine`] held by a resource that every
//! Erlang process may share; embeds through [`Engine::embed_blocking`], so concurrent callers'
//! texts are merged into the engine's token-budgeted batches, as `quiver serve` merges HTTP
//! requests; searches an index with `quiver_index::search`, as `quiver search` does.
//! What it does not: validate Elixir-side arguments (the `Quiver` module does, and gives
//! `{:error, reason}` for wrong types) or hold any pipeline logic of its own.
//!
//! Every call returns `{:ok, value}` or `{:error, reason}`: a Rust panic is caught here and
//! becomes `{:error, "internal error: ..."}`, never an exception in the caller.

use quiver_embed::{resolve_model, EmbedOptions, Embedder, EmbedderOptions, Quantization};
use quiver_engine::{BatchSettings, EmbedRequest, Engine, NoObserver};
use quiver_index::{recorded_model_id, search, SearchFilter, SearchMode, SearchRequest, Store};
use rustler::{Binary, Encoder, Env, NifMap, OwnedBinary, ResourceArc, Term};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// A loaded model and its model thread, shared by every process holding the handle.
struct LoadedModel {
    engine: Engine,
    /// How an index records this model ([`recorded_model_id`]).
    model_id: String,
}

/// The resource behind `Quiver.load_model/2`'s handle. Unwind-safe as rustler requires of what
/// a NIF returns: a panic in a call cannot leave the model half-changed, since the engine's
/// state lives on its own thread and is reached only through channels.
pub struct ModelHandle(AssertUnwindSafe<Arc<LoadedModel>>);

#[rustler::resource_impl]
impl rustler::Resource for ModelHandle {}

type Reply<T> = Result<T, String>;

/// Runs `work`, turning a panic into an error reply.
fn guarded<T>(work: impl FnOnce() -> Reply<T>) -> Reply<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(format!("internal error: {message}"))
    })
}

#[derive(NifMap)]
struct LoadOptions {
    /// `"none"`, `"f32"`, `"int8"` or `"bf16"`; `nil`: the default
    /// ([`Quantization::for_this_machine`]).
    quantize: Option<String>,
    max_length: Option<usize>,
}

fn load(spec: &str, quantization: Quantization, max_length: Option<usize>) -> Reply<LoadedModel> {
    let dir = resolve_model(spec).map_err(|e| e.to_string())?;
    let embedder = Embedder::load(
        &dir,
        &EmbedderOptions {
            max_length,
            quantization,
            ..EmbedderOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let settings = BatchSettings {
        max_batch_tokens: 8192,
        max_batch_sequences: 64,
        // Many processes may call at once; a request waits rather than being refused.
        max_queued_requests: 4096,
        max_wait: std::time::Duration::ZERO,
    };
    let (engine, _thread) = Engine::start(Arc::new(embedder), settings, Arc::new(NoObserver))
        .map_err(|e| format!("starting the model thread: {e}"))?;
    Ok(LoadedModel {
        engine,
        model_id: recorded_model_id(spec),
    })
}

/// Loading reads and converts the weights: CPU work, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn load_model(spec: String, options: LoadOptions) -> Reply<ResourceArc<ModelHandle>> {
    guarded(|| {
        let quantization = match options.quantize.as_deref() {
            None => Quantization::for_this_machine(),
            Some("f32") => Quantization::None,
            Some(name) => Quantization::from_name(name)
                .ok_or_else(|| format!("unknown quantize {name:?}: use none, f32, int8 or bf16"))?,
        };
        let model = load(&spec, quantization, options.max_length)?;
        Ok(ResourceArc::new(ModelHandle(AssertUnwindSafe(Arc::new(
            model,
        )))))
    })
}

#[derive(NifMap)]
struct EmbedArgs {
    prompt_name: Option<String>,
    prompt: Option<String>,
    dimensions: Option<usize>,
    normalize: Option<bool>,
    /// Cut an over-long text at the model's length instead of refusing it.
    truncate: bool,
    /// Each vector as a binary of little-endian f32 instead of a list of floats.
    binary: bool,
}

/// The caller mostly waits here for the engine's model thread, which does the CPU work and
/// merges concurrent callers' texts: a dirty I/O scheduler (ten by default), so that more
/// callers than cores can queue into one batch without holding the dirty CPU schedulers.
#[rustler::nif(schedule = "DirtyIo")]
fn embed_batch<'a>(
    env: Env<'a>,
    model: ResourceArc<ModelHandle>,
    texts: Vec<Binary<'a>>,
    options: EmbedArgs,
) -> Reply<Term<'a>> {
    guarded(|| {
        let texts = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                std::str::from_utf8(text.as_slice())
                    .map_err(|e| format!("text {i} is not valid UTF-8: {e}"))
            })
            .collect::<Reply<Vec<&str>>>()?;
        let request = EmbedRequest {
            options: EmbedOptions {
                prompt_name: options.prompt_name,
                prompt: options.prompt,
                dimensions: options.dimensions,
                normalize: options.normalize,
                ..EmbedOptions::default()
            },
            truncate: options.truncate,
        };
        let embedded = model
            .0
            .engine
            .embed_blocking(&texts, &request)
            .map_err(|e| e.to_string())?;
        if !options.binary {
            return Ok(embedded.vectors.encode(env));
        }
        let binaries = embedded
            .vectors
            .iter()
            .map(|vector| {
                let mut binary = OwnedBinary::new(vector.len() * 4)
                    .ok_or("out of memory for the vectors' binary")?;
                for (slot, value) in binary.as_mut_slice().chunks_exact_mut(4).zip(vector) {
                    slot.copy_from_slice(&value.to_le_bytes());
                }
                Ok(binary.release(env))
            })
            .collect::<Reply<Vec<Binary>>>()?;
        Ok(binaries.encode(env))
    })
}

#[derive(NifMap)]
struct SearchArgs {
    k: usize,
    /// `"vector"`, `"keyword"` or `"hybrid"`.
    mode: String,
    languages: Vec<String>,
    /// A glob the hit's path must match.
    path: Option<String>,
    /// The index's model, already loaded; `None`: loaded once per index model and kept.
    model: Option<ResourceArc<ModelHandle>>,
}

#[derive(NifMap)]
struct Hit {
    score: f64,
    chunk_id: String,
    path: String,
    language: String,
    symbol: Option<String>,
    kind: Option<String>,
    start_line: usize,
    end_line: usize,
    text: String,
    vector_rank: Option<usize>,
    keyword_rank: Option<usize>,
}

/// Models loaded for searches that named none, by the model id and number format indexes
/// record: a second search of the same index does not load its model again.
fn index_model(model_id: &str, quantization: Quantization) -> Reply<Arc<LoadedModel>> {
    static MODELS: OnceLock<Mutex<HashMap<String, Arc<LoadedModel>>>> = OnceLock::new();
    let key = format!("{model_id} {}", quantization.name());
    let models = MODELS.get_or_init(Mutex::default);
    if let Some(model) = models.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(model.clone());
    }
    let model = Arc::new(load(model_id, quantization, None)?);
    models
        .lock()
        .map_err(|e| e.to_string())?
        .insert(key, model.clone());
    Ok(model)
}

/// Reads the index and ranks: CPU work, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn search_index(index: String, query: String, options: SearchArgs) -> Reply<Vec<Hit>> {
    guarded(|| {
        let mode: SearchMode = options.mode.parse()?;
        let filter = SearchFilter::from_names(&options.languages, options.path.as_deref())
            .map_err(|e| e.to_string())?;
        let store = Store::open(Path::new(&index)).map_err(|e| e.to_string())?;
        let settings = store.indexed_settings().map_err(|e| e.to_string())?;
        let query_vector = match mode {
            SearchMode::Keyword => None,
            _ => {
                let model = match &options.model {
                    Some(handle) if handle.0.model_id != settings.model => {
                        return Err(format!(
                            "the index at {index} was made with {}; this model is {}",
                            settings.model, handle.0.model_id
                        ))
                    }
                    Some(handle) => handle.0 .0.clone(),
                    None => index_model(&settings.model, settings.quantization)?,
                };
                let request = EmbedRequest {
                    options: settings.query_options(),
                    truncate: true,
                };
                let mut embedded = model
                    .engine
                    .embed_blocking(&[query.as_str()], &request)
                    .map_err(|e| e.to_string())?;
                embedded.vectors.pop()
            }
        };
        let hits = search(
            &store,
            &SearchRequest {
                query: &query,
                query_vector: query_vector.as_deref(),
                mode,
                k: options.k,
                filter: &filter,
                keyword_weight: settings.keyword_weight,
                priors: true,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(hits
            .into_iter()
            .map(|hit| Hit {
                score: hit.score,
                chunk_id: hit.chunk.chunk_id,
                path: hit.chunk.path,
                language: hit.chunk.language,
                symbol: hit.chunk.symbol,
                kind: hit.chunk.kind,
                start_line: hit.chunk.start_line,
                end_line: hit.chunk.end_line,
                text: hit.chunk.text,
                vector_rank: hit.vector_rank,
                keyword_rank: hit.keyword_rank,
            })
            .collect())
    })
}

rustler::init!("Elixir.Quiver.Native");
