//! `deepsynth eval`: scores predicted answers against gold answers with the metrics of the reference scripts
//! (official SQuAD v2 exact match and F1, `rouge-score` ROUGE-L, `sacrebleu` BLEU, `jiwer` character error rate),
//! overall, for answerable and unanswerable questions, and per source. With a model, generates the predictions
//! first and measures the speed of doing so.

pub mod bleu;
pub mod cer;
mod input;
pub mod porter;
mod report;
pub mod rouge;
pub mod squad;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::io::JsonlWriter;
use crate::engine::sample::SamplingParams;
pub use report::{Files, Metrics, Report, Speed};

/// One question to score: its gold answers (none when it is unanswerable) and the predicted answer.
#[derive(Debug, Clone)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub golds: Vec<String>,
    pub prediction: String,
}

/// One example's scores in the units of their reference implementations: exact match, F1 and ROUGE-L F-measure
/// 0..1, sentence BLEU 0..100, CER a rate (an error per reference character is 1; none without a gold).
#[derive(Debug, Clone)]
pub struct Scored {
    pub exact: f64,
    pub f1: f64,
    pub rouge_l: f64,
    pub bleu: f64,
    pub cer: Option<f64>,
    bleu_stats: bleu::Stats,
    cer_counts: Option<cer::Counts>,
}

/// Scores one example. With no gold every metric but CER compares against "" (as SQuAD v2 does).
pub fn score(example: &Example, rouge_stem: bool) -> Scored {
    let (exact, f1) = squad::scores(&example.prediction, &example.golds);
    let bleu_stats = bleu::segment_stats(&example.prediction, &example.golds);
    let cer_counts = cer::best_gold(&example.prediction, &example.golds);
    Scored {
        exact,
        f1,
        rouge_l: rouge::rouge_l_multi(&example.golds, &example.prediction, rouge_stem).fmeasure,
        bleu: bleu::score(&bleu_stats, true),
        cer: cer_counts.map(|c| c.rate()),
        bleu_stats,
        cer_counts,
    }
}

/// Corpus figures over scored examples (at least one), each on a 0..100 scale: mean exact match, F1 and ROUGE-L
/// (summed in order, as the official SQuAD script sums), corpus BLEU, corpus CER (edits over reference characters,
/// of the examples that have a gold).
pub fn aggregate<'a>(scored: impl IntoIterator<Item = &'a Scored>) -> Metrics {
    let (mut total, mut exact, mut f1, mut rouge_l) = (0usize, 0.0, 0.0, 0.0);
    let mut stats = bleu::Stats::default();
    let mut counts: Option<cer::Counts> = None;
    for s in scored {
        total += 1;
        exact += s.exact;
        f1 += s.f1;
        rouge_l += s.rouge_l;
        stats += s.bleu_stats;
        if let Some(c) = s.cer_counts {
            let sum = counts.get_or_insert_default();
            sum.edits += c.edits;
            sum.ref_len += c.ref_len;
        }
    }
    let mean = |sum: f64| 100.0 * sum / total as f64;
    Metrics {
        total,
        exact: mean(exact),
        f1: mean(f1),
        rouge_l: mean(rouge_l),
        bleu: bleu::score(&stats, false),
        cer: counts.map(|c| 100.0 * c.rate()),
    }
}

/// What to do with a reference that has no prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Missing {
    /// Leave it out of the scores; it is listed in the report.
    #[default]
    Skip,
    /// Score it as the empty answer (right only for unanswerable questions); it is listed in the report.
    Empty,
    /// Stop with an error listing the ids.
    Fail,
}

/// Generating the predictions first (`--model`).
#[derive(Debug, Clone)]
pub struct Generate {
    pub model: String,
    pub adapter: Option<PathBuf>,
    pub device: String,
    /// Records to answer (the dataset schema); also the references.
    pub dataset: PathBuf,
    /// Where the predictions go [default: `<dataset stem>.predictions.jsonl` beside the dataset].
    pub output: Option<PathBuf>,
    pub batch_size: usize,
    pub params: SamplingParams,
}

/// What to score and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Predictions to score (ignored with `generate`).
    pub predictions: Option<PathBuf>,
    /// Reference records joined by id; without them the predictions must carry their `answers`.
    pub references: Option<PathBuf>,
    pub generate: Option<Generate>,
    /// Per-example scores file [default: `<predictions stem>.scores.jsonl` beside the predictions].
    pub per_example: Option<PathBuf>,
    pub rouge_stem: bool,
    pub missing: Missing,
}

/// Most ids an error message or the table lists.
const LISTED_IDS: usize = 10;

/// Runs an evaluation: generates when asked, joins, scores, writes the per-example file, returns the report.
pub fn run(options: &Options) -> Result<Report> {
    let (predictions, references, speed) = match &options.generate {
        Some(generate) => {
            let output = generate.output.clone().unwrap_or_else(|| beside(&generate.dataset, "predictions"));
            let speed = generate_predictions(generate, &output)?;
            (output, Some(generate.dataset.clone()), Some(speed))
        }
        None => {
            let predictions = options.predictions.clone().context("no predictions file given")?;
            (predictions, options.references.clone(), None)
        }
    };
    let read = input::read_predictions(&predictions)?;
    let predictions_count = read.len();
    let joined = match &references {
        Some(references) => input::join(read, references)?,
        None => input::Joined {
            pairs: input::self_contained(read)?.into_iter().map(|e| (e, true)).collect(),
            ..Default::default()
        },
    };
    let missing: Vec<String> = joined.pairs.iter().filter(|(_, found)| !found).map(|(e, _)| e.id.clone()).collect();
    if options.missing == Missing::Fail && !missing.is_empty() {
        anyhow::bail!(
            "{} references have no prediction in {}: {}",
            missing.len(),
            predictions.display(),
            list_ids(&missing)
        );
    }
    let examples: Vec<Example> = joined
        .pairs
        .into_iter()
        .filter(|(_, found)| *found || options.missing == Missing::Empty)
        .map(|(example, _)| example)
        .collect();
    anyhow::ensure!(
        !examples.is_empty(),
        "nothing to score: none of the {predictions_count} predictions in {} matches a reference id",
        predictions.display()
    );
    let scored: Vec<Scored> = examples.par_iter().map(|e| score(e, options.rouge_stem)).collect();
    let per_example = options.per_example.clone().unwrap_or_else(|| beside(&predictions, "scores"));
    write_per_example(&per_example, &examples, &scored)?;

    let pick = |keep: &dyn Fn(&Example) -> bool| {
        let subset: Vec<&Scored> = examples.iter().zip(&scored).filter(|(e, _)| keep(e)).map(|(_, s)| s).collect();
        (!subset.is_empty()).then(|| aggregate(subset))
    };
    let mut by_source = BTreeMap::new();
    for source in examples.iter().map(|e| e.source.as_str()).filter(|s| !s.is_empty()) {
        if !by_source.contains_key(source) {
            let metrics = pick(&|e| e.source == source).expect("the source has an example");
            by_source.insert(source.to_string(), metrics);
        }
    }
    Ok(Report {
        overall: aggregate(&scored),
        has_ans: pick(&|e| !e.golds.is_empty()),
        no_ans: pick(&|e| e.golds.is_empty()),
        by_source,
        missing,
        missing_scored_as_empty: options.missing == Missing::Empty,
        unmatched_predictions: joined.unmatched,
        rouge_stemmed: options.rouge_stem,
        speed,
        files: Files { predictions, per_example },
    })
}

/// `ids` for a message: the first few, and how many more.
pub fn list_ids(ids: &[String]) -> String {
    let mut text = ids.iter().take(LISTED_IDS).map(|id| format!("{id:?}")).collect::<Vec<_>>().join(", ");
    if ids.len() > LISTED_IDS {
        text.push_str(&format!(" and {} more", ids.len() - LISTED_IDS));
    }
    text
}

/// `dir/stem.what.jsonl` for `dir/stem.jsonl` (or `.json`, `.jsonl.gz`, ...).
fn beside(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = [".jsonl.gz", ".json.gz", ".jsonl", ".json", ".gz"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name);
    path.with_file_name(format!("{stem}.{what}.jsonl"))
}

/// A line of the per-example file: the example and its scores, on the report's 0..100 scale.
#[derive(Serialize)]
struct ExampleLine<'a> {
    id: &'a str,
    source: &'a str,
    prediction: &'a str,
    answers: &'a [String],
    exact: f64,
    f1: f64,
    #[serde(rename = "rougeL")]
    rouge_l: f64,
    bleu: f64,
    cer: Option<f64>,
}

fn write_per_example(path: &Path, examples: &[Example], scored: &[Scored]) -> Result<()> {
    let mut writer = JsonlWriter::create(path)?;
    for (e, s) in examples.iter().zip(scored) {
        writer.write_encoded(serde_json::to_vec(&ExampleLine {
            id: &e.id,
            source: &e.source,
            prediction: &e.prediction,
            answers: &e.golds,
            exact: 100.0 * s.exact,
            f1: 100.0 * s.f1,
            rouge_l: 100.0 * s.rouge_l,
            bleu: s.bleu,
            cer: s.cer.map(|c| 100.0 * c),
        })?)?;
    }
    writer.commit()?;
    Ok(())
}

/// Answers the dataset with the model into `output`; returns the speed of it.
fn generate_predictions(generate: &Generate, output: &Path) -> Result<Speed> {
    let model = crate::instruct::load_model(&generate.model, generate.adapter.as_deref(), &generate.device)?;
    let (_, batches) =
        crate::instruct::batch_timed(&model, &generate.dataset, output, generate.batch_size, &generate.params)?;
    Ok(Speed::from_batches(&batches))
}
