//! `deepsynth convert squad` on v1.1 and v2.0 files, gzip, and broken input.

mod common;

use common::*;

fn convert(input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["convert", "squad", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(args)
}

#[test]
fn v2_unicode_unanswerable_and_duplicate_golds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("squad.jsonl");
    let summary = convert(&repo().join("data/squad/dev-v2.0-sample.json"), &out, &[]);
    assert!(summary.contains("5 records written, 0 skipped"), "{summary}");
    let recs = read_records(&out);
    assert_eq!(recs.len(), 5);
    let first = &recs[0];
    assert_eq!(first.id, "sq2-0001");
    assert_eq!(first.source, "squad");
    // Byte-for-byte context, trailing spaces included.
    assert!(first.text.ends_with("twin towers.  "), "{:?}", first.text);
    assert_eq!(first.answers, vec!["Zürich", "Zürich is the largest city"]);
    assert_eq!(first.answer, "Zürich");
    assert_eq!(recs[1].answers, vec!["the Limmat", "Limmat"]);
    // Unanswerable: plausible answers are not gold.
    assert_eq!(recs[2].id, "sq2-0003");
    assert_eq!(recs[2].answer, "");
    assert!(recs[2].answers.is_empty());
    assert_eq!(recs[3].text, "東京は日本の首都である。人口は約1400万人。");
    assert_eq!(recs[3].instruction, "日本の首都はどこですか？");
    assert_eq!(recs[3].answer, "東京");
    assert!(recs[4].answers.is_empty());
}

#[test]
fn v1_and_gzip_detected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(repo().join("data/squad/dev-v1.1-sample.json")).unwrap();
    // A gzipped file whose name says nothing about gzip.
    let gz = dir.path().join("squad-v1.json");
    std::fs::write(&gz, gzip(&raw)).unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&gz, &out, &[]);
    let recs = read_records(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].answers, vec!["10th and 11th centuries", "the 10th and 11th centuries"]);
    assert_eq!(recs[1].answer, "France");
}

#[test]
fn several_inputs_and_max_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let v1 = repo().join("data/squad/dev-v1.1-sample.json");
    let v2 = repo().join("data/squad/dev-v2.0-sample.json");
    ok(["convert", "squad", "--input", v1.to_str().unwrap(), v2.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_eq!(read_records(&out).len(), 7);
    convert(&v2, &out, &["--max-samples", "3"]);
    assert_eq!(read_records(&out).len(), 3);
}

#[test]
fn misaligned_answer_start_is_noted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        r#"{"data":[{"paragraphs":[{"context":"añb c","qas":[{"id":"x","question":"q?","answers":[{"text":"b","answer_start":2},{"text":"c","answer_start":0}]}]}]}]}"#,
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let summary = convert(&input, &out, &[]);
    assert!(summary.contains("note: 1 answers whose answer_start"), "{summary}");
    assert_eq!(read_records(&out)[0].answers, vec!["b", "c"]);
}

#[test]
fn truncated_json_fails_naming_file_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.json");
    let raw = std::fs::read_to_string(repo().join("data/squad/dev-v2.0-sample.json")).unwrap();
    std::fs::write(&input, &raw[..raw.len() / 2]).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("out.jsonl");
    for policy in ["fail", "skip"] {
        let err = fails(convert_args("squad", &input, &out, &["--on-error", policy]));
        assert!(err.contains("broken.json:1:"), "{err}");
        assert!(err.contains("truncated JSON"), "{err}");
        assert!(files_in(&outdir).is_empty(), "left behind: {:?}", files_in(&outdir));
    }
}

#[test]
fn bad_question_fails_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        "{\"data\":[{\"paragraphs\":[{\"context\":\"abc\",\"qas\":[\n{\"id\":\"a\",\"question\":\"q?\",\"answers\":[]},\n{\"id\":\"b\",\"answers\":[]}]}]}]}",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(["convert", "squad", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("in.json: data[0].paragraphs[0].qas[1]: field `question`"), "{err}");
    assert!(!out.exists());
    let summary = convert(&input, &out, &["--on-error", "skip"]);
    assert!(summary.contains("1 records written, 1 skipped (missing field: 1)"), "{summary}");
    assert_eq!(read_records(&out).len(), 1);
}

#[test]
fn wrong_shape_names_expected_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, "{\"version\": \"v2.0\",\n \"articles\": []}").unwrap();
    let out = dir.path().join("out.jsonl");
    let err = fails(["convert", "squad", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("in.json:2:"), "{err}");
    assert!(err.contains("missing field `data`"), "{err}");
    assert!(err.contains("expected a SQuAD"), "{err}");
}

#[test]
fn output_gets_the_usual_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&repo().join("data/squad/dev-v1.1-sample.json"), &out, &[]);
    // A file made the ordinary way in the same folder shows what the umask allows.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain));
}

#[test]
fn article_of_the_wrong_shape_is_placed_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let article = r#"{"paragraphs":[{"context":"abc","qas":[{"id":"a","question":"q","answers":[{"text":"b","answer_start":"x"}]}]}]}"#;
    std::fs::write(&input, format!("{{\"data\": [{article},\n{article}]}}")).unwrap();
    let out = dir.path().join("out.jsonl");
    for policy in ["fail", "skip"] {
        let err = fails(convert_args("squad", &input, &out, &["--on-error", policy]));
        // Line 1: the first article starts at column 11, and serde places the error at the bad value's last byte.
        let col = 10 + article.find(r#""x""#).unwrap() + 3;
        assert!(err.contains(&format!("in.json:1:{col}: data[0]: unexpected JSON shape")), "{err}");
        assert!(!out.exists());
    }
}
