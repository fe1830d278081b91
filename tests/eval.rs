//! `deepsynth eval` against the reference implementations (fixtures from scripts/make_eval_goldens.py: the official
//! SQuAD v2 script, rouge-score, sacrebleu, jiwer, NLTK's Porter stemmer), and the command as a user runs it.

mod common;

use std::path::{Path, PathBuf};

use common::{deepsynth, fails, files_in, ok, repo};
use deepsynth::eval::{self, bleu, porter, rouge, squad, Example};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/eval").join(name)
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The fixture cases as examples, in reference order.
fn examples() -> Vec<Example> {
    let predictions = jsonl(&fixture("predictions.jsonl"));
    jsonl(&fixture("references.jsonl"))
        .into_iter()
        .zip(predictions)
        .map(|(r, p)| {
            assert_eq!(r["id"], p["id"]);
            Example {
                id: r["id"].as_str().unwrap().into(),
                source: r["source"].as_str().unwrap().into(),
                golds: serde_json::from_value(r["answers"].clone()).unwrap(),
                prediction: p["prediction"].as_str().unwrap().into(),
            }
        })
        .collect()
}

fn close(ours: f64, want: &Value, what: &str) {
    let want = want.as_f64().unwrap_or_else(|| panic!("{what}: expected a number, fixture has {want}"));
    assert!((ours - want).abs() <= TOL, "{what}: ours {ours}, reference {want}");
}

fn close_opt(ours: Option<f64>, want: &Value, what: &str) {
    match ours {
        Some(v) => close(v, want, what),
        None => assert!(want.is_null(), "{what}: ours none, reference {want}"),
    }
}

#[test]
fn per_example_scores_equal_the_reference_implementations() {
    let want = expected();
    let cases = want["examples"].as_array().unwrap();
    let examples = examples();
    assert_eq!(cases.len(), examples.len());
    for (e, w) in examples.iter().zip(cases) {
        let id = &e.id;
        assert_eq!(squad::normalize_answer(&e.prediction), w["normalized"].as_str().unwrap(), "{id}: normalize");
        assert_eq!(bleu::tokenize_13a(&e.prediction), w["tok_13a"].as_str().unwrap(), "{id}: 13a");
        for (stem, key) in [(false, "tok_rouge"), (true, "tok_rouge_stemmed")] {
            let want_tokens: Vec<String> = serde_json::from_value(w[key].clone()).unwrap();
            assert_eq!(rouge::tokenize(&e.prediction, stem), want_tokens, "{id}: {key}");
        }
        // The API the training loop calls.
        close(squad::exact_match(&e.prediction, &e.golds), &w["exact"], &format!("{id}: exact_match"));
        close(squad::f1(&e.prediction, &e.golds), &w["f1"], &format!("{id}: f1"));
        let s = eval::score(e, false);
        close(s.exact, &w["exact"], &format!("{id}: exact"));
        close(s.f1, &w["f1"], &format!("{id}: f1"));
        close(s.rouge_l, &w["rougeL"], &format!("{id}: rougeL"));
        close(s.bleu, &w["bleu"], &format!("{id}: sentence bleu"));
        close_opt(s.cer, &w["cer"], &format!("{id}: cer"));
        close(eval::score(e, true).rouge_l, &w["rougeL_stemmed"], &format!("{id}: rougeL stemmed"));
    }
}

#[test]
fn corpus_figures_equal_the_reference_implementations() {
    let want = expected();
    let examples = examples();
    let plain: Vec<_> = examples.iter().map(|e| eval::score(e, false)).collect();
    let stemmed: Vec<_> = examples.iter().map(|e| eval::score(e, true)).collect();
    let groups = want["groups"].as_object().unwrap();
    assert!(groups.len() >= 6, "overall, HasAns, NoAns and several sources");
    for (name, w) in groups {
        let keep = |e: &Example| match name.as_str() {
            "overall" => true,
            "HasAns" => !e.golds.is_empty(),
            "NoAns" => e.golds.is_empty(),
            other => other.strip_prefix("source:") == Some(e.source.as_str()),
        };
        let pick = |scores: &[eval::Scored]| -> Vec<eval::Scored> {
            examples.iter().zip(scores).filter(|(e, _)| keep(e)).map(|(_, s)| s.clone()).collect()
        };
        let m = eval::aggregate(&pick(&plain));
        assert_eq!(m.total as u64, w["total"].as_u64().unwrap(), "{name}: total");
        close(m.exact, &w["exact"], &format!("{name}: exact"));
        close(m.f1, &w["f1"], &format!("{name}: f1"));
        close(m.rouge_l, &w["rougeL"], &format!("{name}: rougeL"));
        close(m.bleu, &w["bleu"], &format!("{name}: corpus bleu"));
        close_opt(m.cer, &w["cer"], &format!("{name}: cer"));
        close(eval::aggregate(&pick(&stemmed)).rouge_l, &w["rougeL_stemmed"], &format!("{name}: rougeL stemmed"));
    }
    // The group figures of the fixture are the official script's own output.
    close(groups["overall"]["f1"].as_f64().unwrap(), &want["official_output"]["f1"], "fixture consistency");
}

#[test]
fn porter_stems_equal_nltk() {
    let fixture: Value = serde_json::from_slice(&std::fs::read(fixture("porter.json")).unwrap()).unwrap();
    assert_eq!(fixture["mode"], "NLTK_EXTENSIONS");
    let pairs = fixture["pairs"].as_array().unwrap();
    assert!(pairs.len() > 5000);
    let wrong: Vec<String> = pairs
        .iter()
        .filter_map(|p| {
            let (word, want) = (p[0].as_str().unwrap(), p[1].as_str().unwrap());
            let ours = porter::stem(word);
            (ours != want).then(|| format!("{word}: ours {ours}, nltk {want}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} of {} stems differ: {:?}", wrong.len(), pairs.len(), &wrong[..wrong.len().min(20)]);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `eval --json` with `args`; the parsed report.
fn eval_json(args: &[&str]) -> Value {
    let mut all = vec!["eval", "--json"];
    all.extend(args);
    let out = deepsynth(&all);
    assert!(out.status.success(), "{}", common::stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn assert_metrics(report: &Value, group: &Value, what: &str) {
    for key in ["exact", "f1", "rougeL", "bleu"] {
        close(report[key].as_f64().unwrap(), &group[key], &format!("{what}: {key}"));
    }
    if group["cer"].is_null() {
        assert!(report["cer"].is_null(), "{what}: cer {}", report["cer"]);
    } else {
        close(report["cer"].as_f64().unwrap(), &group["cer"], &format!("{what}: cer"));
    }
    assert_eq!(report["total"], group["total"], "{what}: total");
}

#[test]
fn cli_report_json_and_per_example_file() {
    let dir = tempfile::tempdir().unwrap();
    let per_example = dir.path().join("scores.jsonl");
    let (p, r) = (fixture("predictions.jsonl"), fixture("references.jsonl"));
    let report = eval_json(&["--predictions", path(&p), "--references", path(&r), "--per-example", path(&per_example)]);
    let want = expected();
    let groups = &want["groups"];
    assert_metrics(&report["overall"], &groups["overall"], "overall");
    assert_metrics(&report["HasAns"], &groups["HasAns"], "HasAns");
    assert_metrics(&report["NoAns"], &groups["NoAns"], "NoAns");
    let sources = report["by_source"].as_object().unwrap();
    assert_eq!(sources.len(), 4);
    for (source, m) in sources {
        assert_metrics(m, &groups[format!("source:{source}")], source);
    }
    assert_eq!(report["missing"], serde_json::json!([]));
    assert!(report.get("speed").is_none(), "no generation, no speed");

    let lines = jsonl(&per_example);
    let cases = want["examples"].as_array().unwrap();
    assert_eq!(lines.len(), cases.len());
    for (line, w) in lines.iter().zip(cases) {
        assert_eq!(line["id"], w["id"]);
        for (key, scale) in [("exact", 100.0), ("f1", 100.0), ("rougeL", 100.0), ("bleu", 1.0)] {
            let want = w[key].as_f64().unwrap() * scale;
            assert!((line[key].as_f64().unwrap() - want).abs() < TOL, "{}: {key}", w["id"]);
        }
        assert_eq!(line["cer"].is_null(), w["cer"].is_null());
    }

    // Stemming changes ROUGE-L only, to rouge-score's stemmed figure.
    let stemmed = eval_json(&["-p", path(&p), "-r", path(&r), "--per-example", path(&per_example), "--rouge-stem"]);
    close(stemmed["overall"]["rougeL"].as_f64().unwrap(), &groups["overall"]["rougeL_stemmed"], "stemmed");
    assert_eq!(stemmed["overall"]["f1"], report["overall"]["f1"]);
}

#[test]
fn cli_table_and_default_per_example_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("preds.jsonl");
    std::fs::copy(fixture("predictions.jsonl"), &p).unwrap();
    let out = deepsynth(["eval", "--predictions", path(&p), "--references", path(&fixture("references.jsonl"))]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let overall = &expected()["groups"]["overall"];
    let all = table.lines().find(|l| l.starts_with("all ")).unwrap_or_else(|| panic!("no `all` row:\n{table}"));
    let want_row = format!("{:.2} {:>7.2}", overall["exact"].as_f64().unwrap(), overall["f1"].as_f64().unwrap());
    assert!(all.contains(&want_row), "{all} lacks {want_row}");
    for row in ["  has answer", "  no answer", "  squad", "  nq", "  marco", "  ocr"] {
        assert!(table.lines().any(|l| l.starts_with(row)), "no {row:?} row:\n{table}");
    }
    assert!(!table.contains("missing"), "{table}");
    assert_eq!(files_in(dir.path()), ["preds.jsonl", "preds.scores.jsonl"]);
    assert_eq!(jsonl(&dir.path().join("preds.scores.jsonl")).len(), 43);
}

#[test]
fn squad_format_and_self_contained_predictions_score_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let references = jsonl(&fixture("references.jsonl"));
    let predictions = jsonl(&fixture("predictions.jsonl"));
    // SQuAD's format: one object id -> answer.
    let squad_file = dir.path().join("predictions.json");
    let map: serde_json::Map<String, Value> =
        predictions.iter().map(|p| (p["id"].as_str().unwrap().to_string(), p["prediction"].clone())).collect();
    std::fs::write(&squad_file, serde_json::to_string_pretty(&map).unwrap()).unwrap();
    // `instruct --batch` lines carry their golds and source: no reference file needed.
    let batch_file = dir.path().join("batch.jsonl");
    let lines: Vec<String> = references
        .iter()
        .zip(&predictions)
        .map(|(r, p)| {
            let line = serde_json::json!({"id": r["id"], "source": r["source"], "instruction": "Answer.",
                "prediction": p["prediction"], "answers": r["answers"], "tokens_generated": 3,
                "prompt_tokens": 9, "vision_tokens": 64});
            line.to_string()
        })
        .collect();
    std::fs::write(&batch_file, lines.join("\n") + "\n").unwrap();
    let overall = &expected()["groups"]["overall"];
    let squad = eval_json(&["-p", path(&squad_file), "-r", path(&fixture("references.jsonl"))]);
    assert_metrics(&squad["overall"], overall, "SQuAD format");
    let own = eval_json(&["-p", path(&batch_file)]);
    assert_metrics(&own["overall"], overall, "self-contained");
    assert_eq!(own["by_source"].as_object().unwrap().len(), 4);
}

#[test]
fn missing_and_unmatched_predictions_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = fixture("references.jsonl");
    let mut lines: Vec<String> =
        std::fs::read_to_string(fixture("predictions.jsonl")).unwrap().lines().map(String::from).collect();
    // Drop an answerable and an unanswerable one; add one no reference has.
    lines.retain(|l| !l.contains("\"plain\"") && !l.contains("\"empty-pred-unanswerable\""));
    lines.push(r#"{"id": "stray", "prediction": "x"}"#.into());
    let p = dir.path().join("p.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();

    let skip = eval_json(&["-p", path(&p), "-r", path(&r)]);
    assert_eq!(skip["missing"], serde_json::json!(["plain", "empty-pred-unanswerable"]));
    assert_eq!(skip["unmatched_predictions"], serde_json::json!(["stray"]));
    assert_eq!(skip["overall"]["total"], 41);
    assert_eq!(skip["HasAns"]["total"], 38);

    let empty = eval_json(&["-p", path(&p), "-r", path(&r), "--missing", "empty"]);
    assert_eq!(empty["overall"]["total"], 43);
    assert_eq!(empty["missing"].as_array().unwrap().len(), 2);
    // "plain" was right; as an empty answer it is wrong, and the unanswerable one stays right.
    let full = &expected()["groups"]["overall"];
    close(empty["overall"]["exact"].as_f64().unwrap() + 100.0 / 43.0, &full["exact"], "missing as empty");

    let out = deepsynth(["eval", "-p", path(&p), "-r", path(&r)]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("missing predictions: 2 (not scored): \"plain\", \"empty-pred-unanswerable\""), "{table}");
    assert!(table.contains("predictions without a reference: 1"), "{table}");

    let err = fails(["eval", "-p", path(&p), "-r", path(&r), "--missing", "fail"]);
    assert!(err.contains("2 references have no prediction") && err.contains("\"plain\""), "{err}");
}

#[test]
fn bad_input_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = fixture("references.jsonl");
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = r#"{"id": "plain", "prediction": "Denver Broncos"}"#;
    let cases = [
        (write("json.jsonl", &format!("{good}\n{good}x\n")), ":2:", "invalid JSON"),
        (write("field.jsonl", &format!("{good}\n{{\"id\": \"a\"}}\n")), ":2: field `prediction`", "missing field"),
        (write("type.jsonl", r#"{"id": 7, "prediction": "x"}"#), ":1: field `id`", "expected a string, found a number"),
        (write("blank.jsonl", &format!("{good}\n\n")), ":2:", "blank line"),
        (write("twice.jsonl", &format!("{good}\n{good}\n")), ":2: duplicate prediction id", "first at"),
        (write("squad.json", r#"{"plain": 3}"#), ": field `plain`", "expected a string"),
    ];
    for (file, place, message) in &cases {
        let err = fails(["eval", "-p", path(file), "-r", path(&r)]);
        assert!(err.contains(&format!("{}{place}", file.display())) && err.contains(message), "{err}");
    }
    let p = fixture("predictions.jsonl");
    let bad_ref = write("refs.jsonl", "{\"id\": \"a\", \"source\": \"squad\"}\n");
    let err = fails(["eval", "-p", path(&p), "-r", path(&bad_ref)]);
    assert!(err.contains(&format!("{}:1: field `text`", bad_ref.display())), "{err}");
    let other = write(
        "other.jsonl",
        r#"{"id": "x", "source": "squad", "text": "t", "instruction": "q", "answer": "", "answers": []}"#,
    );
    let err = fails(["eval", "-p", path(&p), "-r", path(&other)]);
    assert!(err.contains("nothing to score"), "{err}");
    let err = fails(["eval", "-p", path(&p)]);
    assert!(err.contains(":1: field `answers`: missing"), "{err}");
    let err = fails(["eval", "-p", path(&d.join("absent.jsonl")), "-r", path(&r)]);
    assert!(err.contains("absent.jsonl"), "{err}");
    // Nothing written by a failed run.
    assert!(files_in(d).iter().all(|f| !f.contains("scores")), "{:?}", files_in(d));

    for usage in [
        vec!["eval"],
        vec!["eval", "--model", "m"],
        vec!["eval", "--dataset", "d.jsonl", "-p", "p.jsonl"],
        vec!["eval", "--model", "m", "--dataset", "d", "-p", "p.jsonl"],
        vec!["eval", "-p", "p.jsonl", "--missing", "maybe"],
    ] {
        let out = deepsynth(&usage);
        assert_eq!(out.status.code(), Some(2), "{usage:?}: {}", common::stderr(&out));
    }
}

#[test]
fn eval_with_a_model_generates_then_scores() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    ok(["init", "--preset", "tiny", "--output", path(&model)]);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let dataset = data.join("dev.jsonl");
    let records = [
        r#"{"id": "q1", "source": "squad", "text": "Invoice 2291. Total due: 1,250 EUR.", "instruction": "What is the total?", "answer": "1,250 EUR", "answers": ["1,250 EUR"]}"#,
        r#"{"id": "q2", "source": "squad", "text": "Invoice 2291. Total due: 1,250 EUR.", "instruction": "Who signed?", "answer": "", "answers": []}"#,
        r#"{"id": "q3", "source": "nq", "text": "The Eiffel Tower is in Paris.", "instruction": "Where is it?", "answer": "Paris", "answers": ["Paris", "in Paris"]}"#,
    ];
    std::fs::write(&dataset, records.join("\n") + "\n").unwrap();
    let report = eval_json(&[
        "--model",
        path(&model),
        "--dataset",
        path(&dataset),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
    ]);

    let predictions = data.join("dev.predictions.jsonl");
    assert_eq!(files_in(&data), ["dev.jsonl", "dev.predictions.jsonl", "dev.predictions.scores.jsonl"]);
    let lines = jsonl(&predictions);
    assert_eq!(lines.iter().map(|l| l["id"].as_str().unwrap()).collect::<Vec<_>>(), ["q1", "q2", "q3"]);
    let speed = &report["speed"];
    assert_eq!(speed["requests"], 3);
    let tokens: u64 = lines.iter().map(|l| l["tokens_generated"].as_u64().unwrap()).sum();
    assert_eq!(speed["tokens_generated"].as_u64().unwrap(), tokens);
    assert!((1..=24).contains(&tokens), "{tokens} tokens at most 8 each");
    let (p50, p95) = (speed["latency_p50_s"].as_f64().unwrap(), speed["latency_p95_s"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p95 && p95 <= speed["seconds"].as_f64().unwrap(), "{speed}");
    assert!(speed["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(speed["peak_rss_mib"].as_f64().unwrap() > 10.0, "{speed}");
    assert_eq!(report["overall"]["total"], 3);
    assert_eq!(report["by_source"].as_object().unwrap().len(), 2);

    // The written predictions score the same on their own.
    let again = eval_json(&[
        "-p",
        path(&predictions),
        "-r",
        path(&dataset),
        "--per-example",
        path(&dir.path().join("s.jsonl")),
    ]);
    assert_eq!(again["overall"], report["overall"]);
}
