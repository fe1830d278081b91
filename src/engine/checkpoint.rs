//! Where a model's files are: a local directory, or a Hugging Face Hub id fetched into the hub cache; and its
//! weights (`model.safetensors`, or an index naming shards) opened as one `VarBuilder` in the compute dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// The files a model directory holds besides its weights.
pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// `spec` as a local model directory; a Hub id (`owner/name`) that is not a local path is fetched (or found in
/// the hub cache). Offline, or with HF_HUB_OFFLINE=1 and nothing cached, the error says to pass a local directory.
pub fn resolve(spec: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if spec == super::bundled::NAME {
        return super::bundled::dir();
    }
    if path.exists() {
        bail!("--model {spec}: not a directory (a model directory holds {CONFIG}, {WEIGHTS} and {TOKENIZER})");
    }
    if !looks_like_hub_id(spec) {
        bail!(
            "--model {spec}: no such directory (`{}` is the bundled reader; make a new model with `deepsynth init \
             --preset tiny --output DIR`)",
            super::bundled::NAME
        );
    }
    fetch_from_hub(spec).with_context(|| {
        format!(
            "--model {spec}: not a local directory, and the Hugging Face Hub could not provide it. Without a \
             network, pass a local model directory with --model DIR (a downloaded snapshot, or one made by \
             `deepsynth init`)"
        )
    })
}

fn looks_like_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Downloads (or finds cached) the config, tokenizer and weights of `id`; returns the snapshot directory.
fn fetch_from_hub(id: &str) -> anyhow::Result<PathBuf> {
    let cache = hf_hub::Cache::from_env().model(id.to_string());
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let api = if offline {
        None
    } else {
        Some(hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build()?.model(id.to_string()))
    };
    let get = |file: &str| -> anyhow::Result<PathBuf> {
        if let Some(path) = cache.get(file) {
            return Ok(path);
        }
        match &api {
            Some(api) => api.get(file).with_context(|| format!("downloading {file}")),
            None => bail!("{file} is not in the hub cache and HF_HUB_OFFLINE is set"),
        }
    };
    let config = get(CONFIG)?;
    get(TOKENIZER)?;
    match get(WEIGHTS_INDEX) {
        Ok(index) => {
            for shard in shard_names(&index)? {
                get(&shard)?;
            }
        }
        Err(_) => {
            get(WEIGHTS)?;
        }
    }
    Ok(config.parent().context("hub snapshot path has no parent")?.to_path_buf())
}

/// The distinct shard files an index's `weight_map` names, in sorted order.
fn shard_names(index: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no \"weight_map\" object", index.display()))?;
    let mut shards = Vec::new();
    for (tensor, file) in map {
        let file =
            file.as_str().with_context(|| format!("{}: weight_map[{tensor:?}] is not a string", index.display()))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!("{}: weight_map[{tensor:?}] names {file:?}, not a file beside the index", index.display());
        }
        shards.push(file.to_string());
    }
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// The weight files of a model directory: `model.safetensors`, or the shards its index names.
pub fn weight_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.is_file() {
        bail!("{}: neither {WEIGHTS} nor {WEIGHTS_INDEX} is there", dir.display());
    }
    let files: Vec<PathBuf> = shard_names(&index)?.into_iter().map(|name| dir.join(name)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        bail!("{}: names shard {}, which is missing", index.display(), missing.display());
    }
    Ok(files)
}

/// The weights of `dir`, memory-mapped, converted to `dtype` as each tensor is read (bf16 checkpoints become f32
/// on the CPU, which has no bf16 matmul). A missing tensor or one of the wrong shape fails when the model asks for
/// it, with the tensor's name (and both shapes).
pub fn var_builder(dir: &Path, dtype: DType, device: &Device) -> anyhow::Result<VarBuilder<'static>> {
    let files = weight_files(dir)?;
    // SAFETY: the files are mapped read-only; deepsynth never writes a model's weights in place (new weights are
    // written to a temporary file and renamed), so a mapping cannot change under us from our own process.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
        .with_context(|| format!("opening the weights of {}", dir.display()))?;
    Ok(vb)
}

/// Every weight of a model directory, read onto the CPU as stored (for tools that rewrite weights).
pub fn load_all(dir: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let files = weight_files(dir)?;
    // SAFETY: see `var_builder`.
    let weights = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .with_context(|| format!("opening the weights of {}", dir.display()))?;
    weights
        .tensors()
        .into_iter()
        .map(|(name, _)| Ok((name.clone(), weights.load(&name, &Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()
        .with_context(|| format!("reading the weights of {}", dir.display()))
}

/// How many weights a model directory holds, from the safetensors headers (no tensor is read).
pub fn parameter_count(dir: &Path) -> anyhow::Result<usize> {
    let files = weight_files(dir)?;
    // SAFETY: see `var_builder`.
    let weights = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .with_context(|| format!("opening the weights of {}", dir.display()))?;
    Ok(weights.tensors().iter().map(|(_, view)| view.shape().iter().product::<usize>()).sum())
}

/// Writes `output` as a model directory: `base`'s config.json and tokenizer.json with `tensors` as its weights.
pub fn write_model_dir(base: &Path, output: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let path = base.join(CONFIG);
    let config = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    write_model_dir_with_config(base, output, &config, tensors)
}

/// [`write_model_dir`] with another config.json (the bytes of `config`).
pub fn write_model_dir_with_config(
    base: &Path,
    output: &Path,
    config: &[u8],
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    crate::data::io::write_atomic(&output.join(CONFIG), config)?;
    let path = base.join(TOKENIZER);
    let tokenizer = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    crate::data::io::write_atomic(&output.join(TOKENIZER), &tokenizer)?;
    save_atomic(tensors, &output.join(WEIGHTS))
}

/// `deepsynth cast`: writes `output` as `model_dir` with its floating-point weights stored in `dtype` (bf16 halves
/// an f32 checkpoint; loading converts back to the compute dtype). Returns how many tensors changed dtype.
pub fn cast(model_dir: &Path, output: &Path, dtype: DType) -> anyhow::Result<usize> {
    let mut tensors = load_all(model_dir)?;
    let mut changed = 0;
    for tensor in tensors.values_mut() {
        if tensor.dtype().is_float() && tensor.dtype() != dtype {
            *tensor = tensor.to_dtype(dtype)?;
            changed += 1;
        }
    }
    write_model_dir(model_dir, output, &tensors)?;
    Ok(changed)
}

/// Writes tensors as a safetensors file through a temporary file beside `path` (renamed when complete).
pub fn save_atomic(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let written =
        candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("cannot write {}", path.display()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert!(looks_like_hub_id("deepseek-ai/DeepSeek-OCR"));
        for not in ["model", "./model", "a/b/c", "/abs/path", "a/", "../x", "a b/c"] {
            assert!(!looks_like_hub_id(not), "{not}");
        }
    }

    #[test]
    fn missing_local_directory_says_how_to_make_one() {
        let err = format!("{:#}", resolve("no-such-model-dir").unwrap_err());
        assert!(err.contains("no such directory") && err.contains("deepsynth init"), "{err}");
    }

    #[test]
    fn offline_hub_id_fails_fast_naming_the_local_alternative() {
        // SAFETY: no other test of this binary reads HF_HUB_OFFLINE or HF_HOME concurrently.
        unsafe {
            std::env::set_var("HF_HUB_OFFLINE", "1");
            std::env::set_var("HF_HOME", tempfile::tempdir().unwrap().path());
        }
        let err = format!("{:#}", resolve("deepseek-ai/DeepSeek-OCR").unwrap_err());
        assert!(err.contains("--model DIR") && err.contains("HF_HUB_OFFLINE"), "{err}");
    }

    #[test]
    fn sharded_weights_are_listed_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = r#"{"metadata": {}, "weight_map": {"b": "model-00002.safetensors", "a": "model-00001.safetensors",
                        "c": "model-00001.safetensors"}}"#;
        std::fs::write(dir.path().join(WEIGHTS_INDEX), index).unwrap();
        std::fs::write(dir.path().join("model-00001.safetensors"), b"").unwrap();
        let err = format!("{:#}", weight_files(dir.path()).unwrap_err());
        assert!(err.contains("model-00002.safetensors") && err.contains("missing"), "{err}");
        std::fs::write(dir.path().join("model-00002.safetensors"), b"").unwrap();
        let names: Vec<_> =
            weight_files(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["model-00001.safetensors", "model-00002.safetensors"]);
    }

    #[test]
    fn cast_stores_every_weight_in_the_new_dtype_and_the_model_still_loads() {
        use crate::engine::preset::{self, InstructionChoice, Preset};
        let dir = tempfile::tempdir().unwrap();
        let (f32_dir, bf16_dir) = (dir.path().join("f32"), dir.path().join("bf16"));
        preset::init(Preset::Tiny, InstructionChoice::Prompt, &f32_dir, 0).unwrap();
        let before = load_all(&f32_dir).unwrap();
        assert_eq!(cast(&f32_dir, &bf16_dir, DType::BF16).unwrap(), before.len());
        let after = load_all(&bf16_dir).unwrap();
        assert_eq!(after.len(), before.len());
        for (name, tensor) in &after {
            assert_eq!(tensor.dtype(), DType::BF16, "{name}");
            let rounded = before[name].to_dtype(DType::BF16).unwrap();
            let diff = (tensor.to_dtype(DType::F32).unwrap() - rounded.to_dtype(DType::F32).unwrap()).unwrap();
            assert_eq!(diff.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "{name}");
        }
        crate::engine::model::Model::load(&bf16_dir, &Device::Cpu).unwrap();
    }

    #[test]
    fn the_bundled_name_resolves_to_the_bundled_model() {
        assert_eq!(resolve(crate::engine::bundled::NAME).unwrap(), crate::engine::bundled::dir().unwrap());
    }

    #[test]
    fn the_parameter_count_is_every_weight_read() {
        let dir = crate::engine::bundled::dir().unwrap();
        let read: usize = load_all(&dir).unwrap().values().map(Tensor::elem_count).sum();
        assert_eq!(parameter_count(&dir).unwrap(), read);
        assert!(read > 5_000_000, "{read}");
    }
}
