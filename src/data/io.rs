//! Reading inputs (gzip detected by content, progress on a terminal) and writing JSONL atomically.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};

use super::error::{BadInput, Location};
use super::record::Record;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens a file for reading, decompressing it when its first bytes are the gzip magic (whatever its name).
/// A progress bar follows the compressed bytes read; it draws only when stderr is a terminal.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = file_progress_bar(len, path);
    let mut raw = BufReader::with_capacity(1 << 20, bar.wrap_read(file));
    let is_gz = raw.fill_buf().with_context(|| format!("cannot read {}", path.display()))?.starts_with(&GZIP_MAGIC);
    Ok(if is_gz { Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(raw))) } else { Box::new(raw) })
}

/// Reads a whole (possibly gzipped) file into memory: for formats that are one JSON document.
pub fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// A bar counting `len` items of long work (records answered, steps trained); drawn only on a terminal.
pub fn progress_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

fn file_progress_bar(len: u64, path: &Path) -> ProgressBar {
    // Small files finish before a bar would be useful.
    if len < (8 << 20) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    bar
}

/// Lines of a text file, numbered from 1, each checked to be UTF-8. Line endings (`\n`, `\r\n`) are removed.
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    buf: Vec<u8>,
    number: u64,
}

impl Lines {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Lines { path: path.to_path_buf(), reader: open(path)?, buf: Vec::new(), number: 0 })
    }

    /// The next line and its number; `Ok(None)` at the end. Invalid UTF-8 is a `BadInput` for that line.
    pub fn next_line(&mut self) -> Result<Option<(u64, Result<&str, BadInput>)>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("{}: read error after line {}", self.path.display(), self.number))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut end = self.buf.len();
        if self.buf[..end].ends_with(b"\n") {
            end -= 1;
        }
        if self.buf[..end].ends_with(b"\r") {
            end -= 1;
        }
        let line = std::str::from_utf8(&self.buf[..end]).map_err(|e| {
            BadInput::new(
                Location::line(&self.path, self.number),
                "invalid UTF-8",
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        });
        Ok(Some((self.number, line)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A JSONL file of records, written to a temporary file beside the target and renamed into place by `commit`,
/// so that a failed run leaves no half-written output. Serialising and writing run on a thread of their own, so a
/// converter reads and parses while the previous records are encoded (two cores: about twice the throughput).
pub struct JsonlWriter {
    path: PathBuf,
    batch: Vec<Line>,
    to_writer: Option<SyncSender<Vec<Line>>>,
    writer: Option<JoinHandle<io::Result<tempfile::NamedTempFile>>>,
    count: u64,
}

/// A line for the writer thread: a record to encode there, or one encoded already (by a converter that encodes
/// on several cores).
enum Line {
    Record(Record),
    Encoded(Vec<u8>),
}

/// Records handed to the writer thread at a time: enough to make the channel's cost vanish.
const BATCH: usize = 256;

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_beside(path)?;
        let (to_writer, batches) = sync_channel::<Vec<Line>>(4);
        let writer = std::thread::spawn(move || {
            let mut out = BufWriter::with_capacity(1 << 20, tmp);
            for batch in batches {
                for line in &batch {
                    match line {
                        Line::Record(record) => serde_json::to_writer(&mut out, record)?,
                        Line::Encoded(bytes) => out.write_all(bytes)?,
                    }
                    out.write_all(b"\n")?;
                }
            }
            out.into_inner().map_err(|e| e.into_error())
        });
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            batch: Vec::with_capacity(BATCH),
            to_writer: Some(to_writer),
            writer: Some(writer),
            count: 0,
        })
    }

    pub fn write(&mut self, record: Record) -> Result<()> {
        self.push(Line::Record(record))
    }

    /// Writes a record already encoded as one JSON line (no newline).
    pub fn write_encoded(&mut self, line: Vec<u8>) -> Result<()> {
        self.push(Line::Encoded(line))
    }

    fn push(&mut self, line: Line) -> Result<()> {
        self.batch.push(line);
        self.count += 1;
        if self.batch.len() >= BATCH {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let sent = self.to_writer.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if !sent {
            // The writer thread stopped early: its error says why.
            self.join()?;
        }
        Ok(())
    }

    fn join(&mut self) -> Result<tempfile::NamedTempFile> {
        self.to_writer = None;
        let writer = self.writer.take().context("output writer already finished")?;
        let written = writer.join().map_err(|_| anyhow::anyhow!("the output writer thread panicked"))?;
        written.with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes what is left and renames the temporary file onto the target path.
    pub fn commit(mut self) -> Result<u64> {
        if !self.batch.is_empty() {
            self.send()?;
        }
        let tmp = self.join()?;
        tmp.persist(&self.path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot move output into place at {}", self.path.display()))?;
        Ok(self.count)
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        // Not committed (an error on the way): stop the writer; its temporary file is deleted with it.
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

/// Writes a whole text file atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(contents).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move output into place at {}", path.display()))?;
    Ok(())
}

/// A temporary file in the target's folder (created if missing), so that the final rename stays on one file system.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    // Outputs get the usual permissions (0666 less the umask), not a temporary file's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .prefix(".deepsynth-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}
