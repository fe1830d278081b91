//! What `deepsynth eval` reports: corpus metrics per group, what did not pair up, speed, files; as a table or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::instruct::BatchTiming;

/// Corpus figures over a group of examples, each 0..100 (CER in percent; none when no example has a gold).
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub total: usize,
    pub exact: f64,
    pub f1: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    pub bleu: f64,
    pub cer: Option<f64>,
}

/// Generation speed: every request of a batch waits for the whole batch, so its latency is the batch's time.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub requests: usize,
    pub tokens_generated: usize,
    /// Wall time of generation (document encoding included, model loading not).
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    /// The process's peak resident memory (VmHWM), where the OS reports it.
    pub peak_rss_mib: Option<f64>,
}

impl Speed {
    pub fn from_batches(batches: &[BatchTiming]) -> Speed {
        let mut latencies: Vec<f64> = batches.iter().flat_map(|b| std::iter::repeat_n(b.seconds, b.records)).collect();
        latencies.sort_by(f64::total_cmp);
        let seconds: f64 = batches.iter().map(|b| b.seconds).sum();
        let tokens_generated = batches.iter().map(|b| b.tokens_generated).sum();
        Speed {
            requests: latencies.len(),
            tokens_generated,
            seconds,
            tokens_per_second: if seconds > 0.0 { tokens_generated as f64 / seconds } else { 0.0 },
            latency_p50_s: percentile(&latencies, 50.0),
            latency_p95_s: percentile(&latencies, 95.0),
            peak_rss_mib: peak_rss_mib(),
        }
    }
}

/// Nearest-rank percentile of sorted values (0 when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The files an evaluation read or wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Files {
    pub predictions: PathBuf,
    pub per_example: PathBuf,
}

/// An evaluation's result. Group names follow the official SQuAD v2 script (HasAns, NoAns).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub overall: Metrics,
    #[serde(rename = "HasAns", skip_serializing_if = "Option::is_none")]
    pub has_ans: Option<Metrics>,
    #[serde(rename = "NoAns", skip_serializing_if = "Option::is_none")]
    pub no_ans: Option<Metrics>,
    pub by_source: BTreeMap<String, Metrics>,
    /// Reference ids without a prediction.
    pub missing: Vec<String>,
    pub missing_scored_as_empty: bool,
    /// Prediction ids that no reference has (not scored).
    pub unmatched_predictions: Vec<String>,
    pub rouge_stemmed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
    pub files: Files,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stem = if self.rouge_stemmed { " (stemmed)" } else { "" };
        writeln!(f, "{:<16} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7}", "", "n", "EM", "F1", "ROUGE-L", "BLEU", "CER %")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, m: &Metrics| {
            let cer = m.cer.map_or("-".to_string(), |c| format!("{c:.2}"));
            writeln!(
                f,
                "{name:<16} {:>7} {:>7.2} {:>7.2} {:>9.2} {:>7.2} {cer:>7}",
                m.total, m.exact, m.f1, m.rouge_l, m.bleu
            )
        };
        row(f, "all", &self.overall)?;
        if let Some(m) = &self.has_ans {
            row(f, "  has answer", m)?;
        }
        if let Some(m) = &self.no_ans {
            row(f, "  no answer", m)?;
        }
        // One source is the "all" row again.
        if self.by_source.len() > 1 {
            for (source, m) in &self.by_source {
                row(f, &format!("  {source}"), m)?;
            }
        }
        writeln!(f, "EM and F1: official SQuAD v2; ROUGE-L{stem}: rouge-score; BLEU: sacrebleu 13a; CER: jiwer")?;
        if !self.missing.is_empty() {
            let how = if self.missing_scored_as_empty { "scored as empty answers" } else { "not scored" };
            writeln!(f, "missing predictions: {} ({how}): {}", self.missing.len(), super::list_ids(&self.missing))?;
        }
        if !self.unmatched_predictions.is_empty() {
            let ids = super::list_ids(&self.unmatched_predictions);
            writeln!(f, "predictions without a reference: {} (not scored): {ids}", self.unmatched_predictions.len())?;
        }
        if let Some(s) = &self.speed {
            write!(
                f,
                "speed: {} requests, {} tokens in {:.2} s, {:.1} tokens/s, latency p50 {:.3} s p95 {:.3} s",
                s.requests, s.tokens_generated, s.seconds, s.tokens_per_second, s.latency_p50_s, s.latency_p95_s
            )?;
            match s.peak_rss_mib {
                Some(mib) => writeln!(f, ", peak RSS {mib:.0} MiB")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "per-example scores: {}", self.files.per_example.display())
    }
}
