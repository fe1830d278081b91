//! `deepsynth convert fiqa` on the BEIR layout and the FiQA-2018 task-2 TSVs: splits, distractors, broken input.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use deepsynth::data::Record;

fn beir() -> PathBuf {
    repo().join("data/fiqa/beir")
}

fn task2() -> PathBuf {
    repo().join("data/fiqa/task2")
}

fn args(inputs: &[&Path], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["convert", "fiqa", "--input"].map(String::from).to_vec();
    args.extend(inputs.iter().map(|p| p.to_str().unwrap().to_string()));
    args.extend(["--output".to_string(), out.to_str().unwrap().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn convert(input: &Path, out: &Path, extra: &[&str]) -> Vec<Record> {
    ok(args(&[input], out, extra));
    read_records(out)
}

/// The posts a record's document is made of (the sample posts hold no blank line).
fn posts(record: &Record) -> Vec<&str> {
    record.text.split("\n\n").collect()
}

/// The BEIR sample's posts by id, read independently of the converter.
fn beir_corpus() -> HashMap<String, String> {
    let text = std::fs::read_to_string(beir().join("corpus.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["_id"].as_str().unwrap().to_string(), v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

fn ids(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn beir_default_split_is_test_with_unicode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fiqa.jsonl");
    let summary = ok(args(&[&beir()], &out, &[]));
    assert!(summary.contains("3 records written, 0 skipped"), "{summary}");
    let recs = read_records(&out);
    assert_eq!(ids(&recs), ["31-5120", "31-5121", "42-6033"]);
    let corpus = beir_corpus();
    for r in &recs {
        assert_eq!(r.source, "fiqa");
        assert_eq!(r.answers, vec![r.answer.clone()]);
        // The answer post plus the default 3 distractors, all distinct posts of the corpus.
        let p = posts(r);
        assert_eq!(p.len(), 4, "{:?}", r.text);
        assert!(p.contains(&r.answer.as_str()));
        assert!(p.iter().all(|post| corpus.values().any(|c| c == post)), "{:?}", r.text);
        let mut unique = p.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }
    // Decoded from a \u20ac escape in the JSONL.
    assert!(recs[0].answer.starts_with("Holding savings in € while"), "{}", recs[0].answer);
    assert_eq!(recs[0].instruction, "Should I keep my savings in euros (€) or dollars?");
    assert_eq!(recs[2].instruction, "NISA口座で米国株を買うことはできますか？");
    assert_eq!(recs[2].answer, corpus["6033"]);
    assert!(recs[2].answer.starts_with("はい、NISA口座でも"));
}

#[test]
fn beir_train_and_dev_splits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train.jsonl");
    let recs = convert(&beir(), &out, &["--split", "train"]);
    assert_eq!(ids(&recs), ["8-1042", "8-2187", "15-3301", "57-7002"]);
    assert_eq!(recs[1].instruction, "Can I deduct meals and hotels when I travel for work?");
    assert_eq!(recs[1].answer, beir_corpus()["2187"]);
    let recs = convert(&beir(), &out, &["--split", "dev"]);
    assert_eq!(ids(&recs), ["23-7001"]);
}

#[test]
fn beir_as_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let b = beir();
    ok(args(&[&b.join("corpus.jsonl"), &b.join("queries.jsonl"), &b.join("qrels/train.tsv")], &out, &[]));
    let from_files = std::fs::read(&out).unwrap();
    convert(&b, &out, &["--split", "train"]);
    assert_eq!(from_files, std::fs::read(&out).unwrap());
}

#[test]
fn positives_are_never_distractors_and_short_pools_give_what_there_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let corpus = beir_corpus();
    // 12 posts; question 8 has two positives, so 10 posts can be its distractors and 11 the others'.
    for seed in ["1", "2", "3", "4", "5"] {
        let recs = convert(&beir(), &out, &["--split", "train", "--distractors", "50", "--seed", seed]);
        for r in &recs {
            let p = posts(r);
            if r.id.starts_with("8-") {
                assert_eq!(p.len(), 11, "{}", r.id);
                let other = if r.id == "8-1042" { &corpus["2187"] } else { &corpus["1042"] };
                assert!(!p.contains(&other.as_str()), "{} holds the other positive", r.id);
            } else {
                assert_eq!(p.len(), 12, "{}", r.id);
            }
        }
    }
    let recs = convert(&beir(), &out, &["--split", "train", "--distractors", "0"]);
    assert!(recs.iter().all(|r| r.text == r.answer));
}

#[test]
fn distractor_count_and_seeded_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let run = |name: &str, seed: &str| {
        convert(&beir(), &out(name), &["--split", "train", "--distractors", "2", "--seed", seed]);
        std::fs::read_to_string(out(name)).unwrap()
    };
    let a = run("a.jsonl", "7");
    let b = run("b.jsonl", "7");
    let c = run("c.jsonl", "8");
    assert_eq!(a, b, "same seed, different output");
    assert_ne!(a, c, "different seeds, same output");
    for r in read_records(&out("c.jsonl")) {
        assert_eq!(posts(&r).len(), 3, "{}", r.id);
    }
    // The default seed is used when none is given, and the first records do not depend on --max-samples.
    let full = convert(&beir(), &out("d.jsonl"), &["--split", "train"]);
    let head = convert(&beir(), &out("e.jsonl"), &["--split", "train", "--max-samples", "2"]);
    assert_eq!(head.len(), 2);
    assert_eq!(head, full[..2]);
}

#[test]
fn task2_tsvs_with_quoted_tab_and_newline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = ok(args(&[&task2()], &out, &["--distractors", "20"]));
    assert!(summary.contains("6 records written, 0 skipped"), "{summary}");
    let recs = read_records(&out);
    assert_eq!(ids(&recs), ["0-18850", "1-14255", "1-229631", "2-308938", "3-100764", "4-551380"]);
    let quoted = &recs[1];
    assert_eq!(quoted.instruction, "My stocks are down 30% — should I sell?");
    assert_eq!(
        quoted.answer,
        "Two choices:\tsell now and take the loss, or hold and rebalance.\n\
         I would say \"don't panic\": the loss only becomes real when you sell."
    );
    // 10 posts, one empty: 9 usable, so the answer and 8 distractors, or 7 for question 1 (two positives).
    for r in &recs {
        let p = posts(r);
        let want = if r.id.starts_with("1-") { 8 } else { 9 };
        assert_eq!(p.len(), want, "{}", r.id);
        assert!(p.iter().all(|post| !post.trim().is_empty()), "empty post in {}", r.id);
    }
    assert!(!posts(&recs[1]).iter().any(|p| p.starts_with("A stop-loss order")));
    assert!(!posts(&recs[2]).iter().any(|p| p.starts_with("Two choices")));
    assert_eq!(recs[4].instruction, "Lohnt sich ein aktiv gemanagter Fonds gegenüber einem ETF?");
    assert!(recs[4].answer.starts_with("Über 90% der aktiven Fonds"));
    // The task-2 TSVs are one split.
    let err = fails(args(&[&task2()], &out, &["--split", "test"]));
    assert!(err.contains("one split, train"), "{err}");
}

/// A copy of a sample folder, to break.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

#[test]
fn unknown_doc_in_qrels_fails_naming_line_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("beir");
    copy_dir(&beir(), &input);
    append(&input.join("qrels/test.tsv"), "42\t99999\t1\n");
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("out.jsonl");
    let err = fails(args(&[&input], &out, &[]));
    assert!(err.contains("test.tsv:5: field `corpus-id`"), "{err}");
    assert!(err.contains("`99999`"), "{err}");
    assert!(files_in(&outdir).is_empty(), "left behind: {:?}", files_in(&outdir));
    let summary = ok(args(&[&input], &out, &["--on-error", "skip"]));
    assert!(summary.contains("3 records written, 1 skipped (unknown post: 1)"), "{summary}");
    assert_eq!(read_records(&out).len(), 3);
}

#[test]
fn bad_corpus_line_and_bad_tsv_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let input = dir.path().join("beir");
    copy_dir(&beir(), &input);
    append(&input.join("corpus.jsonl"), "{\"_id\": \"77\", \"title\": \"\"}\nnot json\n");
    let err = fails(args(&[&input], &out, &[]));
    assert!(err.contains("corpus.jsonl:13: field `text`"), "{err}");
    let summary = ok(args(&[&input], &out, &["--on-error", "skip"]));
    assert!(summary.contains("3 records written, 2 skipped (invalid JSON: 1, missing field: 1)"), "{summary}");

    // Task 2: a row with a column missing, after the record that spans two lines.
    let input = dir.path().join("task2");
    copy_dir(&task2(), &input);
    append(&input.join("FiQA_train_doc_final.tsv"), "10\t999\tno timestamp column\n");
    let err = fails(args(&[&input], &out, &[]));
    assert!(err.contains("FiQA_train_doc_final.tsv:13: expected 4 tab-separated columns"), "{err}");
    assert!(err.contains("found 3"), "{err}");
    let summary = ok(args(&[&input], &out, &["--on-error", "skip"]));
    assert!(summary.contains("6 records written, 1 skipped (wrong column count: 1)"), "{summary}");
}

#[test]
fn wrong_header_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("beir");
    copy_dir(&beir(), &input);
    std::fs::write(input.join("qrels/test.tsv"), "31\t5120\t1\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(args(&[&input], &out, &["--on-error", "skip"]));
    assert!(err.contains("test.tsv:1: expected the header line `query-id\\tcorpus-id\\tscore`"), "{err}");
}

#[test]
fn missing_folder_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let nowhere = dir.path().join("nowhere");
    let err = fails(args(&[&nowhere], &out, &[]));
    assert!(err.contains("nowhere"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(args(&[&empty], &out, &[]));
    assert!(err.contains("holds neither FiQA layout"), "{err}");
    assert!(err.contains("corpus.jsonl") && err.contains("FiQA_train_question_doc_final.tsv"), "{err}");

    let input = dir.path().join("beir");
    copy_dir(&beir(), &input);
    std::fs::remove_file(input.join("qrels/dev.tsv")).unwrap();
    let err = fails(args(&[&input], &out, &["--split", "dev"]));
    assert!(err.contains(&format!("missing file {}", input.join("qrels/dev.tsv").display())), "{err}");

    let input = dir.path().join("task2");
    copy_dir(&task2(), &input);
    std::fs::remove_file(input.join("FiQA_train_question_final.tsv")).unwrap();
    let err = fails(args(&[&input], &out, &[]));
    assert!(err.contains("missing file") && err.contains("FiQA_train_question_final.tsv"), "{err}");

    let b = beir();
    let err = fails(args(&[&b.join("corpus.jsonl"), &b.join("queries.jsonl"), &b.join("qrels/nope.tsv")], &out, &[]));
    assert!(err.contains("missing file") && err.contains("nope.tsv"), "{err}");
    assert!(!out.exists());
}

#[test]
fn empty_post_is_passed_over_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("task2");
    copy_dir(&task2(), &input);
    // Doc 296717 is empty (pandas writes a missing doc as an empty field).
    append(&input.join("FiQA_train_question_doc_final.tsv"), "6\t4\t296717\n");
    let out = dir.path().join("out.jsonl");
    let summary = ok(args(&[&input], &out, &[]));
    assert!(
        summary.contains("6 records written, 0 skipped; note: 1 pairs passed over: empty question or post"),
        "{summary}"
    );
    assert!(!ids(&read_records(&out)).contains(&"4-296717"));
}
