//! Writing an output file the way its user expects, for every command that writes one (exports,
//! `quiver embed --output`, `quiver eval --ranks`).
//!
//! - A regular file (or a new one) is written to a fresh temporary file beside it and renamed
//!   over it only once complete, so a failed or killed run leaves the destination as it was. The
//!   temporary name is created exclusively (`O_EXCL`), so a symlink planted there is never
//!   followed, and it is removed again when the write fails. The destination keeps its mode and
//!   owner.
//! - A symlink at the destination is followed: the file it points to is what gets replaced, and
//!   the link stays.
//! - A FIFO, a character or block device or a socket is written in place, as a stream: renaming a
//!   regular file over `/dev/null` or a named pipe would destroy it.
//! - `-` is standard output.

use quiver_index::{IndexError, Result};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An output being written. Call [`Output::finish`]: dropped unfinished, it leaves the
/// destination untouched (a stream keeps what was already sent).
pub struct Output {
    sink: Sink,
    /// The destination as the user named it, for messages.
    path: PathBuf,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    /// Written in place: a FIFO, a device, a socket.
    Stream(BufWriter<File>),
    /// Written beside `target`, renamed over it by `finish`.
    Replace {
        writer: Option<BufWriter<File>>,
        temp: PathBuf,
        target: PathBuf,
        /// The replaced file's mode and owner, to carry over.
        keep: Option<(u32, u32, u32)>,
    },
}

/// How many times a symlink chain is followed before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

impl Output {
    /// Opens `path` for writing as the module documentation describes.
    pub fn create(path: &Path) -> Result<Output> {
        let io_error = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.as_os_str() == "-" {
            return Ok(Output {
                sink: Sink::Stdout(BufWriter::new(std::io::stdout())),
                path: path.to_path_buf(),
            });
        }
        let target = follow_symlinks(path).map_err(io_error)?;
        let existing = match std::fs::metadata(&target) {
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(error)),
        };
        let sink = match existing {
            Some(metadata) if metadata.is_dir() => {
                return Err(io_error(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a directory; name a file to write",
                )))
            }
            Some(metadata) if !metadata.is_file() && is_stream(&metadata) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(io_error)?;
                Sink::Stream(BufWriter::new(file))
            }
            existing => {
                let keep = existing.map(|m| (m.mode() & 0o7777, m.uid(), m.gid()));
                let (temp, file) = create_temporary(&target).map_err(io_error)?;
                Sink::Replace {
                    writer: Some(BufWriter::new(file)),
                    temp,
                    target,
                    keep,
                }
            }
        };
        Ok(Output {
            sink,
            path: path.to_path_buf(),
        })
    }

    /// The destination as named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes everything and, for a file, puts it in place of the destination.
    pub fn finish(mut self) -> Result<()> {
        let path = self.path.clone();
        self.complete()
            .map_err(|source| IndexError::Io { path, source })
    }

    fn complete(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(writer) => writer.flush(),
            Sink::Stream(writer) => writer.flush(),
            Sink::Replace {
                writer,
                temp,
                target,
                keep,
            } => {
                let Some(writer) = writer.take() else {
                    return Ok(());
                };
                let placed = put_in_place(writer, temp, target, *keep);
                if placed.is_err() {
                    let _ = std::fs::remove_file(&*temp);
                }
                placed
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Stdout(writer) => writer,
            Sink::Stream(writer) => writer,
            Sink::Replace { writer, .. } => match writer {
                Some(writer) => writer,
                None => unreachable!("an output is not written after finish"),
            },
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::Replace {
            writer: writer @ Some(_),
            temp,
            ..
        } = &mut self.sink
        {
            drop(writer.take());
            let _ = std::fs::remove_file(&*temp);
        }
    }
}

/// Completes the temporary file and renames it over the destination.
fn put_in_place(
    writer: BufWriter<File>,
    temp: &Path,
    target: &Path,
    keep: Option<(u32, u32, u32)>,
) -> std::io::Result<()> {
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    if let Some((mode, uid, gid)) = keep {
        file.set_permissions(Permissions::from_mode(mode))?;
        // Only root may give a file away; anyone else keeps their own.
        let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(temp, target)?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The rename itself is durable only once the directory is synced.
        let _ = File::open(parent).and_then(|dir| dir.sync_all());
    }
    Ok(())
}

fn is_stream(metadata: &std::fs::Metadata) -> bool {
    let kind = metadata.file_type();
    kind.is_fifo() || kind.is_char_device() || kind.is_block_device() || kind.is_socket()
}

/// Where `path` leads once every symlink on its last component is followed; a dangling link
/// leads to the file it names, which is then created.
fn follow_symlinks(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)?;
                current = match current.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// A new file beside `target`, under a name nobody else holds.
fn create_temporary(target: &Path) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let dir = target.parent().unwrap_or(Path::new(""));
    loop {
        let attempt = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(
            ".{name}.{}-{attempt}.quiver-partial",
            std::process::id()
        ));
        // create_new is O_CREAT|O_EXCL: it fails on anything already there, symlinks included,
        // instead of following it.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                continue
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quiver-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_all(path: &Path, text: &str) -> Result<()> {
        let mut output = Output::create(path)?;
        output.write_all(text.as_bytes()).unwrap();
        output.finish()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("quiver-partial"))
            .collect()
    }

    #[test]
    fn replaces_a_regular_file_keeping_its_mode() {
        let dir = scratch("mode");
        let path = dir.join("out.jsonl");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write_all(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(leftovers(&dir).is_empty());
    }

    #[test]
    fn an_unfinished_output_leaves_the_destination_and_no_partial_file() {
        let dir = scratch("unfinished");
        let path = dir.join("out.jsonl");
        std::fs::write(&path, "old").unwrap();
        {
            let mut output = Output::create(&path).unwrap();
            output.write_all(b"half of the new").unwrap();
            // dropped without finish: a failed export
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    }

    #[test]
    fn a_symlink_at_the_destination_is_followed_not_replaced() {
        let dir = scratch("link");
        let real = dir.join("real.jsonl");
        std::fs::write(&real, "old").unwrap();
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        write_all(&link, "new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn a_symlink_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("out.jsonl");
        // The temporary name of earlier versions, and every name this version might pick.
        std::os::unix::fs::symlink(&victim, dir.join("out.jsonl.partial")).unwrap();
        for attempt in 0..8 {
            let _ = std::os::unix::fs::symlink(
                &victim,
                dir.join(format!(
                    ".out.jsonl.{}-{attempt}.quiver-partial",
                    std::process::id()
                )),
            );
        }
        write_all(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_fifo_is_streamed_into_and_stays_a_fifo() {
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        write_all(&fifo, "streamed").unwrap();
        assert_eq!(reader.join().unwrap(), "streamed");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn a_character_device_is_written_in_place() {
        write_all(Path::new("/dev/null"), "gone").unwrap();
        let metadata = std::fs::metadata("/dev/null").unwrap();
        assert!(metadata.file_type().is_char_device());
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = scratch("dir");
        let error = write_all(&dir, "x").unwrap_err().to_string();
        assert!(error.contains("is a directory"), "{error}");
        assert!(error.contains(&dir.display().to_string()), "{error}");
    }
}
