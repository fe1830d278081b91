//! Errors about user-supplied data: where in which file, and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in an input file: path, and where known the line, column, JSON path or field.
#[derive(Debug, Clone, Default)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// Where inside a structured record, e.g. `data[3].paragraphs[0].qas[2]`.
    pub within: Option<String>,
    pub field: Option<String>,
}

impl Location {
    pub fn file(path: &Path) -> Self {
        Location { path: path.to_path_buf(), ..Default::default() }
    }
    pub fn line(path: &Path, line: u64) -> Self {
        Location { line: Some(line), ..Location::file(path) }
    }
    pub fn within(mut self, within: impl Into<String>) -> Self {
        self.within = Some(within.into());
        self
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(within) = &self.within {
            write!(f, ": {within}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        Ok(())
    }
}

/// A record (or a whole file) that does not have the shape its format promises.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct BadInput {
    pub location: Location,
    pub message: String,
    /// A short category for the summary of skipped records ("missing question", "invalid JSON", ...).
    pub kind: &'static str,
}

impl BadInput {
    pub fn new(location: Location, kind: &'static str, message: impl Into<String>) -> Self {
        BadInput { location, message: message.into(), kind }
    }

    /// A serde_json error, placed at its line and column. `base_line` is the line of the file where the
    /// parsed text starts (1 for a whole file; the line's own number for a JSONL record).
    pub fn json(path: &Path, base_line: u64, err: &serde_json::Error) -> Self {
        let mut location = Location::line(path, base_line + err.line().saturating_sub(1) as u64);
        if err.column() > 0 {
            location.column = Some(err.column() as u64);
        }
        let kind = match err.classify() {
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Io => "read error",
        };
        // serde_json appends " at line L column C", which the location already says.
        let text = err.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text).to_string();
        BadInput::new(location, kind, format!("{kind}: {text}"))
    }
}
