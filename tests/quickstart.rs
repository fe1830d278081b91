//! The quickstart end to end (few steps): it starts from the bundled reader, which must read fresh pages before any
//! fine-tuning, and leaves a PEFT adapter that `instruct` and `eval` take.

use deepsynth::quickstart::{self, Options};
use deepsynth::train::config::Method;

#[test]
fn the_quickstart_starts_from_a_reader_and_leaves_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("qs");
    let opts = Options { output: output.clone(), steps: 6, cards: 48, seed: 3, method: Method::Lora };
    let outcome = quickstart::run(&opts).unwrap();
    // Person cards have random values: only reading the page gets them right.
    assert!(outcome.people[0].exact >= 80.0, "{outcome:?}");
    // Tickets' keys are new to it: far fewer right before fine-tuning.
    assert!(outcome.tickets[0].exact < outcome.people[0].exact, "{outcome:?}");
    for file in ["run/final/adapter_model.safetensors", "run/final/adapter_config.json", "data/held-out-tickets.jsonl"]
    {
        assert!(output.join(file).is_file(), "{file}");
    }
    // A second run replaces the first one's folder; a folder it did not make is refused.
    std::fs::write(dir.path().join("other.txt"), "x").unwrap();
    let err = quickstart::run(&Options { output: dir.path().to_path_buf(), ..opts }).unwrap_err();
    assert!(format!("{err:#}").contains("choose another --output"), "{err:#}");
}
