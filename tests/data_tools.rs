//! `deepsynth data mix|split|validate|synth` on small record files built in temporary folders.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use deepsynth::data::Record;

/// `n` distinct records of `source`, ids `<source>-<i>`.
fn records(source: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let golds = vec![format!("réponse {i}")];
            Record::new(format!("{source}-{i}"), source, format!("Page {i} de {source} — Zürich"), "Wo?", golds)
        })
        .collect()
}

fn write_jsonl(path: &Path, records: &[Record]) {
    let lines: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(path, lines.concat()).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn count_by_source(recs: &[Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in recs {
        *counts.entry(r.source.clone()).or_default() += 1;
    }
    counts
}

fn ids(recs: &[Record]) -> Vec<String> {
    recs.iter().map(|r| r.id.clone()).collect()
}

// ---------- mix ----------

fn mix(inputs: &[String], out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&str> = vec!["data", "mix", "--input"];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["--output", s(out)]);
    args.extend_from_slice(extra);
    ok(args)
}

#[test]
fn mix_weights_one_half_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"), dir.path().join("c.jsonl"));
    write_jsonl(&a, &records("squad", 10));
    write_jsonl(&b, &records("nq", 10));
    write_jsonl(&c, &records("fiqa", 4));
    let out = dir.path().join("mix.jsonl");
    let summary = mix(&[s(&a).into(), format!("{}:0.5", s(&b)), format!("{}:2", s(&c))], &out, &[]);
    assert!(summary.contains("23 records written, 0 duplicates dropped"), "{summary}");
    assert!(summary.contains("(weight 0.5): 10 read, 0 duplicates dropped, 5 written"), "{summary}");

    let recs = read_records(&out);
    let expected: BTreeMap<String, usize> = [("squad", 10), ("nq", 5), ("fiqa", 8)].map(|(k, v)| (k.into(), v)).into();
    assert_eq!(count_by_source(&recs), expected);
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    recs.iter().for_each(|r| *per_id.entry(r.id.clone()).or_default() += 1);
    // Weight 1: each once; 0.5: five distinct records; 2: each exactly twice.
    assert!((0..10).all(|i| per_id[&format!("squad-{i}")] == 1));
    assert!(per_id.iter().filter(|(id, _)| id.starts_with("nq-")).all(|(_, &n)| n == 1));
    assert!((0..4).all(|i| per_id[&format!("fiqa-{i}")] == 2));
    // Records come through unchanged.
    let original = &records("squad", 10)[3];
    assert_eq!(recs.iter().find(|r| r.id == "squad-3").unwrap(), original);
}

#[test]
fn mix_paths_holding_colons() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("run:7.jsonl");
    write_jsonl(&odd, &records("nq", 3));
    let out = dir.path().join("out.jsonl");
    mix(&[s(&odd).into()], &out, &[]);
    assert_eq!(read_records(&out).len(), 3);
    mix(&[format!("{}:2", s(&odd))], &out, &[]);
    assert_eq!(read_records(&out).len(), 6);
}

#[test]
fn mix_drops_duplicates_across_inputs_by_normalised_text_and_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let first = Record::new("a-1", "squad", "ZÜRICH  liegt\tan der Limmat.", "Wo liegt Zürich?", ["Limmat".into()]);
    let other = Record::new("a-2", "squad", "Bern liegt an der Aare.", "Wo liegt Bern?", ["Aare".into()]);
    write_jsonl(&a, &[first.clone(), other]);
    let same =
        Record::new("b-1", "nq", " zürich liegt an der limmat. ", "wo  liegt ZÜRICH?\n", ["an der Limmat".into()]);
    // Same text, a different question: not a duplicate.
    let differs = Record::new("b-2", "nq", "Zürich liegt an der Limmat.", "Wie groß ist Zürich?", Vec::new());
    write_jsonl(&b, &[same, differs]);
    let out = dir.path().join("out.jsonl");
    let summary = mix(&[s(&a).into(), s(&b).into()], &out, &[]);
    assert!(summary.contains("3 records written, 1 duplicates dropped"), "{summary}");
    assert!(summary.contains("b.jsonl (weight 1): 2 read, 1 duplicates dropped, 1 written"), "{summary}");
    let recs = read_records(&out);
    let got: BTreeSet<String> = ids(&recs).into_iter().collect();
    assert_eq!(got, ["a-1", "a-2", "b-2"].map(String::from).into());
    // The first occurrence is the one kept, unchanged.
    assert_eq!(recs.iter().find(|r| r.id == "a-1").unwrap(), &first);
}

#[test]
fn mix_order_depends_on_the_seed_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    write_jsonl(&a, &records("squad", 20));
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        mix(&[format!("{}:0.5", s(&a))], &out, &["--seed", seed]);
        ids(&read_records(&out))
    };
    let (one, again, other) = (run("7", "1.jsonl"), run("7", "2.jsonl"), run("8", "3.jsonl"));
    assert_eq!(one.len(), 10);
    assert_eq!(one, again);
    assert_ne!(one, other);
    // Weight 1: every record once, shuffled out of input order.
    let out = dir.path().join("all.jsonl");
    mix(&[s(&a).into()], &out, &[]);
    let (shuffled, original) = (ids(&read_records(&out)), ids(&records("squad", 20)));
    assert_ne!(shuffled, original);
    assert_eq!(shuffled.iter().collect::<BTreeSet<_>>(), original.iter().collect::<BTreeSet<_>>());
}

#[test]
fn mix_bad_line_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    write_jsonl(&a, &records("squad", 2));
    let good = serde_json::to_string(&records("nq", 1)[0]).unwrap();
    std::fs::write(&b, format!("{good}\n{}\n", good.replace("\"answers\":[", "\"answers\":[3,"))).unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(["data", "mix", "--input", s(&a), s(&b), "--output", s(&out)]);
    assert!(err.contains("b.jsonl:2: field `answers[0]`: expected a string, found a number"), "{err}");
    assert_eq!(files_in(dir.path()), ["a.jsonl", "b.jsonl"]);
}

#[test]
fn mix_negative_weight_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    write_jsonl(&a, &records("squad", 2));
    let out = deepsynth(["data", "mix", "--input", &format!("{}:-1", s(&a)), "--output", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("weight must be a non-negative number"), "{}", stderr(&out));
}

// ---------- split ----------

fn split_outputs(dir: &Path) -> [Vec<Record>; 3] {
    ["train", "validation", "test"].map(|name| read_records(&dir.join(format!("{name}.jsonl"))))
}

#[test]
fn split_is_stratified_by_source_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Interleaved sources, gzipped under a plain name.
    let (squad, nq) = (records("squad", 10), records("nq", 20));
    let input: Vec<Record> =
        nq.iter().enumerate().flat_map(|(i, r)| squad.get(i).into_iter().chain([r])).cloned().collect();
    let plain = dir.path().join("plain.jsonl");
    write_jsonl(&plain, &input);
    let gz = dir.path().join("all.jsonl");
    std::fs::write(&gz, gzip(&std::fs::read(&plain).unwrap())).unwrap();
    let out = dir.path().join("splits");
    let summary = ok(["data", "split", "--input", s(&gz), "--output-dir", s(&out)]);
    assert!(summary.contains("24 train, 3 validation, 3 test"), "{summary}");
    assert!(summary.contains("nq: 16 / 2 / 2") && summary.contains("squad: 8 / 1 / 1"), "{summary}");

    let splits = split_outputs(&out);
    let counts: Vec<BTreeMap<String, usize>> = splits.iter().map(|recs| count_by_source(recs)).collect();
    let expect = |nq: usize, squad: usize| BTreeMap::from([("nq".to_string(), nq), ("squad".to_string(), squad)]);
    assert_eq!(counts, [expect(16, 8), expect(2, 1), expect(2, 1)]);

    // No overlap, and the union is the input exactly.
    let all: Vec<&Record> = splits.iter().flatten().collect();
    let unique: BTreeSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(unique.len(), all.len());
    let mut union: Vec<Record> = all.into_iter().cloned().collect();
    let mut expected = input.clone();
    union.sort_by(|a, b| a.id.cmp(&b.id));
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(union, expected);

    // Each output keeps the input's order.
    let position = |id: &str| input.iter().position(|r| r.id == id).unwrap();
    for recs in &splits {
        let positions: Vec<usize> = recs.iter().map(|r| position(&r.id)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
}

#[test]
fn split_membership_depends_on_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_jsonl(&input, &records("squad", 40));
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        ok(["data", "split", "--input", s(&input), "--output-dir", s(&out), "--seed", seed]);
        split_outputs(&out).map(|recs| ids(&recs))
    };
    let one = run("1", "a");
    assert_eq!(one, run("1", "b"));
    assert_ne!(one, run("2", "c"));
    // With custom fractions.
    let out = dir.path().join("d");
    ok(["data", "split", "--input", s(&input), "--output-dir", s(&out), "--fractions", "0.5,0.5,0"]);
    assert_eq!(split_outputs(&out).map(|r| r.len()), [20, 20, 0]);
}

#[test]
fn split_bad_fractions_are_usage_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_jsonl(&input, &records("squad", 4));
    let out = dir.path().join("out");
    for (fractions, why) in [
        ("0.8,0.3,0.1", "must sum to 1"),
        ("0.9,0.1", "expected 3 fractions"),
        ("1.2,-0.1,-0.1", "non-negative"),
        ("0.8,x,0.1", "`x` is not a number"),
    ] {
        let res = deepsynth(["data", "split", "--input", s(&input), "--output-dir", s(&out), "--fractions", fractions]);
        let err = stderr(&res);
        assert_eq!(res.status.code(), Some(2), "{fractions}: {err}");
        assert!(err.contains("--fractions") && err.contains(why), "{fractions}: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn split_bad_line_writes_none_of_the_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let good = serde_json::to_string(&records("squad", 1)[0]).unwrap();
    std::fs::write(&input, format!("{good}\n{good}\n{{\"id\": \"x\", \"source\": \"squad\"\n")).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = fails(["data", "split", "--input", s(&input), "--output-dir", s(&out)]);
    assert!(err.contains("in.jsonl:3:") && err.contains("truncated JSON"), "{err}");
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

// ---------- validate ----------

fn validate(path: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["data", "validate", s(path)];
    args.extend_from_slice(extra);
    let out = deepsynth(args);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out))
}

#[test]
fn validate_clean_file_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.jsonl");
    let mut recs = records("squad", 3);
    recs.push(Record::new("nq-9", "nq", "東京は日本の首都である。", "日本の首都は？", Vec::new()));
    write_jsonl(&path, &recs);
    let (code, stdout, stderr) = validate(&path, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "valid: 4 records");
    let gz = dir.path().join("ok.jsonl.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&path).unwrap())).unwrap();
    assert_eq!(validate(&gz, &[]).1.trim(), "valid: 4 records");
}

/// One line per problem kind, after a clean first line (which later lines duplicate).
fn broken_lines() -> Vec<(&'static str, String)> {
    let rec = |id: &str, text: &str, instruction: &str, answer: &str, answers: &[&str]| {
        serde_json::json!({"id": id, "source": "squad", "text": text, "instruction": instruction,
                           "answer": answer, "answers": answers})
        .to_string()
    };
    vec![
        ("", rec("q1", "Zürich: Limmat.", "Wo?", "Limmat", &["Limmat"])),
        ("invalid JSON", "{\"id\": \"q2\", oops}".into()),
        ("truncated JSON", "{\"id\": \"q3\"".into()),
        ("not an object", "[\"q4\"]".into()),
        ("unknown field", rec("q5", "t", "i", "", &[]).replace("\"answers\"", "\"extra\":1,\"answers\"")),
        ("missing field", rec("q6", "t", "i", "", &[]).replace(",\"source\":\"squad\"", "")),
        ("wrong type", rec("q7", "t", "i", "", &[]).replace("\"answers\":[]", "\"answers\":\"a\"")),
        ("empty field", rec("q8", "   ", "i", "", &[])),
        ("answer mismatch", rec("q9", "t9", "i", "b", &["a", "b"])),
        ("invalid answers", rec("q10", "t10", "i", "a", &["a", "a"])),
        ("duplicate id", rec("q1", "t11", "i", "", &[])),
        ("duplicate record", rec("q12", "Zürich: Limmat.", "Wo?", "Limmat", &["Limmat"])),
        ("too long", rec("q13", "ein sehr langer Text", "i", "", &[])),
        ("blank line", "".into()),
    ]
}

#[test]
fn validate_reports_each_problem_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let lines = broken_lines();
    let mut bytes: Vec<u8> = lines.iter().flat_map(|(_, l)| format!("{l}\n").into_bytes()).collect();
    bytes.extend(b"{\"id\": \"caf\xe9\"}\n");
    std::fs::write(&path, bytes).unwrap();

    let (code, report, stderr) = validate(&path, &["--max-text-chars", "15"]);
    assert_eq!(code, Some(1), "{report}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("bad.jsonl is not valid: 14 problems"), "{stderr}");
    assert!(report.starts_with(&format!("invalid: {}: 14 problems; 1 of 15 lines valid", s(&path))), "{report}");
    for (kind, _) in lines.iter().skip(1) {
        assert!(report.contains(&format!("\n  {kind}: 1\n")), "{kind} missing from:\n{report}");
    }
    assert!(report.contains("invalid UTF-8: 1"), "{report}");
    // The first problems are shown with file:line and field.
    for shown in [
        "bad.jsonl:2:14: invalid JSON",
        "bad.jsonl:5: field `extra`: unknown field",
        "bad.jsonl:6: field `source`: missing field",
        "bad.jsonl:7: field `answers`: expected an array of strings, found a string",
        "bad.jsonl:8: field `text`: empty",
        "bad.jsonl:9: field `answer`: is \"b\" but the first of `answers` is \"a\"",
        "bad.jsonl:10: field `answers[1]`: repeats an earlier gold answer",
        "bad.jsonl:11: field `id`: id already used on line 1",
    ] {
        assert!(report.contains(shown), "{shown:?} missing from:\n{report}");
    }
    assert!(report.contains("... and 4 more"), "{report}");
}

#[test]
fn validate_limits_count_characters_not_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.jsonl");
    // 5 characters, 15 bytes.
    write_jsonl(&path, &[Record::new("1", "squad", "ü", "日本の首都", ["東京東京東".into()])]);
    assert_eq!(validate(&path, &["--max-instruction-chars", "5", "--max-answer-chars", "5"]).0, Some(0));
    let (code, report, _) = validate(&path, &["--max-answer-chars", "4"]);
    assert_eq!(code, Some(1));
    assert!(report.contains("long.jsonl:1: field `answer`: 5 characters, limit 4"), "{report}");
    assert!(report.contains("long.jsonl:1: field `answers[0]`: 5 characters, limit 4"), "{report}");
    assert!(report.contains("too long: 2"), "{report}");
}

#[test]
fn validate_missing_file_is_an_error() {
    let err = fails(["data", "validate", "/nonexistent/records.jsonl"]);
    assert!(err.contains("cannot open /nonexistent/records.jsonl"), "{err}");
}

#[test]
fn synth_ask_puts_the_asked_keys_on_every_card_and_refuses_what_it_cannot_ask() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cc.jsonl");
    let synth = |extra: &[&str]| {
        let mut args = vec!["data", "synth", "--count", "40", "--values", "random", "--output", s(&out)];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    ok(synth(&["--ask", "city,code"]));
    let recs = read_records(&out);
    assert_eq!(recs.len(), 40);
    for r in &recs {
        assert!(r.text.contains("City: ") && r.text.contains("Code: "), "{r:?}");
        assert!(["What is the city?", "What is the code?"].contains(&r.instruction.as_str()), "{r:?}");
    }
    std::fs::remove_file(&out).unwrap();
    let err = fails(synth(&["--ask", "gate"]));
    assert!(err.contains("--ask gate") && err.contains("Person"), "{err}");
    assert!(fails(synth(&["--ask", "city,city"])).contains("twice"));
    assert!(fails(synth(&["--ask", "city", "--task", "ocr"])).contains("--task qa"));
    assert!(!out.exists(), "nothing written on a refused command");
}
