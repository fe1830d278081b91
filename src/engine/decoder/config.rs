//! The decoder's configuration, read from DeepSeek-OCR's `config.json` (its `language_config` object) as it is.

use std::path::Path;

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

/// Field names are the checkpoint's own `language_config` keys; keys we do not use are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the dense MLP (layers before `first_k_dense_replace`).
    pub intermediate_size: usize,
    /// Width of one routed expert; the shared experts together are `n_shared_experts` times this.
    pub moe_intermediate_size: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub first_k_dense_replace: usize,
    /// Every this-many layers (after the dense ones) is MoE; DeepSeek-V2's default 1 makes them all MoE.
    #[serde(default = "one")]
    pub moe_layer_freq: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    #[serde(default = "greedy")]
    pub topk_method: String,
    /// Renormalise the top-k routing weights to sum to 1 (DeepSeek-OCR: no).
    #[serde(default)]
    pub norm_topk_prob: bool,
    #[serde(default = "unit")]
    pub routed_scaling_factor: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Multi-head latent attention (DeepSeek-V2 proper) is not supported: DeepSeek-OCR's decoder has plain MHA.
    #[serde(default)]
    pub use_mla: bool,
    #[serde(default)]
    pub kv_lora_rank: Option<usize>,
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
}

fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}
fn greedy() -> String {
    "greedy".into()
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}

/// The attention shape every RoPE transformer here needs (the decoder, the Qwen2 instruction encoder): the width
/// splits into query heads of even size, and the query heads into groups per key/value head.
pub(crate) fn check_heads(hidden: usize, heads: usize, kv_heads: usize) -> anyhow::Result<()> {
    ensure!(heads > 0 && kv_heads > 0, "head counts must be positive");
    ensure!(
        hidden.is_multiple_of(heads) && (hidden / heads).is_multiple_of(2),
        "hidden_size {hidden} must split into num_attention_heads {heads} heads of even size (for RoPE)"
    );
    ensure!(
        heads.is_multiple_of(kv_heads),
        "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
    );
    Ok(())
}

impl DecoderConfig {
    /// Reads a model's `config.json`: DeepSeek-OCR's (the decoder under `language_config`) or a bare decoder config.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let value = crate::engine::read_model_config(path)?;
        Self::from_model_config(&value).with_context(|| format!("{}: bad decoder configuration", path.display()))
    }

    /// The decoder part of a parsed model config (see [`DecoderConfig::from_file`]), validated.
    pub fn from_model_config(value: &serde_json::Value) -> anyhow::Result<Self> {
        let (section, decoder) = match value.get("language_config") {
            Some(inner) => ("language_config", inner),
            None => ("top level", value),
        };
        let cfg: Self = serde_json::from_value(decoder.clone()).with_context(|| format!("in {section}"))?;
        cfg.validate().with_context(|| format!("in {section}"))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.use_mla || self.kv_lora_rank.is_some() || self.q_lora_rank.is_some() {
            bail!("use_mla must be false: multi-head latent attention (kv_lora_rank, q_lora_rank) is not supported");
        }
        ensure!(self.topk_method == "greedy", "topk_method {:?} is not supported (only \"greedy\")", self.topk_method);
        check_heads(self.hidden_size, self.num_attention_heads, self.num_key_value_heads)?;
        ensure!(self.moe_layer_freq > 0, "moe_layer_freq must be positive");
        if (0..self.num_hidden_layers).any(|i| self.is_moe_layer(i)) {
            ensure!(
                (1..=self.n_routed_experts).contains(&self.num_experts_per_tok),
                "num_experts_per_tok {} must be within 1..={} (n_routed_experts)",
                self.num_experts_per_tok,
                self.n_routed_experts
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether layer `i` has routed experts (else a dense MLP), as DeepSeek-V2 decides it.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.n_routed_experts > 0 && i >= self.first_k_dense_replace && i.is_multiple_of(self.moe_layer_freq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> serde_json::Value {
        // The released DeepSeek-OCR language_config, abridged to the keys that matter plus a few ignored ones.
        serde_json::json!({"language_config": {
            "bos_token_id": 0, "eos_token_id": 1, "first_k_dense_replace": 1, "hidden_size": 1280,
            "intermediate_size": 6848, "kv_lora_rank": null, "lm_head": true, "max_position_embeddings": 8192,
            "moe_intermediate_size": 896, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2,
            "num_attention_heads": 10, "num_experts_per_tok": 6, "num_hidden_layers": 12, "num_key_value_heads": 10,
            "q_lora_rank": null, "topk_method": "greedy", "torch_dtype": "bfloat16", "use_mla": false,
            "vocab_size": 129280}})
    }

    #[test]
    fn reads_released_config_with_defaults() {
        let cfg = DecoderConfig::from_model_config(&released()).unwrap();
        assert_eq!((cfg.hidden_size, cfg.head_dim(), cfg.n_routed_experts), (1280, 128, 64));
        assert_eq!((cfg.rms_norm_eps, cfg.rope_theta, cfg.routed_scaling_factor), (1e-6, 10000.0, 1.0));
        assert!(!cfg.norm_topk_prob);
        assert!(!cfg.is_moe_layer(0) && cfg.is_moe_layer(1) && cfg.is_moe_layer(11));
    }

    #[test]
    fn rejects_mla_and_names_missing_keys() {
        let mut value = released();
        value["language_config"]["use_mla"] = true.into();
        let err = format!("{:#}", DecoderConfig::from_model_config(&value).unwrap_err());
        assert!(err.contains("use_mla must be false"), "{err}");

        let mut value = released();
        value["language_config"].as_object_mut().unwrap().remove("hidden_size");
        let err = format!("{:#}", DecoderConfig::from_model_config(&value).unwrap_err());
        assert!(err.contains("language_config") && err.contains("hidden_size"), "{err}");
    }
}
