//! Helpers shared by the integration tests: run the built binary, read JSONL output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use deepsynth::data::Record;

/// The repository root (fixtures under `data/` and `tests/fixtures/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the deepsynth binary with `args`; returns its output whatever the exit code.
pub fn deepsynth<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_deepsynth")).args(args).output().expect("run deepsynth")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs deepsynth and asserts success, returning stderr.
pub fn ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = deepsynth(args);
    assert!(out.status.success(), "deepsynth failed: {}", stderr(&out));
    stderr(&out)
}

/// Runs deepsynth and asserts exit code 1 (a reported failure, not a panic), returning stderr.
pub fn fails<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = deepsynth(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, got {:?}: {err}", out.status.code());
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// `convert DATASET --input INPUT --output OUTPUT` followed by `extra`.
pub fn convert_args(dataset: &str, input: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["convert", dataset, "--input"].map(String::from).to_vec();
    args.extend([input.to_str().unwrap().to_string(), "--output".into(), output.to_str().unwrap().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).expect("read output");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}"))).collect()
}

/// The files in a folder, to check that a failed run left nothing behind (no output, no temp file).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Max |ours - want| and that error relative to want's largest magnitude, printed and asserted below
/// `max_abs_err` and `max_rel_err`; returns both.
pub fn assert_close(ours: &Tensor, want: &Tensor, what: &str, max_abs_err: f32, max_rel_err: f32) -> (f32, f32) {
    assert_eq!(ours.dims(), want.dims(), "{what}: shape");
    let abs = max_abs(&(ours - want).unwrap());
    let rel = abs / max_abs(want);
    eprintln!("{what}: max abs error {abs:.3e}, relative to max |value| {rel:.3e}");
    assert!(abs < max_abs_err && rel < max_rel_err, "{what}: max abs error {abs:e}, relative {rel:e}");
    (abs, rel)
}

/// Asserts that every variable of a backward pass got a gradient that is not all zeros (candle's fused ops drop
/// gradients silently).
pub fn assert_every_var_has_gradient(vars: &std::collections::HashMap<String, candle_core::Var>, grads: &GradStore) {
    let mut dead: Vec<&str> = vars
        .iter()
        .filter(|(_, var)| grads.get(var.as_tensor()).is_none_or(|g| max_abs(g) == 0.0))
        .map(|(name, _)| name.as_str())
        .collect();
    dead.sort();
    assert!(dead.is_empty(), "no gradient for {dead:?}");
}

/// The regenerated reference model directory (scripts/regen_reference_weights.py) named by
/// DEEPSYNTH_REFERENCE_MODEL; without it, says the test is skipped.
pub fn reference_model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DEEPSYNTH_REFERENCE_MODEL").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("skipped: set DEEPSYNTH_REFERENCE_MODEL to the regenerated reference model directory");
    }
    dir
}

/// The reference run's inputs and outputs (shared/ lies beside the repository).
pub fn reference_io() -> std::collections::HashMap<String, Tensor> {
    let path = repo().join("../shared/reference/deepseek-ocr-random-2layer/io-base-1024.safetensors");
    candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap()
}

/// A model directory's parsed config.json.
pub fn model_config(dir: &Path) -> serde_json::Value {
    deepsynth::engine::read_model_config(&dir.join("config.json")).unwrap()
}

/// Writes to `out` a PEFT adapter of random LoRA factors (r 4, alpha 8) on every decoder `q_proj` of the model in
/// `model_dir`; returns how many layers it adapts.
pub fn random_q_proj_adapter(model_dir: &Path, out: &Path) -> usize {
    use deepsynth::engine::lora::{save_adapter, AdapterConfig};
    let cpu = candle_core::Device::Cpu;
    let mut model = deepsynth::engine::model::Model::load(model_dir, &cpu).unwrap();
    for linear in model.decoder.linears_mut().into_iter().filter(|l| l.path().ends_with("self_attn.q_proj")) {
        let (out_dim, in_dim) = linear.weight().dims2().unwrap();
        let a = Tensor::randn(0f32, 0.5, (4, in_dim), &cpu).unwrap();
        let b = Tensor::randn(0f32, 0.5, (out_dim, 4), &cpu).unwrap();
        linear.attach_lora(a, b, 8.0, 0.0).unwrap();
    }
    let cfg: AdapterConfig = serde_json::from_value(serde_json::json!({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "lora_dropout": 0.0,
        "base_model_name_or_path": model_dir.to_str().unwrap(), "task_type": "CAUSAL_LM"}))
    .unwrap();
    save_adapter(out, &cfg, model.linears_mut().into_iter().map(|l| &*l).collect()).unwrap()
}

/// A `deepsynth serve` process on an ephemeral loopback port, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Server {
    /// Starts `deepsynth serve --port 0 ARGS...`, reads the address it prints, and waits until `/ready` is 200.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Server {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_deepsynth")), args)
    }

    /// [`Server::start`] from a prepared command (environment variables set, say).
    pub fn start_command<S: AsRef<std::ffi::OsStr>>(mut command: Command, args: &[S]) -> Server {
        use std::io::BufRead;
        let mut child = command
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start deepsynth serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().expect("serve printed nothing").expect("read serve's stdout");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Server { child, url };
        for _ in 0..600 {
            if let Ok(r) = ureq::get(&format!("{}/ready", server.url)).call() {
                if r.status() == 200 {
                    return server;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the server never became ready");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
