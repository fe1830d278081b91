//! The `instruction` object of deepsynth's config: how the instruction reaches the decoder.
//!
//! ```json
//! {"mode": "prompt"}
//! {"mode": "encoder", "encoder": {"type": "qwen2", "causal": false, "hidden_size": 896, ...}, "tokenizer": null}
//! {"mode": "encoder", "encoder": {"type": "bert", "hidden_size": 384, ...}, "tokenizer": "minilm/tokenizer.json"}
//! ```
//! The encoder objects take HF's own `Qwen2Config` / `BertConfig` keys, so a model's `config.json` can be pasted in
//! (keys we do not use are ignored); the projector needs no configuration (its sizes are the encoder's and the
//! decoder's hidden sizes).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

/// The `instruction` object; its default is prompt mode.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstructionConfig {
    /// Tagged by the `mode` key.
    #[serde(flatten)]
    pub mode: InstructionMode,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum InstructionMode {
    /// The instruction's tokens go into the decoder's prompt (DeepSeek-OCR's own way).
    #[default]
    Prompt,
    /// An encoder reads the instruction; its projected hidden states are inserted as instruction embeddings.
    Encoder(EncoderInstruction),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderInstruction {
    pub encoder: EncoderConfig,
    /// The encoder's tokenizer.json, relative to the model directory; None: the model's own `tokenizer.json`.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// Tagged by the `type` key: `"qwen2"` or `"bert"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EncoderConfig {
    Qwen2(Qwen2Config),
    Bert(BertConfig),
}

/// HF's `Qwen2Config` keys (those that shape the model) plus `causal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Causal attention as in the language model; false (the default): every token sees the whole instruction.
    #[serde(default)]
    pub causal: bool,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "qwen2_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "qwen2_rope_theta")]
    pub rope_theta: f64,
    /// The longest instruction (in tokens) the encoder accepts.
    #[serde(default = "qwen2_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "silu")]
    pub hidden_act: String,
}

/// HF's `BertConfig` keys (those that shape the model); a BERT's own `config.json` reads as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// The size of the position table, hence the longest instruction (in tokens) the encoder accepts.
    #[serde(default = "bert_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn qwen2_rms_norm_eps() -> f64 {
    1e-6
}
fn qwen2_rope_theta() -> f64 {
    10000.0
}
fn qwen2_max_positions() -> usize {
    32768
}
fn silu() -> String {
    "silu".into()
}
fn gelu() -> String {
    "gelu".into()
}
fn bert_max_positions() -> usize {
    512
}
fn two() -> usize {
    2
}
fn bert_layer_norm_eps() -> f64 {
    1e-12
}
fn absolute() -> String {
    "absolute".into()
}

impl InstructionConfig {
    /// Parses and validates the `instruction` object.
    pub fn from_value(value: &serde_json::Value) -> anyhow::Result<Self> {
        let cfg: Self = serde_json::from_value(value.clone()).context("bad instruction configuration")?;
        if let InstructionMode::Encoder(enc) = &cfg.mode {
            enc.encoder.validate().context("bad instruction encoder configuration")?;
        }
        Ok(cfg)
    }

    /// The tokenizer.json that tokenizes instructions, for a model in `model_dir`.
    pub fn tokenizer_path(&self, model_dir: &Path) -> PathBuf {
        match &self.mode {
            InstructionMode::Encoder(EncoderInstruction { tokenizer: Some(path), .. }) => model_dir.join(path),
            _ => model_dir.join("tokenizer.json"),
        }
    }
}

impl EncoderConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            Self::Qwen2(cfg) => cfg.validate(),
            Self::Bert(cfg) => cfg.validate(),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Qwen2(cfg) => cfg.hidden_size,
            Self::Bert(cfg) => cfg.hidden_size,
        }
    }

    /// The longest instruction, in tokens.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Qwen2(cfg) => cfg.max_position_embeddings,
            Self::Bert(cfg) => cfg.max_position_embeddings,
        }
    }
}

impl Qwen2Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.hidden_act == "silu", "qwen2 hidden_act {:?} is not supported (only \"silu\")", self.hidden_act);
        crate::engine::decoder::check_heads(self.hidden_size, self.num_attention_heads, self.num_key_value_heads)
    }
}

impl BertConfig {
    /// Reads a BERT's own `config.json` (e.g. a sentence-transformers model directory's).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let value = crate::engine::read_model_config(path)?;
        let cfg: Self =
            serde_json::from_value(value).with_context(|| format!("{}: bad BERT config", path.display()))?;
        cfg.validate().with_context(|| format!("{}: bad BERT config", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        // HF's "gelu" is the exact (erf) GELU; the tanh approximations would need their own op.
        ensure!(self.hidden_act == "gelu", "bert hidden_act {:?} is not supported (only \"gelu\")", self.hidden_act);
        ensure!(
            self.position_embedding_type == "absolute",
            "bert position_embedding_type {:?} is not supported (only \"absolute\")",
            self.position_embedding_type
        );
        ensure!(
            self.num_attention_heads > 0 && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} must split into num_attention_heads {} heads",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(self.type_vocab_size > 0, "type_vocab_size must be positive");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen2() -> serde_json::Value {
        json!({"type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
               "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
               "torch_dtype": "bfloat16", "tie_word_embeddings": true})
    }

    #[test]
    fn prompt_mode_is_the_default() {
        assert_eq!(InstructionConfig::default().mode, InstructionMode::Prompt);
        let cfg = InstructionConfig::from_value(&json!({"mode": "prompt"})).unwrap();
        assert_eq!(cfg, InstructionConfig::default());
        assert_eq!(cfg.tokenizer_path(Path::new("m")), Path::new("m/tokenizer.json"));
    }

    #[test]
    fn reads_an_encoder_with_defaults_and_ignores_foreign_keys() {
        let cfg = InstructionConfig::from_value(&json!({"mode": "encoder", "encoder": qwen2()})).unwrap();
        let InstructionMode::Encoder(enc) = &cfg.mode else { panic!("{cfg:?}") };
        let EncoderConfig::Qwen2(q) = &enc.encoder else { panic!("{enc:?}") };
        assert!(!q.causal);
        assert_eq!((q.rms_norm_eps, q.rope_theta, q.max_position_embeddings), (1e-6, 10000.0, 32768));
        assert_eq!((enc.encoder.hidden_size(), enc.tokenizer.as_ref()), (896, None));
        assert_eq!(cfg.tokenizer_path(Path::new("m")), Path::new("m/tokenizer.json"));
        // The value round-trips through serde.
        let again: InstructionConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn own_tokenizer_is_relative_to_the_model_directory() {
        let bert = json!({"type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
                          "num_attention_heads": 12, "intermediate_size": 1536});
        let value = json!({"mode": "encoder", "encoder": bert, "tokenizer": "minilm/tokenizer.json"});
        let cfg = InstructionConfig::from_value(&value).unwrap();
        assert_eq!(cfg.tokenizer_path(Path::new("m")), Path::new("m/minilm/tokenizer.json"));
    }

    #[test]
    fn errors_name_the_fault() {
        let err = |value: serde_json::Value| format!("{:#}", InstructionConfig::from_value(&value).unwrap_err());
        assert!(err(json!({"mode": "prefix"})).contains("prefix"));
        assert!(err(json!({"mode": "encoder"})).contains("encoder"));
        let e = err(json!({"mode": "encoder", "encoder": qwen2(), "tokeniser": null}));
        assert!(e.contains("tokeniser"), "{e}");
        let mut q = qwen2();
        q["type"] = "t5".into();
        assert!(err(json!({"mode": "encoder", "encoder": q})).contains("t5"));
        let mut q = qwen2();
        q["num_key_value_heads"] = 3.into();
        let e = err(json!({"mode": "encoder", "encoder": q}));
        assert!(e.contains("num_key_value_heads 3"), "{e}");
        let mut q = qwen2();
        q.as_object_mut().unwrap().remove("hidden_size");
        assert!(err(json!({"mode": "encoder", "encoder": q})).contains("hidden_size"));
    }
}
