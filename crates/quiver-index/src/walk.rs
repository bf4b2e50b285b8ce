//! Which files of a tree get indexed: the walk and the default skip rules.
//!
//! The walk honours `.gitignore` (in or out of a git repository), `.ignore` and `.quiverignore`
//! (same syntax, `!` negation included), never follows a symlink, and never enters `.git`,
//! `.hg`, `.svn` or the index's own directory. On top of that it skips, and counts, files that
//! are not worth embedding or must not leave the machine: binaries, files over the size cap,
//! lock files, generated and vendored code, and secrets.

use ignore::WalkBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// Why a file was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    Binary,
    TooLarge,
    Lockfile,
    Generated,
    Vendored,
    Secret,
    Data,
    Symlink,
    Unreadable,
}

impl SkipReason {
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Binary => "binary",
            SkipReason::TooLarge => "too_large",
            SkipReason::Lockfile => "lockfile",
            SkipReason::Generated => "generated",
            SkipReason::Vendored => "vendored",
            SkipReason::Secret => "secret",
            SkipReason::Data => "data",
            SkipReason::Symlink => "symlink",
            SkipReason::Unreadable => "unreadable",
        }
    }
}

/// How many files (or, for vendored directories, directories) each rule left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts(pub BTreeMap<SkipReason, usize>);

impl SkipCounts {
    pub fn add(&mut self, reason: SkipReason) {
        *self.0.entry(reason).or_default() += 1;
    }

    pub fn get(&self, reason: SkipReason) -> usize {
        self.0.get(&reason).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Files larger than this are skipped unread.
    pub max_file_bytes: u64,
    /// Directory to leave out wherever it is (the index itself).
    pub exclude_dir: Option<PathBuf>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            max_file_bytes: 1 << 20,
            exclude_dir: None,
        }
    }
}

/// A file the walk kept, with what its metadata says.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the root, `/`-separated.
    pub relative: String,
    pub absolute: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

/// Lists the files under `root` that pass the name, size and ignore rules, sorted by path.
/// Content rules ([`content_skip`]) apply once a file is read.
pub fn discover(root: &Path, options: &WalkOptions) -> (Vec<SourceFile>, SkipCounts) {
    let skips = Arc::new(Mutex::new(SkipCounts::default()));
    let exclude = options.exclude_dir.clone();
    let dir_skips = Arc::clone(&skips);
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        .git_global(false)
        .add_custom_ignore_filename(".quiverignore")
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            if !entry.file_type().is_some_and(|t| t.is_dir()) || entry.depth() == 0 {
                return true;
            }
            let name = entry.file_name().to_string_lossy();
            if is_never_walked(&name) || exclude.as_deref() == Some(entry.path()) {
                return false;
            }
            if is_vendored_dir(&name) {
                if let Ok(mut counts) = dir_skips.lock() {
                    counts.add(SkipReason::Vendored);
                }
                return false;
            }
            true
        });
    let mut files = Vec::new();
    let mut counts = SkipCounts::default();
    for entry in builder.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!("skipping: {error}");
                counts.add(SkipReason::Unreadable);
                continue;
            }
        };
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_symlink() {
            counts.add(SkipReason::Symlink);
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let path = entry.path();
        let relative = relative_path(root, path);
        let file_name = entry.file_name().to_string_lossy();
        if let Some(reason) = name_skip(&file_name) {
            tracing::info!("skipping {relative}: {}", reason.name());
            counts.add(reason);
            continue;
        }
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(_) => {
                counts.add(SkipReason::Unreadable);
                continue;
            }
        };
        if metadata.len() > options.max_file_bytes {
            tracing::info!("skipping {relative}: {} bytes", metadata.len());
            counts.add(SkipReason::TooLarge);
            continue;
        }
        let mtime_ns = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        files.push(SourceFile {
            relative,
            absolute: path.to_path_buf(),
            size: metadata.len(),
            mtime_ns,
        });
    }
    if let Ok(dir_counts) = skips.lock() {
        for (reason, n) in &dir_counts.0 {
            *counts.0.entry(*reason).or_default() += n;
        }
    }
    (files, counts)
}

pub fn relative_path(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Directories the walk never enters: version control and indexes.
fn is_never_walked(name: &str) -> bool {
    matches!(name, ".git" | ".hg" | ".svn" | ".quiver")
}

/// Which changed paths under a root the walk could index, for a watcher deciding whether a
/// file-system event is worth a run: not under a directory the walk never enters or skips as
/// vendored, nor matched by the root's `.gitignore`, `.ignore` or `.quiverignore`. (Ignore
/// files deeper in the tree are honoured by the run itself; here they would only save a run.)
pub struct PathFilter {
    root: PathBuf,
    exclude_dir: Option<PathBuf>,
    ignored: ignore::gitignore::Gitignore,
}

impl PathFilter {
    pub fn new(root: &Path, options: &WalkOptions) -> PathFilter {
        let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
        for name in [".gitignore", ".ignore", ".quiverignore"] {
            let file = root.join(name);
            if file.is_file() {
                if let Some(error) = builder.add(&file) {
                    tracing::warn!("{}: {error}", file.display());
                }
            }
        }
        PathFilter {
            root: root.to_path_buf(),
            exclude_dir: options.exclude_dir.clone(),
            ignored: builder
                .build()
                .unwrap_or_else(|_| ignore::gitignore::Gitignore::empty()),
        }
    }

    /// Whether a change at `path` (absolute) may change what the walk finds.
    pub fn may_matter(&self, path: &Path) -> bool {
        if self
            .exclude_dir
            .as_deref()
            .is_some_and(|dir| path.starts_with(dir))
        {
            return false;
        }
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return false;
        };
        let mut components: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // The last component is a file, unless it is a directory the walk skips (being
        // created or removed whole).
        if path.is_file() {
            components.pop();
        }
        if components
            .iter()
            .any(|name| is_never_walked(name) || is_vendored_dir(name))
        {
            return false;
        }
        let is_dir = path.is_dir();
        !self
            .ignored
            .matched_path_or_any_parents(relative, is_dir)
            .is_ignore()
    }
}

/// Directories of dependencies, build output and tool caches.
fn is_vendored_dir(name: &str) -> bool {
    matches!(
        name,
        "node_modules"
            | "bower_components"
            | "vendor"
            | "third_party"
            | "site-packages"
            | ".venv"
            | "venv"
            | "__pycache__"
            | ".tox"
            | ".mypy_cache"
            | ".pytest_cache"
            | ".ruff_cache"
            | ".gradle"
            | ".idea"
            | ".vscode"
            | ".next"
            | ".nuxt"
            | ".terraform"
            | "Pods"
            | "target"
            | "dist"
            | "build"
            | "coverage"
    )
}

/// Rules that need only the file's name.
pub fn name_skip(name: &str) -> Option<SkipReason> {
    let lower = name.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map_or("", |(_, e)| e);
    if is_secret_name(&lower, extension) {
        return Some(SkipReason::Secret);
    }
    if matches!(
        lower.as_str(),
        "cargo.lock"
            | "package-lock.json"
            | "npm-shrinkwrap.json"
            | "yarn.lock"
            | "pnpm-lock.yaml"
            | "poetry.lock"
            | "pipfile.lock"
            | "uv.lock"
            | "gemfile.lock"
            | "composer.lock"
            | "go.sum"
            | "flake.lock"
            | "packages.lock.json"
            | "bun.lockb"
    ) || extension == "lock"
    {
        return Some(SkipReason::Lockfile);
    }
    if lower.ends_with(".min.js")
        || lower.ends_with(".min.css")
        || lower.ends_with("_pb2.py")
        || lower.ends_with("_pb2_grpc.py")
        || lower.ends_with(".pb.go")
        || lower.ends_with(".pb.cc")
        || lower.ends_with(".pb.h")
        || lower.ends_with(".g.dart")
        || lower.ends_with(".designer.cs")
        || lower.contains(".generated.")
        || extension == "map"
    {
        return Some(SkipReason::Generated);
    }
    if BINARY_EXTENSIONS.contains(&extension) {
        return Some(SkipReason::Binary);
    }
    if matches!(
        extension,
        "csv"
            | "tsv"
            | "svg"
            | "parquet"
            | "arrow"
            | "npy"
            | "npz"
            | "pkl"
            | "db"
            | "sqlite"
            | "sqlite3"
    ) {
        return Some(SkipReason::Data);
    }
    None
}

fn is_secret_name(lower: &str, extension: &str) -> bool {
    let env_file = lower == ".env"
        || (lower.starts_with(".env.")
            && !matches!(extension, "example" | "sample" | "template" | "dist"));
    env_file
        || matches!(
            extension,
            "pem" | "key" | "p12" | "pfx" | "jks" | "keystore" | "kdbx"
        )
        || matches!(
            lower,
            "id_rsa"
                | "id_dsa"
                | "id_ecdsa"
                | "id_ed25519"
                | ".netrc"
                | ".pgpass"
                | ".npmrc"
                | ".pypirc"
                | "credentials"
                | "credentials.json"
                | "secrets.json"
                | "secrets.yaml"
                | "secrets.yml"
                | ".htpasswd"
                | ".git-credentials"
        )
}

const BINARY_EXTENSIONS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "psd",
    "pdf",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "tar",
    "jar",
    "war",
    "whl",
    "egg",
    "so",
    "dylib",
    "dll",
    "exe",
    "o",
    "a",
    "lib",
    "obj",
    "class",
    "pyc",
    "pyo",
    "wasm",
    "bin",
    "dat",
    "woff",
    "woff2",
    "ttf",
    "otf",
    "eot",
    "mp3",
    "mp4",
    "wav",
    "ogg",
    "flac",
    "mov",
    "avi",
    "mkv",
    "webm",
    "safetensors",
    "onnx",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "gguf",
    "iso",
    "dmg",
    "deb",
    "rpm",
];

/// Rules that need the file's bytes: binary content, private keys, generated markers,
/// minified code.
pub fn content_skip(bytes: &[u8]) -> Option<SkipReason> {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Some(SkipReason::Binary);
    }
    if has_private_key_block(bytes) {
        return Some(SkipReason::Secret);
    }
    let first_lines = &bytes[..bytes.len().min(1024)];
    let markers: [&[u8]; 5] = [
        b"@generated",
        b"DO NOT EDIT",
        b"Code generated by",
        b"autogenerated",
        b"auto-generated",
    ];
    if markers.iter().any(|m| contains(first_lines, m)) {
        return Some(SkipReason::Generated);
    }
    let lines = bytes.split(|&b| b == b'\n').count().max(1);
    let longest = bytes
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    if longest > 5_000 && bytes.len() / lines > 500 {
        return Some(SkipReason::Generated);
    }
    None
}

/// A PEM private key: a line that is exactly `-----BEGIN ... PRIVATE KEY-----` (so code that
/// merely mentions the marker in a string is not taken for a key).
fn has_private_key_block(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.starts_with(b"-----BEGIN ") && line.ends_with(b"PRIVATE KEY-----")
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_skipped() {
        assert_eq!(name_skip(".env"), Some(SkipReason::Secret));
        assert_eq!(name_skip(".env.production"), Some(SkipReason::Secret));
        assert_eq!(name_skip(".env.example"), None);
        assert_eq!(name_skip("server.key"), Some(SkipReason::Secret));
        assert_eq!(name_skip("id_ed25519"), Some(SkipReason::Secret));
        assert_eq!(name_skip("Cargo.lock"), Some(SkipReason::Lockfile));
        assert_eq!(name_skip("app.min.js"), Some(SkipReason::Generated));
        assert_eq!(name_skip("logo.PNG"), Some(SkipReason::Binary));
        assert_eq!(name_skip("main.rs"), None);
        assert_eq!(name_skip("README.md"), None);
    }

    #[test]
    fn contents_that_are_skipped() {
        assert_eq!(content_skip(b"abc\0def"), Some(SkipReason::Binary));
        assert_eq!(
            content_skip(b"x\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"),
            Some(SkipReason::Secret)
        );
        assert_eq!(
            content_skip(b"// Code generated by protoc. DO NOT EDIT.\npackage x\n"),
            Some(SkipReason::Generated)
        );
        let minified = vec![b'a'; 20_000];
        assert_eq!(content_skip(&minified), Some(SkipReason::Generated));
        assert_eq!(content_skip(b"fn main() {}\n"), None);
        assert_eq!(
            content_skip(b"let marker = \"-----BEGIN RSA PRIVATE KEY-----\";\n"),
            None
        );
        assert_eq!(content_skip(b"caf\xe9 latin-1 text\n"), None);
    }
}
