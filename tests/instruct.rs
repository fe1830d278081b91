//! `deepsynth init` and `deepsynth instruct` as a user runs them: a tiny model made by our code, questions about
//! text and image documents, one at a time, in a batch file, interactively, with sampling and adapters.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{deepsynth, fails, files_in, ok, repo};

fn init(dir: &Path, seed: u64, extra: &[&str]) -> PathBuf {
    let model = dir.join(format!("tiny-{seed}{}", extra.join("")));
    let mut args = vec!["init", "--preset", "tiny", "--output", model.to_str().unwrap()];
    let seed = seed.to_string();
    args.extend(["--seed", &seed]);
    args.extend(extra);
    ok(&args);
    model
}

fn instruct_json(model: &Path, document: &str, instruction: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["instruct", "--model", model.to_str().unwrap(), "--document", document];
    args.extend(["--instruction", instruction, "--json", "--max-new-tokens", "12"]);
    args.extend(extra);
    let out = deepsynth(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

const DOC: &str = "Invoice 2291. Customer: Zoë Ramírez. Total due: 1,250 EUR by 30 June.";

#[test]
fn init_writes_a_complete_model_directory_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path(), 7, &[]);
    assert_eq!(files_in(&a), ["config.json", "model.safetensors", "tokenizer.json"]);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("config.json")).unwrap()).unwrap();
    // DeepSeek-OCR's own layout, with deepsynth's settings under their own key.
    assert_eq!(config["language_config"]["n_routed_experts"], 8);
    assert!(config["vision_config"]["width"]["sam_vit_b"].is_object());
    assert_eq!(config["deepsynth"]["mode"], "tiny");
    let weights = std::fs::read(a.join("model.safetensors")).unwrap();
    let again = dir.path().join("again");
    ok(["init", "--preset", "tiny", "--output", again.to_str().unwrap(), "--seed", "7"]);
    assert!(std::fs::read(again.join("model.safetensors")).unwrap() == weights, "same seed, other weights");
    let b = init(dir.path(), 8, &[]);
    assert!(std::fs::read(b.join("model.safetensors")).unwrap() != weights, "another seed, same weights");
    // A few MB, as the preset promises.
    assert!(weights.len() < 20 << 20, "{} bytes", weights.len());
}

#[test]
fn answers_with_counts_and_timings_and_greedy_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 1, &[]);
    let first = instruct_json(&model, DOC, "Who is the customer?", &[]);
    for key in ["answer", "tokens_generated", "prompt_tokens", "vision_tokens", "finished", "timings"] {
        assert!(first.get(key).is_some(), "{key} missing from {first}");
    }
    // One 512 px page: 8x8 grid + 8 newlines + separator; BOS + visual tokens + "\nWho is the customer?".
    assert_eq!(first["vision_tokens"], 73);
    assert_eq!(first["prompt_tokens"], 1 + 73 + 1 + "Who is the customer?".len());
    assert_eq!(first["tokens_generated"], 12);
    assert_eq!(first["answer"], instruct_json(&model, DOC, "Who is the customer?", &[])["answer"]);
    // A document file gives the same answer as its text.
    let file = dir.path().join("doc.txt");
    std::fs::write(&file, DOC).unwrap();
    assert_eq!(first["answer"], instruct_json(&model, file.to_str().unwrap(), "Who is the customer?", &[])["answer"]);
    // Plain output is the answer alone.
    let out = deepsynth([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--document",
        DOC,
        "--instruction",
        "Who is the customer?",
        "--max-new-tokens",
        "12",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'), first["answer"].as_str().unwrap());
}

#[test]
fn seeded_sampling_is_reproducible_and_the_seed_matters() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 2, &[]);
    let sample = |seed: &str| {
        instruct_json(&model, DOC, "Total?", &["--temperature", "1.5", "--top-p", "0.95", "--seed", seed])["answer"]
            .clone()
    };
    assert_eq!(sample("5"), sample("5"));
    assert_ne!(sample("5"), sample("6"));
    let greedy = instruct_json(&model, DOC, "Total?", &[])["answer"].clone();
    assert_ne!(sample("5"), greedy);
}

#[test]
fn image_documents_are_read_as_pages() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 3, &[]);
    let page = repo().join("tests/fixtures/page/blocks300x200.png");
    let answer = instruct_json(&model, page.to_str().unwrap(), "Free OCR.", &[]);
    assert_eq!(answer["vision_tokens"], 73);
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = fails([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--document",
        broken.to_str().unwrap(),
        "--instruction",
        "x",
    ]);
    assert!(err.contains("broken.png"), "{err}");
}

#[test]
fn batch_file_predictions_equal_single_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 4, &[]);
    let input = dir.path().join("in.jsonl");
    let records = [
        ("q1", DOC, "Who is the customer?", vec!["Zoë Ramírez"]),
        ("q2", DOC, "Total?", vec!["1,250 EUR"]),
        ("q3", "A much shorter text.", "What is this text about, in a few words please?", vec![]),
    ];
    let mut lines = String::new();
    for (id, text, instruction, answers) in &records {
        let record = serde_json::json!({"id": id, "source": "squad", "text": text, "instruction": instruction,
                                        "answer": answers.first().copied().unwrap_or(""), "answers": answers});
        lines.push_str(&format!("{record}\n"));
    }
    std::fs::write(&input, lines).unwrap();
    let output = dir.path().join("pred.jsonl");
    ok([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--batch",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--batch-size",
        "3",
        "--max-new-tokens",
        "12",
    ]);
    let preds: Vec<serde_json::Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(preds.len(), 3);
    for (pred, (id, text, instruction, answers)) in preds.iter().zip(&records) {
        assert_eq!(pred["id"], *id);
        assert_eq!(pred["answers"], serde_json::json!(answers));
        // Left padding in the batch must not change any row's greedy answer.
        let single = instruct_json(&model, text, instruction, &[]);
        assert_eq!(pred["prediction"], single["answer"], "{id}");
        assert_eq!(pred["prompt_tokens"], single["prompt_tokens"], "{id}");
    }
}

#[test]
fn bad_batch_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 5, &[]);
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": \"a\", \"source\": \"squad\", \"text\": \"t\", \"instruction\": \"i\", \"answer\": \"\", \"answers\": []}\n{\"id\": 3}\n").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("pred.jsonl");
    let err = fails([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--batch",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(err.contains("in.jsonl:2"), "{err}");
    assert!(files_in(out_dir.path()).is_empty());
}

#[test]
fn interactive_answers_each_line_like_single_questions() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 6, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepsynth"))
        .args([
            "instruct",
            "--model",
            model.to_str().unwrap(),
            "--document",
            DOC,
            "--interactive",
            "--max-new-tokens",
            "12",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all("Who is the customer?\n\nTotal?\n:q\nnever asked\n".as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want = format!(
        "{}\n{}\n",
        instruct_json(&model, DOC, "Who is the customer?", &[])["answer"].as_str().unwrap(),
        instruct_json(&model, DOC, "Total?", &[])["answer"].as_str().unwrap()
    );
    assert_eq!(stdout, want);
}

#[test]
fn instruction_encoder_mode_reads_the_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 9, &["--instruction", "qwen2"]);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["deepsynth"]["instruction"]["mode"], "encoder");
    let a = instruct_json(&model, DOC, "Who is the customer?", &[]);
    let b = instruct_json(&model, DOC, "What is the total due?", &[]);
    assert_eq!(a["prompt_tokens"], 1 + 73 + 1 + "Who is the customer?".len());
    assert_ne!(a["answer"], b["answer"], "the instruction had no effect");
}

#[test]
fn missing_models_and_offline_hub_ids_say_what_to_pass() {
    let err = fails(["instruct", "--model", "/no/such/model", "--document", "x", "--instruction", "y"]);
    assert!(err.contains("/no/such/model") && err.contains("deepsynth init"), "{err}");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deepsynth"))
        .args(["instruct", "--model", "deepseek-ai/DeepSeek-OCR", "--document", "x", "--instruction", "y"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.path())
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--model DIR"), "{err}");
}

#[test]
fn bad_sampling_parameters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 10, &[]);
    let err = fails([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--document",
        "x",
        "--instruction",
        "y",
        "--top-p",
        "1.5",
    ]);
    assert!(err.contains("top_p"), "{err}");
}

#[test]
fn render_with_a_model_shows_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let model = init(dir.path(), 11, &[]);
    let doc = dir.path().join("doc.txt");
    std::fs::write(&doc, DOC).unwrap();
    let page = dir.path().join("page.png");
    ok([
        "render",
        "--model",
        model.to_str().unwrap(),
        "--document",
        doc.to_str().unwrap(),
        "--output",
        page.to_str().unwrap(),
    ]);
    // The tiny preset's 512 px pages, not the default 1024.
    assert_eq!(image::image_dimensions(&page).unwrap(), (512, 512));
}

/// Sets `deepsynth.instruction_first` in a model directory's config.json.
fn put_instruction_first(model: &Path) {
    let path = model.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["deepsynth"]["instruction_first"] = true.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn instruction_first_puts_the_question_before_the_page() {
    use deepsynth::engine::model::Model;
    let dir = tempfile::tempdir().unwrap();
    let path = init(dir.path(), 4, &[]);
    let cpu = candle_core::Device::Cpu;
    let after = Model::load(&path, &cpu).unwrap();
    let image = after.tokenizer.image;
    let tokens = |text: &str| after.tokenizer.encode(text).unwrap();
    let ids = after.prompt_ids(3, "Why?").unwrap();
    assert_eq!(ids, [vec![after.tokenizer.bos], vec![image; 3], tokens("\nWhy?")].concat());

    put_instruction_first(&path);
    let first = Model::load(&path, &cpu).unwrap();
    let ids = first.prompt_ids(3, "Why?").unwrap();
    assert_eq!(ids, [vec![first.tokenizer.bos], tokens("Why?\n"), vec![image; 3], tokens("\n")].concat());
    let answer = instruct_json(&path, DOC, "Who is the customer?", &[]);
    assert!(answer["answer"].is_string(), "{answer}");

    // An instruction encoder's states have no place before the page.
    let encoder = init(dir.path(), 5, &["--instruction", "qwen2"]);
    put_instruction_first(&encoder);
    let err = format!("{:#}", Model::load(&encoder, &cpu).err().unwrap());
    assert!(err.contains("instruction_first") && err.contains("config.json"), "{err}");
}

#[test]
fn the_bundled_reader_is_the_default_and_reads_fresh_cards() {
    let cache = tempfile::tempdir().unwrap();
    // Cards written for this test (no generator made them): random-looking values only reading gets right.
    let cards = [
        ("Name: Tobrek\nCity: Wansivo\nYear: 1937", "What is the city?", "Wansivo"),
        ("Code: 4HZP\nColour: mauve\nName: Ilvany", "What is the code?", "4HZP"),
        ("Year: 2011\nName: Qesta\nCode: R2DK\nCity: Pobly", "What is the name?", "Qesta"),
        ("Colour: dusk\nCity: Vremont\nCode: 7MMA", "What is the colour?", "dusk"),
        ("City: Ozzaro\nCode: KB5W\nYear: 1968\nColour: teal\nName: Huxi", "What is the year?", "1968"),
        ("Name: Falbin\nCode: ZU8X\nCity: Glemsk", "What is the code?", "ZU8X"),
        ("Colour: ochre\nYear: 1904\nCity: Narwex\nName: Jodie", "What is the city?", "Narwex"),
        ("Code: H3TV\nName: Pirrow\nColour: lilac\nYear: 1999", "What is the name?", "Pirrow"),
    ];
    let mut right = Vec::new();
    for (document, instruction, gold) in cards {
        let out = Command::new(env!("CARGO_BIN_EXE_deepsynth"))
            .args(["instruct", "--document", document, "--instruction", instruction, "--json"])
            .env("DEEPSYNTH_CACHE", cache.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        right.push((answer["answer"] == gold, gold, answer["answer"].clone()));
    }
    // A model that does not read gets none of these; the reader gets nine in ten of such cards.
    assert!(right.iter().filter(|r| r.0).count() >= 7, "{right:?}");
    // The bundled files were written once, under the cache folder.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}
