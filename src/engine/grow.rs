//! `deepsynth grow`: a deeper decoder that computes exactly what the original did (block expansion). Each new
//! layer is a copy of the layer it is inserted before, with its attention output and MLP down projections zeroed:
//! the new layer adds zero to the residual stream until training moves those projections. Measured on the tiny
//! reader: the lookup of a question's line, stuck at 3 layers, resumed with 5 (BENCHMARKS.md, "Reading recipe").

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use candle_core::Tensor;

use super::checkpoint::{self, CONFIG};
use super::config::ModelConfig;
use super::decoder::DecoderConfig;

const LAYERS: &str = "model.layers.";
/// The projections whose output enters the residual stream.
const OUTPUTS: [&str; 2] = ["o_proj", "down_proj"];

/// Writes `output` as `model_dir` with a new decoder layer inserted before each of the layers `before` (indices
/// into the original). Returns the new number of decoder layers.
pub fn grow(model_dir: &Path, output: &Path, before: &[usize]) -> anyhow::Result<usize> {
    let config_path = model_dir.join(CONFIG);
    let mut config = super::read_model_config(&config_path)?;
    let decoder = DecoderConfig::from_model_config(&config)
        .with_context(|| format!("{}: bad decoder configuration", config_path.display()))?;
    let before: BTreeSet<usize> = before.iter().copied().collect();
    let n = decoder.num_hidden_layers;
    ensure!(!before.is_empty(), "grow: name at least one layer to insert a copy before");
    if let Some(bad) = before.iter().find(|&&i| i >= n) {
        bail!("--before {bad}: {} has {n} decoder layers (0-{})", model_dir.display(), n - 1);
    }
    let k = decoder.first_k_dense_replace;
    if decoder.moe_layer_freq != 1 && decoder.n_routed_experts > 0 && before.iter().any(|&i| i >= k) {
        bail!("grow: moe_layer_freq {} would change which layers are mixtures of experts", decoder.moe_layer_freq);
    }

    // New layer index -> (original layer, whether its outputs are zeroed).
    let plan: Vec<(usize, bool)> =
        (0..n).flat_map(|i| before.contains(&i).then_some((i, true)).into_iter().chain([(i, false)])).collect();
    let tensors = checkpoint::load_all(model_dir)?;
    let mut grown: HashMap<String, Tensor> =
        tensors.iter().filter(|(name, _)| !name.starts_with(LAYERS)).map(|(n, t)| (n.clone(), t.clone())).collect();
    for (new, &(old, zeroed)) in plan.iter().enumerate() {
        let prefix = format!("{LAYERS}{old}.");
        for (name, tensor) in tensors.iter().filter(|(name, _)| name.starts_with(&prefix)) {
            let rest = &name[prefix.len()..];
            let module = rest.rsplit('.').nth(1).unwrap_or_default();
            let tensor = if zeroed && OUTPUTS.contains(&module) { tensor.zeros_like()? } else { tensor.clone() };
            grown.insert(format!("{LAYERS}{new}.{rest}"), tensor);
        }
    }

    let section = match config.get_mut("language_config") {
        Some(inner) => inner,
        None => &mut config,
    };
    section["num_hidden_layers"] = plan.len().into();
    // Copies of dense layers stay dense: the dense block grows by them.
    section["first_k_dense_replace"] = (k + before.iter().filter(|&&i| i < k).count()).into();
    ModelConfig::from_value(&config).context("the grown configuration")?;
    let bytes = serde_json::to_vec_pretty(&config)?;
    checkpoint::write_model_dir_with_config(model_dir, output, &bytes, &grown)?;
    Ok(plan.len())
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::engine::decoder::Decoder;
    use crate::engine::preset::{self, InstructionChoice, Preset};

    fn logits(dir: &Path) -> (Tensor, DecoderConfig) {
        let cfg = DecoderConfig::from_file(&dir.join(CONFIG)).unwrap();
        let vb = checkpoint::var_builder(dir, DType::F32, &Device::Cpu).unwrap();
        let decoder = Decoder::new(&cfg, vb).unwrap();
        let embeds = crate::engine::test_pattern(&[2, 7, cfg.hidden_size], 3);
        (decoder.forward(&embeds, None).unwrap(), cfg)
    }

    #[test]
    fn grown_decoder_has_the_new_layers_and_the_same_logits() {
        let dir = tempfile::tempdir().unwrap();
        let (base, grown) = (dir.path().join("base"), dir.path().join("grown"));
        preset::init(Preset::Tiny, InstructionChoice::Prompt, &base, 0).unwrap();
        let (before, base_cfg) = logits(&base);
        // Before the dense layer 0 and a mixture-of-experts layer.
        let last = base_cfg.num_hidden_layers - 1;
        assert_eq!(grow(&base, &grown, &[0, last]).unwrap(), base_cfg.num_hidden_layers + 2);
        let (after, cfg) = logits(&grown);
        assert_eq!(cfg.num_hidden_layers, base_cfg.num_hidden_layers + 2);
        assert_eq!(cfg.first_k_dense_replace, base_cfg.first_k_dense_replace + 1);
        let diff = (after - &before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);

        // The copies are real layers: their input projections are the original's, their outputs zero.
        let weights = checkpoint::load_all(&grown).unwrap();
        let original = checkpoint::load_all(&base).unwrap();
        let q = |w: &HashMap<String, Tensor>, i: usize| w[&format!("model.layers.{i}.self_attn.q_proj.weight")].clone();
        let same = (q(&weights, last + 1) - q(&original, last)).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);
        let o = &weights[&format!("model.layers.{}.self_attn.o_proj.weight", last + 1)];
        assert_eq!(o.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert!(
            original[&format!("model.layers.{last}.self_attn.o_proj.weight")]
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn a_layer_the_model_lacks_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        preset::init(Preset::Tiny, InstructionChoice::Prompt, &base, 0).unwrap();
        let err = format!("{:#}", grow(&base, &dir.path().join("out"), &[9]).unwrap_err());
        assert!(err.contains("--before 9") && err.contains("decoder layers"), "{err}");
        assert!(!dir.path().join("out").exists());
    }
}
