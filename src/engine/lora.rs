//! LoRA adapters in PEFT's format: `adapter_config.json` + `adapter_model.safetensors` holding
//! `base_model.model.<module path>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r]; y = Wx + (alpha/r)·B·A·x.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::linear::Linear;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix before a module's path in the base model.
pub const KEY_PREFIX: &str = "base_model.model.";

/// The keys of PEFT's `adapter_config.json` that decide the computation; others are kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f32,
    /// Module names (a path's last parts) the adapter was made for.
    #[serde(default)]
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl AdapterConfig {
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Self =
            serde_json::from_str(&text).with_context(|| format!("{}: not a LoRA adapter config", path.display()))?;
        ensure!(
            cfg.peft_type == "LORA",
            "{}: peft_type is {:?}, only \"LORA\" is supported",
            path.display(),
            cfg.peft_type
        );
        ensure!(cfg.r > 0, "{}: r must be positive", path.display());
        // Options that change the computation but that deepsynth does not implement are refused by name rather
        // than loaded with the wrong scale or shape.
        for key in ["alpha_pattern", "rank_pattern"] {
            let set = cfg.other.get(key).is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()));
            ensure!(!set, "{}: {key} is not supported (one r and lora_alpha for every layer)", path.display());
        }
        for key in ["use_dora", "lora_bias"] {
            let set = cfg.other.get(key).is_some_and(|v| v.as_bool() == Some(true));
            ensure!(!set, "{}: {key} is not supported", path.display());
        }
        Ok(cfg)
    }

    /// The alpha that gives PEFT's scale through [`Linear::attach_lora`]'s alpha / r (rsLoRA: alpha / sqrt(r)).
    fn effective_alpha(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha * (self.r as f64).sqrt()
        } else {
            self.lora_alpha
        }
    }
}

/// Attaches the adapter in `dir` to the `linears` whose paths it names; every adapter tensor must find its layer
/// (an adapter for another architecture is an error naming the first stray module). Returns how many layers got
/// one.
pub fn load_adapter(dir: &Path, linears: Vec<&mut Linear>, device: &Device) -> anyhow::Result<usize> {
    let cfg = AdapterConfig::read(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut tensors =
        candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))?;
    let mut attached = 0;
    for linear in linears {
        let key = |part: &str| format!("{KEY_PREFIX}{}.{part}.weight", linear.path());
        let (a, b) = (tensors.remove(&key("lora_A")), tensors.remove(&key("lora_B")));
        match (a, b) {
            (Some(a), Some(b)) => {
                linear
                    .attach_lora(
                        a.to_dtype(DType::F32)?,
                        b.to_dtype(DType::F32)?,
                        cfg.effective_alpha(),
                        cfg.lora_dropout,
                    )
                    .with_context(|| format!("{}", path.display()))?;
                attached += 1;
            }
            (None, None) => {}
            _ => bail!("{}: {} has only one of lora_A / lora_B", path.display(), linear.path()),
        }
    }
    if let Some(stray) = tensors.keys().min() {
        bail!(
            "{}: {stray} matches no layer of this model ({} tensors left over): the adapter was made for another \
             model",
            path.display(),
            tensors.len()
        );
    }
    Ok(attached)
}

/// Writes the adapters attached to `linears` in PEFT's format (config + weights, each through a temporary file).
pub fn save_adapter(dir: &Path, cfg: &AdapterConfig, linears: Vec<&Linear>) -> anyhow::Result<usize> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for linear in linears {
        if let Some(lora) = linear.lora() {
            tensors.insert(format!("{}.lora_A.weight", linear.path()), lora.a().clone());
            tensors.insert(format!("{}.lora_B.weight", linear.path()), lora.b().clone());
        }
    }
    write_adapter(dir, cfg, &tensors)?;
    Ok(tensors.len() / 2)
}

/// Writes an adapter directory from its tensors named `<module path>.lora_A.weight` / `.lora_B.weight` (stored
/// under PEFT's `base_model.model.` prefix).
pub fn write_adapter(dir: &Path, cfg: &AdapterConfig, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stored = tensors
        .iter()
        .map(|(name, t)| Ok((format!("{KEY_PREFIX}{name}"), t.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    super::checkpoint::save_atomic(&stored, &dir.join(ADAPTER_WEIGHTS))?;
    crate::data::io::write_atomic(&dir.join(ADAPTER_CONFIG), serde_json::to_string_pretty(cfg)?.as_bytes())
}

/// `deepsynth merge`: writes `output` as a model directory whose weights are `model_dir`'s with the adapter folded
/// in (W + scale·B·A, in f32, stored back in each weight's dtype). Returns how many weights changed.
pub fn merge(model_dir: &Path, adapter_dir: &Path, output: &Path) -> anyhow::Result<usize> {
    let cfg = AdapterConfig::read(adapter_dir)?;
    let scale = cfg.effective_alpha() / cfg.r as f64;
    let adapter_path = adapter_dir.join(ADAPTER_WEIGHTS);
    let mut adapter = candle_core::safetensors::load(&adapter_path, &Device::Cpu)
        .with_context(|| format!("reading {}", adapter_path.display()))?;
    let mut tensors = super::checkpoint::load_all(model_dir)?;
    let mut merged = 0;
    for (name, tensor) in tensors.iter_mut() {
        let Some(path) = name.strip_suffix(".weight") else { continue };
        let key = |part: &str| format!("{KEY_PREFIX}{path}.{part}.weight");
        if let (Some(a), Some(b)) = (adapter.remove(&key("lora_A")), adapter.remove(&key("lora_B"))) {
            let dtype = tensor.dtype();
            let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * scale)?;
            *tensor = (tensor.to_dtype(DType::F32)? + delta)
                .with_context(|| format!("{}: {name} does not fit its adapter", adapter_path.display()))?
                .to_dtype(dtype)?;
            merged += 1;
        }
    }
    if let Some(stray) = adapter.keys().min() {
        bail!("{}: {stray} matches no weight of {}", adapter_path.display(), model_dir.display());
    }
    super::checkpoint::write_model_dir(model_dir, output, &tensors)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{VarBuilder, VarMap};

    use crate::engine::test_pattern as random;

    fn layers() -> Vec<Linear> {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        vec![
            Linear::load(vb.pp("model.q_proj"), 6, 4, false).unwrap(),
            Linear::load(vb.pp("model.v_proj"), 6, 4, false).unwrap(),
        ]
    }

    fn config() -> AdapterConfig {
        serde_json::from_value(
            serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["q_proj"],
                                                  "task_type": "CAUSAL_LM"}),
        )
        .unwrap()
    }

    #[test]
    fn saved_adapter_loads_back_into_the_same_layers() {
        let mut source = layers();
        source[0].attach_lora(random(&[2, 6], 1), random(&[4, 2], 2), 8.0, 0.0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(save_adapter(dir.path(), &config(), source.iter().collect()).unwrap(), 1);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).unwrap()).unwrap();
        assert_eq!(saved["task_type"], "CAUSAL_LM");

        let mut target = layers();
        assert_eq!(load_adapter(dir.path(), target.iter_mut().collect(), &Device::Cpu).unwrap(), 1);
        let (want, got) = (source[0].lora().unwrap(), target[0].lora().unwrap());
        assert_eq!(got.a().to_vec2::<f32>().unwrap(), want.a().to_vec2::<f32>().unwrap());
        assert_eq!(got.b().to_vec2::<f32>().unwrap(), want.b().to_vec2::<f32>().unwrap());
        assert!(target[1].lora().is_none());
        assert_eq!(target[0].lora().unwrap().scale(), 4.0);
    }

    #[test]
    fn adapter_for_other_modules_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = HashMap::from([
            (format!("{KEY_PREFIX}model.k_proj.lora_A.weight"), random(&[2, 6], 1)),
            (format!("{KEY_PREFIX}model.k_proj.lora_B.weight"), random(&[4, 2], 1)),
        ]);
        candle_core::safetensors::save(&tensors, dir.path().join(ADAPTER_WEIGHTS)).unwrap();
        std::fs::write(dir.path().join(ADAPTER_CONFIG), serde_json::to_string(&config()).unwrap()).unwrap();
        let mut target = layers();
        let err = format!("{:#}", load_adapter(dir.path(), target.iter_mut().collect(), &Device::Cpu).unwrap_err());
        assert!(err.contains("model.k_proj.lora_A.weight") && err.contains("another model"), "{err}");
    }
}
