//! Which weights train: a model built over its checkpoint where the chosen tensors are `Var`s, and LoRA pairs
//! attached as `Var`s to the chosen layers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{Method, TrainConfig};
use super::optim::Params;
use crate::engine::checkpoint::{self, CONFIG};
use crate::engine::config::ModelConfig;
use crate::engine::model::Model;

/// The vision encoder proper (frozen unless `train_vision`).
const VISION: [&str; 2] = ["model.sam_model.", "model.vision_model."];
/// The projectors and the page separators (trained with `train_projector` or `train_vision`).
const PROJECTORS: [&str; 4] =
    ["model.projector.", "model.image_newline", "model.view_seperator", "instruction_projector."];

/// Whether the full tensor `name` trains under `cfg`.
pub fn trains_fully(cfg: &TrainConfig, name: &str) -> bool {
    let vision = VISION.iter().any(|p| name.starts_with(p));
    let projector = PROJECTORS.iter().any(|p| name.starts_with(p));
    if vision && !cfg.train_vision {
        return false;
    }
    if projector && cfg.train_projector {
        return true;
    }
    if projector {
        // The projectors belong to the vision side: trained with train_projector or train_vision only.
        return cfg.train_vision;
    }
    match cfg.method {
        Method::Full => true,
        Method::Lora => vision && cfg.train_vision,
        Method::Modules => cfg.trainable_modules.iter().any(|m| name.contains(m.as_str())),
    }
}

/// Whether the vision side (encoder, projector, separators) has anything to learn: if not, a document's visual
/// tokens can be computed once.
pub fn vision_trains(cfg: &TrainConfig, params: &Params) -> bool {
    cfg.train_vision
        || params.iter().any(|(name, _)| {
            name.starts_with("model.projector.")
                || name.starts_with("model.image_newline")
                || name.starts_with("model.view_seperator")
        })
}

/// Loads the model of `dir` with the tensors `cfg` trains as `Var`s (returned by name, in name order).
pub fn load_trainable(cfg: &TrainConfig, dir: &Path, device: &Device) -> anyhow::Result<(Model, Params)> {
    let config = ModelConfig::from_file(&dir.join(CONFIG))?;
    let files = checkpoint::weight_files(dir)?;
    // SAFETY: see engine::checkpoint::var_builder.
    let weights = unsafe { MmapedSafetensors::multi(&files) }.with_context(|| format!("opening {}", dir.display()))?;
    let vars = Arc::new(Mutex::new(Vec::new()));
    let backend = Trainable { weights, vars: vars.clone(), cfg: cfg.clone() };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    let model = Model::new(config, dir, vb).with_context(|| format!("loading the model in {}", dir.display()))?;
    let mut params = std::mem::take(&mut *vars.lock().expect("not poisoned"));
    params.sort_by(|a: &(String, Var), b| a.0.cmp(&b.0));
    Ok((model, params))
}

struct Trainable {
    weights: MmapedSafetensors,
    vars: Arc<Mutex<Params>>,
    cfg: TrainConfig,
}

impl SimpleBackend for Trainable {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = SimpleBackend::get(&self.weights, shape, name, init, dtype, dev)?;
        if !trains_fully(&self.cfg, name) {
            return Ok(tensor);
        }
        let var = Var::from_tensor(&tensor)?;
        let t = var.as_tensor().clone();
        self.vars.lock().expect("not poisoned").push((name.to_string(), var));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        SimpleBackend::get_unchecked(&self.weights, name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.weights, name)
    }
}

/// Attaches fresh LoRA pairs (PEFT's init: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0; seeded) to every layer whose
/// last path part is a target module, vision layers only with `train_vision`. Returns them as parameters named
/// `<path>.lora_A.weight` / `.lora_B.weight`.
pub fn attach_lora(cfg: &TrainConfig, model: &mut Model) -> anyhow::Result<Params> {
    let lora = &cfg.lora;
    let alpha = if lora.use_rslora { lora.lora_alpha * (lora.r as f64).sqrt() } else { lora.lora_alpha };
    let device = model.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x1042_a5e7);
    let mut params = Vec::new();
    for linear in model.linears_mut() {
        let path = linear.path().to_string();
        let last = path.rsplit('.').next().unwrap_or("");
        let vision = VISION.iter().any(|p| path.starts_with(p));
        if !lora.target_modules.iter().any(|t| t == last) || (vision && !cfg.train_vision) {
            continue;
        }
        let (out_dim, in_dim) = linear.weight().dims2()?;
        let bound = 1.0 / (in_dim as f32).sqrt();
        let a: Vec<f32> = (0..lora.r * in_dim).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (lora.r, in_dim), &device)?)?;
        let b = Var::zeros((out_dim, lora.r), DType::F32, &device)?;
        linear.attach_lora(a.as_tensor().clone(), b.as_tensor().clone(), alpha, lora.lora_dropout)?;
        params.push((format!("{path}.lora_A.weight"), a));
        params.push((format!("{path}.lora_B.weight"), b));
    }
    anyhow::ensure!(!params.is_empty(), "lora.target_modules {:?} matches no layer of this model", lora.target_modules);
    Ok(params)
}
