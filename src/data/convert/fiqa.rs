//! FiQA (financial opinion QA): the BEIR layout or the FiQA-2018 task-2 TSVs.
//!
//! `--input` is one folder, whose files say which layout it holds:
//! - BEIR: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`; `--split` picks the qrels file (default `test`,
//!   the split BEIR evaluates on), and rows with score > 0 are the positives. Three files
//!   (corpus, queries, qrels, in that order) are also accepted instead of the folder.
//! - Task 2: `FiQA_train_doc_final.tsv`, `FiQA_train_question_final.tsv`, `FiQA_train_question_doc_final.tsv`,
//!   pandas exports (index column first, fields quoted when they hold a tab, quote or newline); one split, train.
//!
//! One record per (question, positive post): the post is the answer, and the document is the post plus
//! `--distractors` other posts (never a positive of the same question), drawn and shuffled with a
//! ChaCha8 RNG seeded by `--seed`, joined by blank lines. The BEIR `title` is not used (FiQA's are empty).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::{ConvertOptions, Sink};
use crate::data::error::{BadInput, Location};
use crate::data::io;
use crate::data::record::Record;

const BEIR_CORPUS: &str = "corpus.jsonl";
const BEIR_QUERIES: &str = "queries.jsonl";
const BEIR_DEFAULT_SPLIT: &str = "test";
const TASK2_DOCS: &str = "FiQA_train_doc_final.tsv";
const TASK2_QUESTIONS: &str = "FiQA_train_question_final.tsv";
const TASK2_PAIRS: &str = "FiQA_train_question_doc_final.tsv";

/// Joins the posts of one record's document.
const POST_SEPARATOR: &str = "\n\n";

enum Layout {
    Beir { corpus: PathBuf, queries: PathBuf, qrels: PathBuf },
    Task2 { docs: PathBuf, questions: PathBuf, pairs: PathBuf },
}

pub fn convert(opts: &ConvertOptions, sink: &mut Sink) -> Result<()> {
    let data = match layout(opts)? {
        Layout::Beir { corpus, queries, qrels } => read_beir(&corpus, &queries, &qrels, sink)?,
        Layout::Task2 { docs, questions, pairs } => read_task2(&docs, &questions, &pairs, sink)?,
    };
    emit(&data, opts, sink)
}

/// Which layout `--input` holds, and the files to read.
fn layout(opts: &ConvertOptions) -> Result<Layout> {
    match opts.inputs.as_slice() {
        [dir] => folder_layout(dir, opts.split.as_deref()),
        [corpus, queries, qrels] => {
            if opts.split.is_some() {
                bail!("--split picks the qrels file of a BEIR folder; of three files, the third is the qrels file");
            }
            for path in [corpus, queries, qrels] {
                require_file(path)?;
            }
            Ok(Layout::Beir { corpus: corpus.clone(), queries: queries.clone(), qrels: qrels.clone() })
        }
        _ => bail!(
            "FiQA takes one --input folder (BEIR or FiQA-2018 task 2), or three BEIR files: \
             corpus.jsonl queries.jsonl qrels/<split>.tsv; got {} paths",
            opts.inputs.len()
        ),
    }
}

fn folder_layout(dir: &Path, split: Option<&str>) -> Result<Layout> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read FiQA input folder {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is a file; FiQA takes a folder (BEIR or FiQA-2018 task 2), or three BEIR files: \
             corpus.jsonl queries.jsonl qrels/<split>.tsv",
            dir.display()
        );
    }
    let beir = [BEIR_CORPUS, BEIR_QUERIES, "qrels"].map(|name| dir.join(name));
    let task2 = [TASK2_DOCS, TASK2_QUESTIONS, TASK2_PAIRS].map(|name| dir.join(name));
    // The first file of either layout decides; a missing companion is then named by require_file.
    if beir.iter().any(|p| p.exists()) {
        let split = split.unwrap_or(BEIR_DEFAULT_SPLIT);
        let [corpus, queries, qrels_dir] = beir;
        let qrels = qrels_dir.join(format!("{split}.tsv"));
        require_file(&corpus)?;
        require_file(&queries)?;
        if !qrels.is_file() {
            bail!("missing file {} (--split {split} picks qrels/{split}.tsv)", qrels.display());
        }
        return Ok(Layout::Beir { corpus, queries, qrels });
    }
    if task2.iter().any(|p| p.exists()) {
        if let Some(split) = split.filter(|s| *s != "train") {
            bail!("the FiQA-2018 task-2 TSVs hold one split, train; --split {split} applies to BEIR folders");
        }
        for path in &task2 {
            require_file(path)?;
        }
        let [docs, questions, pairs] = task2;
        return Ok(Layout::Task2 { docs, questions, pairs });
    }
    bail!(
        "{} holds neither FiQA layout: expected the BEIR files {BEIR_CORPUS}, {BEIR_QUERIES}, qrels/<split>.tsv, \
         or the FiQA-2018 task-2 files {TASK2_DOCS}, {TASK2_QUESTIONS}, {TASK2_PAIRS}",
        dir.display()
    )
}

fn require_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder; expected a file", path.display());
    }
    if !path.is_file() {
        bail!("missing file {}", path.display());
    }
    Ok(())
}

struct Post {
    id: String,
    text: String,
}

/// Posts, questions and positive pairs, whatever layout they came from.
#[derive(Default)]
struct Data {
    posts: Vec<Post>,
    post_index: HashMap<String, usize>,
    questions: HashMap<String, String>,
    /// Positive (question id, post index) pairs in qrels order, each once.
    pairs: Vec<(String, usize)>,
    positives: HashMap<String, Vec<usize>>,
}

impl Data {
    fn add_post(&mut self, id: &str, text: String, sink: &mut Sink) {
        if self.post_index.contains_key(id) {
            sink.note("duplicate post ids (first kept)");
            return;
        }
        self.post_index.insert(id.to_string(), self.posts.len());
        self.posts.push(Post { id: id.to_string(), text });
    }

    fn add_question(&mut self, id: &str, text: String, sink: &mut Sink) {
        if self.questions.contains_key(id) {
            sink.note("duplicate question ids (first kept)");
            return;
        }
        self.questions.insert(id.to_string(), text);
    }

    /// Checks a qrels row's ids (a question or post that was not read makes the row bad), and keeps the pair
    /// when it is `relevant`.
    fn add_pair(&mut self, at: &Row, relevant: bool, sink: &mut Sink) -> Result<()> {
        let ((qfield, qid), (dfield, docid)) = (at.question, at.post);
        if !self.questions.contains_key(qid) {
            let msg = format!("`{qid}` is not a question of {}", at.questions.display());
            return sink.reject(BadInput::new(at.location().field(qfield), "unknown question", msg));
        }
        let Some(&post) = self.post_index.get(docid) else {
            let msg = format!("`{docid}` is not a post of {}", at.posts.display());
            return sink.reject(BadInput::new(at.location().field(dfield), "unknown post", msg));
        };
        if !relevant {
            return Ok(());
        }
        let list = self.positives.entry(qid.to_string()).or_default();
        if list.contains(&post) {
            sink.note("repeated qrels rows (kept once)");
            return Ok(());
        }
        list.push(post);
        self.pairs.push((qid.to_string(), post));
        Ok(())
    }
}

/// A qrels row: its place, its (column name, id) pairs, and the files those ids refer to (for messages).
struct Row<'a> {
    path: &'a Path,
    line: u64,
    question: (&'a str, &'a str),
    post: (&'a str, &'a str),
    questions: &'a Path,
    posts: &'a Path,
}

impl Row<'_> {
    fn location(&self) -> Location {
        Location::line(self.path, self.line)
    }
}

fn read_beir(corpus: &Path, queries: &Path, qrels: &Path, sink: &mut Sink) -> Result<Data> {
    let mut data = Data::default();
    read_beir_jsonl(corpus, sink, |sink, id, text| data.add_post(id, text, sink))?;
    read_beir_jsonl(queries, sink, |sink, id, text| data.add_question(id, text, sink))?;
    read_tsv(qrels, &["query-id", "corpus-id", "score"], sink, |sink, line, row| {
        let Ok(score) = row[2].trim().parse::<i64>() else {
            let at = Location::line(qrels, line).field("score");
            return sink.reject(BadInput::new(at, "bad score", format!("score `{}` is not an integer", row[2])));
        };
        let at = Row {
            path: qrels,
            line,
            question: ("query-id", row[0]),
            post: ("corpus-id", row[1]),
            questions: queries,
            posts: corpus,
        };
        data.add_pair(&at, score > 0, sink)
    })?;
    Ok(data)
}

fn read_task2(docs: &Path, questions: &Path, pairs: &Path, sink: &mut Sink) -> Result<Data> {
    let mut data = Data::default();
    read_tsv(docs, &["", "docid", "doc", "timestamp"], sink, |sink, line, row| match row[1] {
        "" => sink.reject(empty_id(docs, line, "docid")),
        id => {
            data.add_post(id, row[2].to_string(), sink);
            Ok(())
        }
    })?;
    read_tsv(questions, &["", "qid", "question", "timestamp"], sink, |sink, line, row| match row[1] {
        "" => sink.reject(empty_id(questions, line, "qid")),
        id => {
            data.add_question(id, row[2].to_string(), sink);
            Ok(())
        }
    })?;
    read_tsv(pairs, &["", "qid", "docid"], sink, |sink, line, row| {
        let at = Row { path: pairs, line, question: ("qid", row[1]), post: ("docid", row[2]), questions, posts: docs };
        data.add_pair(&at, true, sink)
    })?;
    Ok(data)
}

fn empty_id(path: &Path, line: u64, field: &str) -> BadInput {
    BadInput::new(Location::line(path, line).field(field), "missing id", format!("empty `{field}`"))
}

/// A line of BEIR's corpus.jsonl or queries.jsonl; `title` and `metadata` are not used.
#[derive(Deserialize)]
struct BeirLine {
    #[serde(rename = "_id")]
    id: Option<String>,
    text: Option<String>,
}

/// Reads a BEIR JSONL file, handing each line's `_id` and `text` to `add`. Blank lines are passed over.
fn read_beir_jsonl(path: &Path, sink: &mut Sink, mut add: impl FnMut(&mut Sink, &str, String)) -> Result<()> {
    let parse = |n, line: &str| {
        let parsed: BeirLine = serde_json::from_str(line).map_err(|e| BadInput::json(path, n, &e))?;
        match (parsed.id.filter(|id| !id.is_empty()), parsed.text) {
            (Some(id), Some(text)) => Ok((id, text)),
            (id, _) => {
                let field = if id.is_none() { "_id" } else { "text" };
                let at = Location::line(path, n).field(field);
                Err(BadInput::new(at, "missing field", format!("missing or empty `{field}`")).into())
            }
        }
    };
    sink.each_line(path, parse, |sink, (id, text)| {
        add(sink, &id, text);
        Ok(())
    })
}

/// Reads a tab-separated file with Python's (and pandas') default quoting: the first row must be `header`,
/// every later row is handed to `row` with its first line number when it has as many columns.
fn read_tsv(
    path: &Path,
    header: &[&str],
    sink: &mut Sink,
    mut row: impl FnMut(&mut Sink, u64, &[&str]) -> Result<()>,
) -> Result<()> {
    let shown_header = header.join("\\t");
    let mut reader =
        csv::ReaderBuilder::new().delimiter(b'\t').has_headers(false).flexible(true).from_reader(io::open(path)?);
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    loop {
        // Rows of any length are read (flexible), and UTF-8 is checked below: what is left is a read error.
        let more = reader.read_byte_record(&mut record).with_context(|| format!("cannot read {}", path.display()))?;
        if !more {
            break;
        }
        // A quoted field may span lines: the record's first line is the one to report.
        let line = record.position().map_or(0, |p| p.line());
        // Err holds the index of the first field that is not UTF-8.
        let fields: Result<Vec<&str>, usize> =
            record.iter().enumerate().map(|(i, bytes)| std::str::from_utf8(bytes).map_err(|_| i)).collect();
        if std::mem::take(&mut first) {
            if !matches!(&fields, Ok(f) if f == header) {
                let at = Location::line(path, line);
                let msg = format!("expected the header line `{shown_header}` (tab-separated)");
                return Err(BadInput::new(at, "wrong header", msg).into());
            }
            continue;
        }
        match fields {
            Err(i) => {
                let name = match header.get(i) {
                    Some(name) if !name.is_empty() => name.to_string(),
                    _ => format!("column {}", i + 1),
                };
                let at = Location::line(path, line).field(name);
                sink.reject(BadInput::new(at, "invalid UTF-8", "invalid UTF-8"))?;
            }
            Ok(fields) if fields.len() != header.len() => {
                let (want, found) = (header.len(), fields.len());
                let msg = format!("expected {want} tab-separated columns (`{shown_header}`), found {found}");
                sink.reject(BadInput::new(Location::line(path, line), "wrong column count", msg))?;
            }
            Ok(fields) => row(sink, line, &fields)?,
        }
    }
    if first {
        let msg = format!("empty file; expected the header line `{shown_header}` (tab-separated)");
        return Err(BadInput::new(Location::file(path), "empty file", msg).into());
    }
    Ok(())
}

/// Writes one record per positive pair, in qrels order.
fn emit(data: &Data, opts: &ConvertOptions, sink: &mut Sink) -> Result<()> {
    // Empty posts (pandas writes a missing doc as an empty field) make no distractor.
    let pool: Vec<usize> = (0..data.posts.len()).filter(|&i| !data.posts[i].text.trim().is_empty()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    for (qid, post) in &data.pairs {
        if sink.is_full() {
            break;
        }
        let question = &data.questions[qid];
        let answer = &data.posts[*post];
        if question.trim().is_empty() || answer.text.trim().is_empty() {
            sink.note("pairs passed over: empty question or post");
            continue;
        }
        let mut chosen = distractors(&mut rng, &pool, &data.positives[qid], opts.distractors);
        chosen.push(*post);
        chosen.shuffle(&mut rng);
        let text = chosen.iter().map(|&i| data.posts[i].text.as_str()).collect::<Vec<_>>().join(POST_SEPARATOR);
        let id = format!("{qid}-{}", answer.id);
        sink.emit(Record::new(id, "fiqa", text, question.as_str(), [answer.text.clone()]))?;
    }
    Ok(())
}

/// Up to `k` distinct posts of `pool` that are not in `positives` (fewer when the pool runs out).
fn distractors(rng: &mut ChaCha8Rng, pool: &[usize], positives: &[usize], k: usize) -> Vec<usize> {
    // At most `positives.len()` of the drawn posts are positives, so drawing that many more leaves k.
    let draw = k.saturating_add(positives.len()).min(pool.len());
    index::sample(rng, pool.len(), draw)
        .into_iter()
        .map(|i| pool[i])
        .filter(|p| !positives.contains(p))
        .take(k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distractors_avoid_positives_and_run_out_gracefully() {
        let pool: Vec<usize> = (0..10).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let d = distractors(&mut rng, &pool, &[2, 5], 3);
            assert_eq!(d.len(), 3);
            assert!(d.iter().all(|p| *p != 2 && *p != 5), "{d:?}");
            let mut unique = d.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 3, "{d:?}");
        }
        let mut all = distractors(&mut rng, &[4, 8, 9], &[8], 5);
        all.sort();
        assert_eq!(all, vec![4, 9]);
    }
}
