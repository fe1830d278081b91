//! `deepsynth convert nq`: the original and simplified formats (mixed in one gzipped file), answer priority over
//! annotations, HTML dropped, ids beyond 64 bits, `--max-chars`, `--max-samples`, and bad lines.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const ORIGINAL: &str = "data/nq/nq-dev-sample.jsonl";
const SIMPLIFIED: &str = "data/nq/simplified-nq-train-sample.jsonl";

fn convert(inputs: &[&Path], out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["convert", "nq", "--input"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--output", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    ok(args)
}

/// Both samples, original lines then simplified ones, in one gzipped file.
fn mixed_gz(dir: &Path) -> PathBuf {
    let mut raw = std::fs::read(repo().join(ORIGINAL)).unwrap();
    raw.extend(std::fs::read(repo().join(SIMPLIFIED)).unwrap());
    let path = dir.join("nq-mixed.jsonl.gz");
    std::fs::write(&path, gzip(&raw)).unwrap();
    path
}

/// A simplified-format line; `example_id` and `annotations` are raw JSON.
fn simplified(example_id: &str, document_text: &str, question: &str, annotations: &str) -> String {
    format!(
        concat!(
            r#"{{"document_text": {}, "long_answer_candidates": [], "question_text": {}, "#,
            r#""annotations": {}, "example_id": {}}}"#
        ),
        serde_json::to_string(document_text).unwrap(),
        serde_json::to_string(question).unwrap(),
        annotations,
        example_id,
    )
}

const NO_ANSWER: &str = concat!(
    r#"[{"yes_no_answer": "NONE", "long_answer": {"start_token": -1, "candidate_index": -1, "end_token": -1}, "#,
    r#""short_answers": [], "annotation_id": 1}]"#
);

#[test]
fn both_formats_in_one_gzipped_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq.jsonl");
    let summary = convert(&[&mixed_gz(dir.path())], &out, &[]);
    assert!(summary.contains("8 records written, 0 skipped"), "{summary}");
    let recs = read_records(&out);
    let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "-3290814144789249484",
            "5225754983651766092",
            "8466196474705624263",
            "-7163997839850849003",
            "797803103760793766",
            "-5501481664893105662",
            "3542596240378292342",
            "-2143925871305834412"
        ]
    );
    assert!(recs.iter().all(|r| r.source == "nq"));
    // HTML tokens are dropped from texts and answers in both formats.
    for r in &recs {
        assert!(!r.text.contains('<') && !r.text.contains("  "), "{:?}", r.text);
        assert!(r.answers.iter().all(|a| !a.contains('<')), "{:?}", r.answers);
    }

    // Simplified: a table long answer (with a `<Th_colspan="2">` tag token) and one short span.
    let rhine = &recs[4];
    assert_eq!(rhine.instruction, "how long is the river rhine");
    assert_eq!(
        rhine.text,
        "Rhine Length 1,230 km ( 760 mi ) Countries Switzerland , Liechtenstein , Austria , Germany , France , \
         Netherlands"
    );
    assert_eq!(rhine.answers, ["1,230 km"]);
    // Several spans of one annotation make one gold, joined with ", ".
    assert_eq!(recs[5].answers, ["Switzerland , Liechtenstein, Germany, Netherlands"]);
    assert_eq!(recs[6].answer, "yes");
    let geneva = "Lake Geneva ( French : Lac Léman ) is a lake on the north side of the Alps , shared between \
                  Switzerland and France .";
    assert_eq!(recs[6].text, geneva);
    // No long answer: the whole page text, title and heading included.
    let matterhorn = &recs[7];
    assert_eq!((matterhorn.answer.as_str(), matterhorn.answers.len()), ("", 0));
    assert!(matterhorn.text.starts_with("Matterhorn - Wikipedia Matterhorn The Matterhorn ( Italian : Cervino )"));
    assert!(matterhorn.text.ends_with("Its summit is 4,478 metres high ."), "{:?}", matterhorn.text);
}

#[test]
fn dev_examples_apply_the_priority_over_five_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq.jsonl");
    convert(&[&repo().join(ORIGINAL)], &out, &[]);
    let recs = read_records(&out);
    assert_eq!(recs.len(), 4);

    // Short answers win; two annotations with the same two spans give one gold, a third annotation another;
    // the long-answer-only and no-answer annotations add nothing.
    let eiffel = &recs[0];
    assert_eq!(eiffel.instruction, "who designed the eiffel tower");
    assert_eq!(eiffel.answers, ["Maurice Koechlin, Émile Nouguier", "Gustave Eiffel"]);
    assert_eq!(eiffel.answer, "Maurice Koechlin, Émile Nouguier");
    assert_eq!(
        eiffel.text,
        "The design of the tower is attributed to Maurice Koechlin and Émile Nouguier , two senior engineers working \
         for the Compagnie des Établissements Eiffel ."
    );

    // Yes/no beats the long answer that one annotator gave alone.
    let zurich = &recs[1];
    assert_eq!(zurich.instruction, "is zürich the capital of switzerland");
    assert_eq!(zurich.answers, ["no"]);
    assert!(zurich.text.starts_with("Zürich is the largest city in Switzerland"), "{:?}", zurich.text);

    // Long answers only: every distinct paragraph is gold; the text is that of the first annotation with one
    // (the second annotation: the first has none).
    let bridge = &recs[2];
    let p2 = "The main cables carry the load in tension to the towers , which pass it on as compression to the \
              foundations ; the cables are anchored at each end of the bridge .";
    let p1 = "A suspension bridge is a type of bridge in which the deck is hung below suspension cables on vertical \
              suspenders .";
    assert_eq!(bridge.answers, [p2, p1]);
    assert_eq!(bridge.text, p2);

    // No annotation has anything: no golds, and the page text (not cut: it is under --max-chars).
    let skytree = &recs[3];
    assert_eq!(skytree.answer, "");
    assert!(skytree.answers.is_empty());
    assert!(
        skytree.text.starts_with(
            "Tokyo Skytree - Wikipedia Tokyo Skytree Tokyo Skytree ( 東京スカイツリー , Tōkyō Sukaitsurī ) is a broadcasting"
        ),
        "{:?}",
        skytree.text
    );
    assert!(skytree.text.ends_with("in March 2011 ."));
}

#[test]
fn max_chars_cuts_page_texts_only_at_a_word_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq.jsonl");
    let summary = convert(&[&mixed_gz(dir.path())], &out, &["--max-chars", "60"]);
    assert!(summary.contains("note: 2 page texts cut to --max-chars"), "{summary}");
    let recs = read_records(&out);
    // The 60th character falls inside "東京スカイツリー": the cut goes back to the space before it.
    assert_eq!(recs[3].text, "Tokyo Skytree - Wikipedia Tokyo Skytree Tokyo Skytree (");
    assert_eq!(recs[7].text, "Matterhorn - Wikipedia Matterhorn The Matterhorn ( Italian :");
    // Long-answer texts are kept whole.
    assert!(recs[0].text.chars().count() > 60);
    assert!(recs[2].text.ends_with("of the bridge ."));
}

#[test]
fn example_ids_beyond_64_bits_and_strings_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ids.jsonl");
    let lines = [
        simplified("18446744073709551617123", "<P> Größe </P>", "q1", NO_ANSWER),
        simplified("-18446744073709551617", "<P> Größe </P>", "q2", NO_ANSWER),
        simplified(r#""0042""#, "<P> Größe </P>", "q3", NO_ANSWER),
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&[&input], &out, &[]);
    let recs = read_records(&out);
    let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["18446744073709551617123", "-18446744073709551617", "0042"]);
    assert_eq!(recs[0].text, "Größe");
}

#[test]
fn short_answers_outrank_yes_no_given_by_another_annotator() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let annotations = concat!(
        r#"[{"yes_no_answer": "YES", "long_answer": {"start_token": 0, "end_token": 6}, "short_answers": []}, "#,
        r#"{"yes_no_answer": "NONE", "long_answer": {"start_token": 0, "end_token": 6}, "#,
        r#""short_answers": [{"start_token": 3, "end_token": 4}]}]"#
    );
    let line = simplified("7", "<P> Bern , Schweiz . </P>", "is bern the federal city", annotations);
    std::fs::write(&input, line).unwrap();
    let out = dir.path().join("out.jsonl");
    convert(&[&input], &out, &[]);
    let rec = &read_records(&out)[0];
    assert_eq!(rec.answers, ["Schweiz"]);
    assert_eq!(rec.text, "Bern , Schweiz .");
}

#[test]
fn max_samples_stops_across_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq.jsonl");
    let summary = convert(&[&repo().join(ORIGINAL), &repo().join(SIMPLIFIED)], &out, &["--max-samples", "5"]);
    assert!(summary.contains("5 records written"), "{summary}");
    let recs = read_records(&out);
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[4].id, "797803103760793766");
}

#[test]
fn bad_lines_fail_naming_file_line_and_field_or_are_skipped() {
    let good = simplified("1", "a b c", "q", NO_ANSWER);
    let bad = [
        (
            r#"{"example_id": 2, "question_text": "q", "document_text": "a b"#.to_string(),
            "bad.jsonl:2:",
            "truncated JSON",
        ),
        (
            simplified(
                "3",
                "a b c",
                "q",
                concat!(
                    r#"[{"long_answer": {"start_token": -1, "end_token": -1}, "#,
                    r#""short_answers": [{"start_token": 1, "end_token": 99}], "yes_no_answer": "NONE"}]"#
                ),
            ),
            "bad.jsonl:2: annotations[0].short_answers[0]: field `end_token`",
            "span [1, 99) does not lie within the document's 3 tokens",
        ),
        (simplified("4", "a b c", " ", NO_ANSWER), "bad.jsonl:2: field `question_text`", "missing or empty question"),
        (
            r#"{"example_id": 5, "question_text": "q", "annotations": []}"#.to_string(),
            "bad.jsonl:2: neither `document_tokens`",
            "simplified NQ format",
        ),
        (
            simplified(
                "6",
                "a b c",
                "q",
                concat!(
                    r#"[{"long_answer": {"start_token": 0, "end_token": 3}, "short_answers": [], "#,
                    r#""yes_no_answer": "MAYBE"}]"#
                ),
            ),
            "bad.jsonl:2:",
            "unknown variant `MAYBE`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("nq.jsonl");
    let args = ["convert", "nq", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    for (line, place, why) in &bad {
        std::fs::write(&input, format!("{good}\n{line}\n")).unwrap();
        let err = fails(args);
        assert!(err.contains(place) && err.contains(why), "expected {place} … {why}: {err}");
        assert!(files_in(&outdir).is_empty(), "left behind: {:?}", files_in(&outdir));
    }

    let all: Vec<&str> = std::iter::once(good.as_str()).chain(bad.iter().map(|(l, _, _)| l.as_str())).collect();
    std::fs::write(&input, all.join("\n")).unwrap();
    let summary = ok(args.iter().chain(&["--on-error", "skip"]));
    assert!(
        summary.contains(
            "1 records written, 5 skipped (missing question: 1, span out of range: 1, truncated JSON: 1, \
             unexpected JSON shape: 1, unknown format: 1)"
        ),
        "{summary}"
    );
    assert_eq!(read_records(&out).len(), 1);
}
