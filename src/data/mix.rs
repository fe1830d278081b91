//! `deepsynth data mix`: several record files, each weighted, duplicates dropped, one seeded shuffle.
//!
//! Order of work: read every input (any bad line stops the run before anything is written), drop records
//! whose normalised (text, instruction) was already seen (first occurrence in input order wins), apply
//! each input's weight to what is left of it, shuffle everything, write.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::io::JsonlWriter;
use super::jsonl::{fingerprint, read_records};
use super::record::Record;

/// One `--input PATH[:WEIGHT]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedInput {
    pub path: PathBuf,
    pub weight: f64,
}

impl FromStr for WeightedInput {
    type Err = String;

    /// Splits at the last ':' only when what follows is a number, so that paths holding ':' still work
    /// (`a:b.jsonl` is a path; `a:b.jsonl:0.5` is that path with weight 0.5).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((path, weight)) = s.rsplit_once(':') {
            if let Ok(weight) = weight.parse::<f64>() {
                if !weight.is_finite() || weight < 0.0 {
                    return Err(format!("weight must be a non-negative number, got {weight}"));
                }
                if path.is_empty() {
                    return Err("missing path before the weight".into());
                }
                return Ok(WeightedInput { path: path.into(), weight });
            }
        }
        Ok(WeightedInput { path: s.into(), weight: 1.0 })
    }
}

/// What happened to one input.
#[derive(Debug, Clone)]
pub struct InputSummary {
    pub input: WeightedInput,
    pub read: usize,
    /// Records dropped because an earlier record (this input or an earlier one) had the same normalised key.
    pub duplicates: usize,
    /// Records written from this input after weighting (copies counted).
    pub drawn: usize,
}

#[derive(Debug, Clone)]
pub struct MixSummary {
    pub inputs: Vec<InputSummary>,
    pub written: u64,
}

impl fmt::Display for MixSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duplicates: usize = self.inputs.iter().map(|i| i.duplicates).sum();
        write!(f, "{} records written, {duplicates} duplicates dropped", self.written)?;
        for i in &self.inputs {
            write!(
                f,
                "\n  {} (weight {}): {} read, {} duplicates dropped, {} written",
                i.input.path.display(),
                i.input.weight,
                i.read,
                i.duplicates,
                i.drawn
            )?;
        }
        Ok(())
    }
}

/// Mixes `inputs` into `output`; the output exists only if this returns `Ok`.
pub fn mix(inputs: &[WeightedInput], output: &Path, seed: u64) -> Result<MixSummary> {
    let mut seen = HashSet::new();
    let mut kept: Vec<Vec<Record>> = Vec::with_capacity(inputs.len());
    let mut summaries = Vec::with_capacity(inputs.len());
    for input in inputs {
        let records = read_records(&input.path)?;
        let read = records.len();
        let unique: Vec<Record> = records.into_iter().filter(|r| seen.insert(dedup_key(r))).collect();
        summaries.push(InputSummary { input: input.clone(), read, duplicates: read - unique.len(), drawn: 0 });
        kept.push(unique);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut drawn: Vec<&Record> = Vec::new();
    for (records, summary) in kept.iter().zip(&mut summaries) {
        let picks = weighted_picks(records.len(), summary.input.weight, &mut rng);
        summary.drawn = picks.len();
        drawn.extend(picks.into_iter().map(|i| &records[i]));
    }
    drawn.shuffle(&mut rng);

    let mut out = JsonlWriter::create(output)?;
    for record in drawn {
        out.write(record.clone())?;
    }
    Ok(MixSummary { inputs: summaries, written: out.commit()? })
}

/// Indices drawn from `n` records under weight `w`: round(w·n) in all, that is every record floor(w) times
/// plus a seeded sample, without replacement, of round(frac(w)·n) records.
fn weighted_picks(n: usize, weight: f64, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let whole = weight.trunc() as usize;
    let extra = ((weight.fract() * n as f64).round() as usize).min(n);
    let mut picks: Vec<usize> = (0..whole).flat_map(|_| 0..n).collect();
    picks.extend(rand::seq::index::sample(rng, n, extra));
    picks
}

/// Two records are duplicates when text and instruction match after Unicode lower-casing and whitespace
/// collapsing (answers and ids are not compared: the same question about the same page is one example).
fn dedup_key(record: &Record) -> u128 {
    fingerprint(&(normalise(&record.text), normalise(&record.instruction)))
}

fn normalise(s: &str) -> String {
    s.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_split_off_at_the_last_colon_only_when_numeric() {
        let parse = |s: &str| s.parse::<WeightedInput>();
        assert_eq!(parse("a.jsonl").unwrap(), WeightedInput { path: "a.jsonl".into(), weight: 1.0 });
        assert_eq!(parse("a.jsonl:0.5").unwrap().weight, 0.5);
        assert_eq!(parse("c:/x:y.jsonl").unwrap(), WeightedInput { path: "c:/x:y.jsonl".into(), weight: 1.0 });
        assert_eq!(parse("x:y.jsonl:2").unwrap(), WeightedInput { path: "x:y.jsonl".into(), weight: 2.0 });
        assert_eq!(parse("a.jsonl:").unwrap().path, PathBuf::from("a.jsonl:"));
        assert!(parse("a.jsonl:-1").is_err());
        assert!(parse("a.jsonl:inf").is_err());
        assert!(parse(":2").is_err());
    }

    #[test]
    fn normalise_lowercases_unicode_and_collapses_whitespace() {
        assert_eq!(normalise("  ZÜRICH\t ist\n\nGROSS  "), "zürich ist gross");
    }

    #[test]
    fn picks_round_weight_times_size() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut half = weighted_picks(7, 0.5, &mut rng);
        half.sort();
        half.dedup();
        assert_eq!(half.len(), 4, "0.5 x 7 = 3.5 rounds to 4, each record at most once");
        let twice_and_half = weighted_picks(4, 2.5, &mut rng);
        assert_eq!(twice_and_half.len(), 10);
        assert!((0..4).all(|i| twice_and_half.iter().filter(|&&p| p == i).count() >= 2));
        assert!(weighted_picks(5, 0.0, &mut rng).is_empty());
    }
}
