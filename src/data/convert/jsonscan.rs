//! Streaming readers for the two big-document shapes the datasets come in, that never hold the whole file:
//! an object of columns, `{column: {row key: value}}` (pandas' default `to_json`, as MS MARCO v2.1 is
//! distributed), and an object with one large list, `{"data": [item, ...]}` (SQuAD).
//!
//! Only the structure is scanned here: strings (skipped with memchr), nesting, separators. Each wanted value is
//! handed over as its own bytes, for serde_json to parse (and check) from a slice, which is several times faster than
//! serde_json reading from a stream byte by byte, and lets callers parse items on several cores. Values not wanted
//! are skipped unparsed.

use std::io::BufRead;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result};

use crate::data::error::{BadInput, Location};

/// Where the scanner is: line and column (in bytes) of the last byte read, as serde_json reports them.
struct Scanner<'p, R> {
    reader: R,
    path: &'p Path,
    line: u64,
    column: u64,
}

/// Where a value starts in the file, to place errors that serde_json reports relative to the value's own bytes.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub line: u64,
    pub column: u64,
}

impl Start {
    /// A serde_json error inside the value, placed in the file.
    pub fn locate(self, path: &Path, err: &serde_json::Error) -> Location {
        let (line, column) = match err.line() as u64 {
            0 | 1 => (self.line, self.column + err.column() as u64),
            n => (self.line + n - 1, err.column() as u64),
        };
        Location { column: Some(column), ..Location::line(path, line) }
    }
}

/// Scans an object from `reader` whose member `key` is a list: each item goes to `item` as raw bytes with where
/// it starts; other members are skipped. An object without `key` is an error.
pub fn list_items(
    reader: impl BufRead,
    path: &Path,
    key: &str,
    mut item: impl FnMut(&[u8], Start) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let mut s = Scanner { reader, path, line: 1, column: 0 };
    let mut name = Vec::new();
    let mut value = Vec::new();
    let mut found = false;
    s.open(b'{', "an object")?;
    while let Some(member) = s.next_key(&mut name)? {
        if member != key {
            s.value(None)?;
            s.after_value(b'}')?;
            continue;
        }
        found = true;
        s.open(b'[', &format!("`{key}` to be a list"))?;
        s.skip_ws()?;
        if s.peek()? == Some(b']') {
            s.bump(b']');
        } else {
            loop {
                value.clear();
                s.skip_ws()?;
                let start = Start { line: s.line, column: s.column };
                s.value(Some(&mut value))?;
                if item(&value, start)?.is_break() {
                    return Ok(());
                }
                s.after_value(b']')?;
                if s.peek()? == Some(b']') {
                    s.bump(b']');
                    break;
                }
            }
        }
        s.after_value(b'}')?;
    }
    if !found {
        return Err(s.error("unexpected JSON shape", &format!("missing field `{key}`")));
    }
    s.end()
}

/// Scans the object of columns from `reader`. For every row of a column that `want` accepts, `row(column, key,
/// value)` gets the row's key (decoded) and raw value bytes; `Break` stops the scan at once.
pub fn columns(
    reader: impl BufRead,
    path: &Path,
    mut want: impl FnMut(&str) -> bool,
    mut row: impl FnMut(&str, &str, &[u8]) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let mut s = Scanner { reader, path, line: 1, column: 0 };
    let mut key = Vec::new();
    let mut value = Vec::new();
    s.open(b'{', "an object of columns")?;
    while let Some(column) = s.next_key(&mut key)? {
        if !want(&column) {
            s.value(None)?;
            s.after_value(b'}')?;
            continue;
        }
        s.open(b'{', "a column: an object {row key: value}")?;
        while let Some(row_key) = s.next_key(&mut key)? {
            value.clear();
            s.value(Some(&mut value))?;
            if row(&column, &row_key, &value)?.is_break() {
                return Ok(());
            }
            s.after_value(b'}')?;
        }
        s.after_value(b'}')?;
    }
    s.end()
}

impl<R: BufRead> Scanner<'_, R> {
    fn error(&self, kind: &'static str, what: &str) -> anyhow::Error {
        let location = Location { column: Some(self.column), ..Location::line(self.path, self.line) };
        BadInput::new(location, kind, format!("{kind}: {what}")).into()
    }

    /// After the top-level object: nothing but white space.
    fn end(&mut self) -> Result<()> {
        self.skip_ws()?;
        match self.peek()? {
            None => Ok(()),
            Some(_) => Err(self.error("invalid JSON", "trailing characters after the object")),
        }
    }

    fn truncated(&self) -> anyhow::Error {
        self.error("truncated JSON", "the file ends inside the object")
    }

    fn chunk(&mut self) -> Result<&[u8]> {
        let path = self.path;
        self.reader.fill_buf().with_context(|| format!("cannot read {}", path.display()))
    }

    fn peek(&mut self) -> Result<Option<u8>> {
        Ok(self.chunk()?.first().copied())
    }

    fn bump(&mut self, byte: u8) {
        self.reader.consume(1);
        if byte == b'\n' {
            self.line += 1;
            self.column = 0;
        } else {
            self.column += 1;
        }
    }

    fn skip_ws(&mut self) -> Result<()> {
        while let Some(b) = self.peek()? {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.bump(b);
        }
        Ok(())
    }

    /// The next non-space byte, consumed; a truncation error at the end of the file.
    fn next_byte(&mut self) -> Result<u8> {
        self.skip_ws()?;
        let b = self.peek()?.ok_or_else(|| self.truncated())?;
        self.bump(b);
        Ok(b)
    }

    fn open(&mut self, byte: u8, what: &str) -> Result<()> {
        if self.next_byte()? != byte {
            return Err(self.error("unexpected JSON shape", &format!("expected {what}")));
        }
        Ok(())
    }

    /// After `{` or a value: the next key of the object, or `None` at its `}`.
    fn next_key(&mut self, buf: &mut Vec<u8>) -> Result<Option<String>> {
        self.skip_ws()?;
        if self.peek()? == Some(b'}') {
            self.bump(b'}');
            return Ok(None);
        }
        if self.next_byte()? != b'"' {
            return Err(self.error("invalid JSON", "expected a string key"));
        }
        buf.clear();
        buf.push(b'"');
        self.string(Some(buf))?;
        let key = serde_json::from_slice::<String>(buf).map_err(|_| self.error("invalid JSON", "bad string key"))?;
        if self.next_byte()? != b':' {
            return Err(self.error("invalid JSON", "expected `:`"));
        }
        Ok(Some(key))
    }

    /// After a value inside an object (`close` `}`) or a list (`]`): `,` (more to come) or the closing byte
    /// (left for the caller).
    fn after_value(&mut self, close: u8) -> Result<()> {
        self.skip_ws()?;
        match self.peek()? {
            Some(b',') => {
                self.bump(b',');
                self.skip_ws()?;
                if self.peek()? == Some(close) {
                    return Err(self.error("invalid JSON", "trailing comma"));
                }
                Ok(())
            }
            Some(b) if b == close => Ok(()),
            Some(_) => Err(self.error("invalid JSON", &format!("expected `,` or `{}`", close as char))),
            None => Err(self.truncated()),
        }
    }

    /// The rest of a string whose opening quote was read, copied into `out` when given (closing quote included).
    fn string(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<()> {
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Err(self.truncated());
            }
            let (taken, done, escape) = match memchr::memchr2(b'"', b'\\', chunk) {
                Some(i) => (i + 1, chunk[i] == b'"', chunk[i] == b'\\'),
                None => (chunk.len(), false, false),
            };
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&chunk[..taken]);
            }
            // A JSON string holds no raw newline: the line stays, the column moves on.
            self.reader.consume(taken);
            self.column += taken as u64;
            if done {
                return Ok(());
            }
            if escape {
                let b = self.peek()?.ok_or_else(|| self.truncated())?;
                self.bump(b);
                if let Some(out) = out.as_deref_mut() {
                    out.push(b);
                }
            }
        }
    }

    /// One value of any kind, copied into `out` when given. Works a buffered chunk at a time (memchr inside
    /// strings), since this loop sees every byte of the file.
    fn value(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<()> {
        self.skip_ws()?;
        let mut depth = 0usize;
        let mut in_string = false;
        // A backslash ended the previous chunk: the next byte is escaped.
        let mut escaped = false;
        loop {
            let path = self.path;
            let chunk = self.reader.fill_buf().with_context(|| format!("cannot read {}", path.display()))?;
            if chunk.is_empty() {
                return Err(self.truncated());
            }
            let mut i = usize::from(std::mem::take(&mut escaped));
            let mut done = false;
            while i < chunk.len() {
                if in_string {
                    match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                        None => i = chunk.len(),
                        Some(k) if chunk[i + k] == b'\\' => {
                            i += k + 2;
                            escaped = i > chunk.len();
                            i = i.min(chunk.len());
                        }
                        Some(k) => {
                            i += k + 1;
                            in_string = false;
                            if depth == 0 {
                                done = true;
                                break;
                            }
                        }
                    }
                    continue;
                }
                match chunk[i] {
                    // The end of a scalar at the top of this value (not part of it).
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => {
                        done = true;
                        break;
                    }
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            done = true;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            let taken = &chunk[..i];
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(taken);
            }
            match memchr::memrchr(b'\n', taken) {
                Some(last) => {
                    self.line += memchr::memchr_iter(b'\n', taken).count() as u64;
                    self.column = (i - last - 1) as u64;
                }
                None => self.column += i as u64,
            }
            self.reader.consume(i);
            if done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows handed over, checked to be the same whatever the reader's buffer size (values, strings and
    /// escapes cut at every possible chunk boundary).
    fn rows(text: &str, want: &[&str]) -> Result<Vec<(String, String, String)>> {
        let scan_with = |capacity: usize| {
            let mut got = Vec::new();
            let reader = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            columns(
                reader,
                Path::new("t.json"),
                |c| want.contains(&c),
                |c, k, v| {
                    got.push((c.to_string(), k.to_string(), String::from_utf8(v.to_vec()).unwrap()));
                    Ok(ControlFlow::Continue(()))
                },
            )
            .map(|()| got)
        };
        let whole = scan_with(1 << 16);
        for capacity in 1..9 {
            match (&whole, scan_with(capacity)) {
                (Ok(a), Ok(b)) => assert_eq!(a, &b, "buffer of {capacity}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "buffer of {capacity}"),
                (a, b) => panic!("buffer of {capacity}: {a:?} vs {b:?}"),
            }
        }
        whole
    }

    #[test]
    fn hands_over_rows_of_wanted_columns_only() {
        let text = r#" {"a": {"0": [{"x": "y}\"]"}, 1], "1\u0031": -2.5e3},
            "skip": {"0": {"deep": [[["]"]]]}}, "b": {"0": "s", "1": null} } "#;
        let got = rows(text, &["a", "b"]).unwrap();
        let want =
            [("a", "0", r#"[{"x": "y}\"]"}, 1]"#), ("a", "11", "-2.5e3"), ("b", "0", r#""s""#), ("b", "1", "null")];
        assert_eq!(got.len(), want.len());
        for ((c, k, v), (wc, wk, wv)) in got.iter().zip(want) {
            assert_eq!((c.as_str(), k.as_str(), v.as_str()), (wc, wk, wv));
        }
        assert!(rows("{}", &["a"]).unwrap().is_empty());
    }

    #[test]
    fn broken_files_are_placed() {
        let err = |text: &str| rows(text, &["a"]).unwrap_err().to_string();
        assert_eq!(err(r#"{"a": {"0": "abc"#), "t.json:1:16: truncated JSON: the file ends inside the object");
        let e = err("{\"a\":\n {\"0\" 1}}");
        assert!(e.starts_with("t.json:2:7: invalid JSON: expected `:`"), "{e}");
        assert!(err(r#"{"a": {"0": 1,}}"#).contains("trailing comma"));
        assert!(err(r#"{"a": {"0": 1}} x"#).contains("trailing characters"));
        assert!(err(r#"{"a": [1]}"#).contains("expected a column"));
    }

    #[test]
    fn list_items_are_placed_in_the_file() {
        let text = "{\"version\": {\"x\": [1]},\n \"data\": [ {\"a\": \"]\"},\n  [2, 3], 4 ]}";
        let mut got = Vec::new();
        list_items(text.as_bytes(), Path::new("t.json"), "data", |raw, start| {
            got.push((String::from_utf8(raw.to_vec()).unwrap(), start.line, start.column));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        let want = [(r#"{"a": "]"}"#, 2, 11), ("[2, 3]", 3, 2), ("4", 3, 10)];
        assert_eq!(got.len(), 3);
        for ((raw, line, column), (w, wl, wc)) in got.iter().zip(want) {
            assert_eq!((raw.as_str(), *line, *column), (w, wl, wc));
        }
        // A serde error inside an item is placed in the file: column 3 of the item's own text.
        let err = serde_json::from_str::<Vec<u8>>("[1,x]").unwrap_err();
        let at = Start { line: 3, column: 2 }.locate(Path::new("t.json"), &err);
        assert_eq!((at.line, at.column), (Some(3), Some(2 + err.column() as u64)));
        let missing = list_items(&b"{\"v\": 1}"[..], Path::new("t.json"), "data", |_, _| Ok(ControlFlow::Continue(())));
        assert!(missing.unwrap_err().to_string().contains("missing field `data`"));
        assert!(list_items(&b"{\"data\": []}"[..], Path::new("t.json"), "data", |_, _| unreachable!()).is_ok());
    }
}
