//! `deepsynth convert marco` on v2.1 (columnar JSON, columns and rows in any order) and v1.1 (JSON lines),
//! gzip, and broken input.

mod common;

use std::path::Path;

use common::*;
use deepsynth::data::Record;
use serde_json::{json, Map, Value};

const V21: &str = "data/marco/dev_v2.1-sample.json";
const V11: &str = "data/marco/dev_v1.1-sample.jsonl";
const COLUMNS: [&str; 6] = ["answers", "passages", "query", "query_id", "query_type", "wellFormedAnswers"];

fn convert(input: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["convert", "marco", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(args)
}

fn sample_v21() -> Map<String, Value> {
    let text = std::fs::read_to_string(repo().join(V21)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The sample's columns in `columns` order, each column's rows in the order `rows(column)` gives.
fn columnar(columns: &[&str], rows: impl Fn(&str) -> Vec<&'static str>) -> String {
    let sample = sample_v21();
    let mut out = Map::new();
    for &column in columns {
        let cells = rows(column).into_iter().map(|r| (r.to_string(), sample[column][r].clone())).collect();
        out.insert(column.to_string(), Value::Object(cells));
    }
    Value::Object(out).to_string()
}

fn sample_records() -> Vec<Record> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&repo().join(V21), &out, &[]);
    read_records(&out)
}

#[test]
fn v21_golds_passages_and_unicode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("marco.jsonl");
    let summary = convert(&repo().join(V21), &out, &[]);
    assert!(summary.contains("4 records written, 0 skipped"), "{summary}");
    let recs = read_records(&out);
    assert_eq!(recs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["1048578", "524332", "19699", "1084910"]);
    let first = &recs[0];
    assert_eq!(first.source, "marco");
    assert_eq!(first.instruction, "how long is the limmat river");
    assert_eq!(
        first.text,
        "The Limmat is a river in Switzerland. It begins at the outflow of Lake Zürich.\n\n\
         With a length of about 36 km, the Limmat flows north-west from Zürich until it joins the Aare.\n\n\
         Boat tours on the Limmat run from April to October."
    );
    // wellFormedAnswers "[]" adds nothing.
    assert_eq!(first.answers, ["The Limmat is about 36 km long."]);
    // A wellFormedAnswers list follows the answers.
    assert_eq!(recs[1].instruction, "where is zürich located");
    assert_eq!(
        recs[1].answers,
        [
            "In northern Switzerland, at the northwestern tip of Lake Zürich.",
            "Zürich is located in northern Switzerland, at the northwestern tip of Lake Zürich."
        ]
    );
    assert!(recs[1].text.contains("Genève and Zürich are Switzerland’s two global cities — both"), "{}", recs[1].text);
    // "No Answer Present." is no gold; \u escapes (a surrogate pair too) are decoded.
    assert_eq!(recs[2].answer, "");
    assert!(recs[2].answers.is_empty());
    assert_eq!(recs[2].instruction, "what does the name 東京 mean");
    assert!(
        recs[2].text.starts_with("東京は日本の首都である。 Tokyo is the capital of Japan 🗼.\n\n"),
        "{}",
        recs[2].text
    );
    // A wellFormedAnswer equal to an answer is not repeated.
    assert_eq!(recs[3].answer, "About 120 °C.");
    assert_eq!(
        recs[3].answers,
        ["About 120 °C.", "around 120 degrees Celsius", "A pressure cooker reaches a temperature of about 120 °C."]
    );
}

#[test]
fn v21_columns_and_rows_in_any_order_gzipped() {
    let shuffled =
        columnar(&["query_type", "wellFormedAnswers", "query_id", "passages", "answers", "query"], |c| match c {
            "passages" => vec!["2", "0", "3", "1"],
            "query" | "answers" => vec!["3", "2", "1", "0"],
            _ => vec!["1", "3", "0", "2"],
        });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("train_v2.1.json.gz");
    std::fs::write(&input, gzip(shuffled.as_bytes())).unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&input, &out, &[]);
    let recs = read_records(&out);
    // The output follows the passages column; each record is the one the unshuffled sample gives.
    let by_id = sample_records();
    assert_eq!(recs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["19699", "1048578", "1084910", "524332"]);
    for rec in &recs {
        assert_eq!(Some(rec), by_id.iter().find(|r| r.id == rec.id));
    }
}

#[test]
fn v21_passages_column_first() {
    let mut order = COLUMNS.to_vec();
    order.retain(|&c| c != "passages");
    order.insert(0, "passages");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dev_v2.1.json");
    std::fs::write(&input, columnar(&order, |_| vec!["0", "1", "2", "3"])).unwrap();
    assert!(std::fs::read_to_string(&input).unwrap().starts_with("{\"passages\":{\"0\":[{"));
    let out = dir.path().join("out.jsonl");
    convert(&input, &out, &[]);
    assert_eq!(read_records(&out), sample_records());
}

#[test]
fn v11_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("dev_v1.1.json.gz");
    std::fs::write(&gz, gzip(&std::fs::read(repo().join(V11)).unwrap())).unwrap();
    for input in [repo().join(V11), gz] {
        let out = dir.path().join("out.jsonl");
        let summary = convert(&input, &out, &[]);
        assert!(summary.contains("3 records written, 0 skipped"), "{summary}");
        let recs = read_records(&out);
        assert_eq!(recs[0].id, "9652");
        assert_eq!(recs[0].answers, ["Aare"]);
        assert_eq!(
            recs[0].text,
            "The Aare is the longest river that both rises and ends entirely within Switzerland.\n\n\
             In Bern, people swim in the Aare in summer — the water reaches 20 °C."
        );
        assert_eq!(recs[1].text, "Москва — столица России.");
        assert!(recs[1].answers.is_empty());
        assert_eq!(recs[2].instruction, "what is crème brûlée");
        assert_eq!(
            recs[2].answers,
            ["Crème brûlée is a custard dessert topped with caramelised sugar.", "a custard dessert"]
        );
        assert_eq!(recs[2].text.matches("\n\n").count(), 2);
    }
}

#[test]
fn several_inputs_and_max_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (v21, v11) = (repo().join(V21), repo().join(V11));
    let both = ["convert", "marco", "--input", v21.to_str().unwrap(), v11.to_str().unwrap()];
    ok(both.iter().chain(&["--output", out.to_str().unwrap()]));
    assert_eq!(read_records(&out).len(), 7);
    ok(both.iter().chain(&["--output", out.to_str().unwrap(), "--max-samples", "5"]));
    let ids: Vec<String> = read_records(&out).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["1048578", "524332", "19699", "1084910", "9652"]);
    convert(&v21, &out, &["--max-samples", "2"]);
    assert_eq!(read_records(&out).len(), 2);
    convert(&v11, &out, &["--max-samples", "1"]);
    assert_eq!(read_records(&out).len(), 1);
}

#[test]
fn truncated_v21_fails_naming_file_line_column_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.json");
    let raw = std::fs::read_to_string(repo().join(V21)).unwrap();
    std::fs::write(&input, &raw[..1500]).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("out.jsonl");
    for policy in ["fail", "skip"] {
        let err = fails(convert_args("marco", &input, &out, &["--on-error", policy]));
        assert!(err.contains("broken.json:1:1500: truncated JSON"), "{err}");
        assert!(files_in(&outdir).is_empty(), "left behind: {:?}", files_in(&outdir));
    }
}

#[test]
fn bad_v11_lines_fail_or_are_skipped() {
    let sample = std::fs::read_to_string(repo().join(V11)).unwrap();
    let good: Vec<&str> = sample.lines().collect();
    // A bad first line must not hide that the file is v1.1.
    let text = [
        r#"{"answers": ["x"], "passages": [{"passage_text": "p"}], "query": "q", "query_id": "nine"}"#,
        good[0],
        r#"{"answers": [], "passages": [{"is_selected": 0, "url": "http://a.example", "passage_te"#,
        "",
        good[1],
        r#"{"answers": [], "passages": [], "query": "no passages", "query_id": 7}"#,
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(["convert", "marco", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("in.jsonl:1:") && err.contains("expected u64"), "{err}");
    assert!(!out.exists());
    let summary = convert(&input, &out, &["--on-error", "skip"]);
    assert!(
        summary.contains("2 records written, 3 skipped (no passages: 1, truncated JSON: 1, unexpected JSON shape: 1)"),
        "{summary}"
    );
    assert!(summary.contains("in.jsonl:3:"), "{summary}");
    assert!(summary.contains("in.jsonl:6: field `passages`: no passages"), "{summary}");
    assert_eq!(read_records(&out).iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["9652", "9653"]);
}

#[test]
fn bad_v21_rows_fail_or_are_skipped() {
    let mut v = sample_v21();
    v["query"]["1"] = json!(7);
    v["passages"]["2"] = json!([{"is_selected": 0, "url": "http://x.example"}]);
    v["wellFormedAnswers"]["3"] = json!("none");
    // Row 4 has passages only; row 5 everything but passages.
    v["passages"]["4"] = v["passages"]["0"].clone();
    for c in ["answers", "query", "query_id", "query_type", "wellFormedAnswers"] {
        v[c]["5"] = v[c]["0"].clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.json");
    std::fs::write(&input, Value::Object(v).to_string()).unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(["convert", "marco", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(
        err.contains(r#"bad.json: row "1": field `query`: unexpected JSON shape: invalid type: integer `7`"#),
        "{err}"
    );
    assert!(!out.exists());
    let summary = convert(&input, &out, &["--on-error", "skip"]);
    assert!(summary.contains("1 records written, 5 skipped (missing field: 2, unexpected JSON shape: 3)"), "{summary}");
    for expected in [
        r#"row "2": field `passages`: unexpected JSON shape: missing field `passage_text`"#,
        r#"row "3": field `wellFormedAnswers`: unexpected JSON shape: expected a list of strings or "[]", found "none""#,
        r#"row "4": field `query`: row has passages but no `query`"#,
        r#"row "5": field `passages`: row has no `passages`"#,
    ] {
        assert!(summary.contains(expected), "{expected} not in {summary}");
    }
    assert_eq!(read_records(&out)[0].id, "1048578");
}

#[test]
fn eval_has_no_answer_columns() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("eval_v2.1_public.json");
    std::fs::write(&input, columnar(&["passages", "query", "query_id", "query_type"], |_| vec!["0", "1", "2", "3"]))
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = convert(&input, &out, &[]);
    assert!(summary.contains("4 records written, 0 skipped; note: 4 questions without gold answers"), "{summary}");
    let recs = read_records(&out);
    assert!(recs.iter().all(|r| r.answer.is_empty() && r.answers.is_empty()));
    assert_eq!(recs[1].instruction, "where is zürich located");
}

#[test]
fn other_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cases = [
        ("no-query.json", columnar(&["passages", "query_id"], |_| vec!["0"]), "no `query` column"),
        ("list.json", "[1, 2]".to_string(), "list.json:1:1: unexpected JSON shape: invalid type: sequence"),
        ("empty.json", String::new(), "empty.json:1: truncated JSON"),
    ];
    for (name, text, expected) in cases {
        let input = dir.path().join(name);
        std::fs::write(&input, text).unwrap();
        let err = fails(["convert", "marco", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("expected MS MARCO"), "{name}: {err}");
        assert!(!out.exists());
    }
    // A SQuAD file starts like a v1.1 line: it is read as JSON lines, and its first line is reported.
    let squad = repo().join("data/squad/dev-v1.1-sample.json");
    let err = fails(["convert", "marco", "--input", squad.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("dev-v1.1-sample.json:1:") && err.contains("missing field `answers`"), "{err}");
}
