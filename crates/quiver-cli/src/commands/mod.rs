pub mod embed;
pub mod eval;
pub mod export;
pub mod import;
pub mod index;
pub mod mcp;
pub mod models;
pub mod search;
pub mod serve;
pub mod status;
pub mod watch;

/// `--device`'s help, one text for every command that loads a model.
pub const DEVICE_HELP: &str = "Where the model runs: cpu; cuda, or cuda:N for card N \
(a build with the `cuda` or `cuda-13` feature); auto: the first GPU where this build has the CUDA \
backend and a card opens, else the CPU. A GPU named is never replaced by the CPU";

/// `--keyword-weight`: a weight hybrid search can use, or clap's error naming the flag.
fn keyword_weight(text: &str) -> Result<f64, String> {
    text.parse()
        .ok()
        .filter(|&weight| quiver_index::is_keyword_weight(weight))
        .ok_or_else(|| format!("{text:?} is not a keyword weight: give a number, 0 or more"))
}
