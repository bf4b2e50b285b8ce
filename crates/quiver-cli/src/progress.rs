//! Progress bars: shown with rate and ETA when standard error is a terminal, hidden when piped.

use indicatif::{ProgressBar, ProgressStyle};
use quiver_index::IndexProgress;
use std::cell::Cell;
use std::io::IsTerminal;

/// A bar counting `total` items, drawn with `template`.
pub fn bar(total: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// An index run: files done with rate and ETA, chunks embedded so far as the message. Each run
/// (`files_found`) starts the bar again, so one bar serves the several indexes of `quiver eval`.
pub struct IndexBar {
    bar: ProgressBar,
    embedded: Cell<usize>,
}

impl IndexBar {
    pub fn new() -> Self {
        IndexBar {
            bar: bar(
                0,
                "{spinner} indexing {bar:30} {pos}/{len} files  {per_sec}  ETA {eta}  {msg}",
            ),
            embedded: Cell::new(0),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl IndexProgress for IndexBar {
    fn files_found(&self, total: usize) {
        self.bar.set_position(0);
        self.bar.set_length(total as u64);
        self.embedded.set(0);
        self.bar.set_message("");
    }
    fn files_done(&self, count: usize) {
        self.bar.inc(count as u64);
    }
    fn chunks_embedded(&self, count: usize) {
        self.embedded.set(self.embedded.get() + count);
        self.bar
            .set_message(format!("{} chunks embedded", self.embedded.get()));
    }
}
