//! `deepsynth data split`: one record file into train / validation / test, stratified by `source`.
//!
//! Each source's records are shuffled (seeded) and cut by the fractions, so every split holds each source
//! in proportion. Each output keeps the input's order: the shuffle decides membership only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::io::JsonlWriter;
use super::jsonl::read_records;

/// The output files, in the order the fractions name them.
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// `--fractions TRAIN,VALIDATION,TEST`: three non-negative numbers summing to 1 (within 1e-6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions(pub [f64; 3]);

impl Default for Fractions {
    fn default() -> Self {
        Fractions([0.8, 0.1, 0.1])
    }
}

impl fmt::Display for Fractions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a},{b},{c}")
    }
}

impl FromStr for Fractions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let values = s
            .split(',')
            .map(|v| v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number")))
            .collect::<Result<Vec<_>, _>>()?;
        let values: [f64; 3] = values
            .try_into()
            .map_err(|v: Vec<f64>| format!("expected 3 fractions (train,validation,test), got {}", v.len()))?;
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("fractions must be non-negative numbers".into());
        }
        let sum: f64 = values.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(format!("fractions must sum to 1, these sum to {sum}"));
        }
        // Rescaled to sum to 1 (up to rounding), so that the floors in `split_counts` never exceed n.
        Ok(Fractions(values.map(|v| v / sum)))
    }
}

/// How many records of one source went to each split.
#[derive(Debug, Clone)]
pub struct SplitSummary {
    /// Per source (sorted by name): records in train, validation, test.
    pub per_source: BTreeMap<String, [usize; 3]>,
}

impl fmt::Display for SplitSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut totals = [0; 3];
        for counts in self.per_source.values() {
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
        let [train, validation, test] = totals;
        write!(f, "{train} train, {validation} validation, {test} test; per source (train / validation / test):")?;
        for (source, [train, validation, test]) in &self.per_source {
            write!(f, "\n  {source}: {train} / {validation} / {test}")?;
        }
        Ok(())
    }
}

/// Splits `input` into `DIR/{train,validation,test}.jsonl`. Nothing is written unless the whole input
/// reads cleanly; the three files are moved into place only after all of them are written.
pub fn split(input: &Path, output_dir: &Path, fractions: Fractions, seed: u64) -> Result<SplitSummary> {
    let records = read_records(input)?;
    let mut by_source: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        by_source.entry(&record.source).or_default().push(i);
    }

    // One generator over sources in name order: the same input and seed give the same split.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut assigned = vec![0usize; records.len()];
    let mut per_source = BTreeMap::new();
    for (source, mut indices) in by_source {
        indices.shuffle(&mut rng);
        let counts = split_counts(indices.len(), fractions);
        let mut rest = indices.as_slice();
        for (split, &count) in counts.iter().enumerate() {
            let (taken, left) = rest.split_at(count);
            taken.iter().for_each(|&i| assigned[i] = split);
            rest = left;
        }
        per_source.insert(source.to_string(), counts);
    }

    let mut writers = SPLITS
        .iter()
        .map(|name| JsonlWriter::create(&output_dir.join(format!("{name}.jsonl"))))
        .collect::<Result<Vec<_>>>()?;
    for (record, split) in records.into_iter().zip(assigned) {
        writers[split].write(record)?;
    }
    for writer in writers {
        writer.commit()?;
    }
    Ok(SplitSummary { per_source })
}

/// Record counts per split for `n` records: floor(fraction·n) each, then the records left over go one by
/// one to the splits with the largest remainders (ties to the earlier split). The counts sum to `n`.
fn split_counts(n: usize, fractions: Fractions) -> [usize; 3] {
    let exact = fractions.0.map(|f| f * n as f64);
    let mut counts = exact.map(|e| e.floor() as usize);
    let mut by_remainder = [0, 1, 2];
    by_remainder.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let assigned: usize = counts.iter().sum();
    for &i in by_remainder.iter().cycle().take(n.saturating_sub(assigned)) {
        counts[i] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_follow_fractions() {
        let f = Fractions::default();
        assert_eq!(split_counts(10, f), [8, 1, 1]);
        assert_eq!(split_counts(20, f), [16, 2, 2]);
        assert_eq!(split_counts(7, f), [5, 1, 1], "5.6/0.7/0.7: the two 0.7 remainders win");
        assert_eq!(split_counts(1, f), [1, 0, 0]);
        assert_eq!(split_counts(0, f), [0, 0, 0]);
        let third = Fractions([1.0 / 3.0; 3]);
        for n in 0..50 {
            assert_eq!(split_counts(n, third).iter().sum::<usize>(), n);
        }
        assert_eq!(split_counts(100, Fractions([0.29, 0.71, 0.0])), [29, 71, 0]);
    }

    #[test]
    fn fractions_are_checked() {
        let parsed = "0.7, 0.2,0.1".parse::<Fractions>().unwrap().0;
        assert!(parsed.iter().zip([0.7, 0.2, 0.1]).all(|(p, e)| (p - e).abs() < 1e-9), "{parsed:?}");
        assert!("0.8,0.2".parse::<Fractions>().unwrap_err().contains("expected 3"));
        assert!("0.8,0.3,0.1".parse::<Fractions>().unwrap_err().contains("sum to 1"));
        assert!("1.2,-0.1,-0.1".parse::<Fractions>().unwrap_err().contains("non-negative"));
        assert!("a,b,c".parse::<Fractions>().is_err());
    }
}
