//! `deepsynth init`: a new model directory from a preset, with seeded random weights and our byte-level
//! tokenizer. `tiny` is the full architecture at small widths (fast on a CPU); `deepseek-ocr` has the released
//! dimensions and tensor names.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{CONFIG, TOKENIZER, WEIGHTS};
use super::config::{DeepsynthConfig, ModelConfig};
use super::decoder::DecoderConfig;
use super::instruction::InstructionConfig;
use super::model::Model;
use super::tokenizer;
use super::vision::clip::{ClipConfig, ProjectorConfig};
use super::vision::sam::SamConfig;
use crate::page::{Mode, RenderConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// ~3M parameters: every part of the architecture at small widths; 512 px pages, 73 visual tokens.
    Tiny,
    /// The tiny widths made to learn reading quickly on a CPU (the `configs/pretrain-tiny-*` recipe): 32 px
    /// patches and one compressor conv, type twice as large; 512 px pages, 73 visual tokens of two characters each.
    Reader,
    /// DeepSeek-OCR's released dimensions (3.3B parameters; written as bf16, about 6.7 GB).
    DeepseekOcr,
}

/// The released model's `<image>` id; the tiny byte-level vocabulary puts it right after the bytes.
const RELEASED_IMAGE_ID: u32 = 128815;

/// How a new model reads its instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstructionChoice {
    /// Instruction tokens in the decoder's prompt (DeepSeek-OCR's own way).
    #[default]
    Prompt,
    /// A bidirectional Qwen2-style encoder (2 layers, the decoder's width and tokenizer) and a projector.
    Qwen2,
}

impl Preset {
    pub fn config(self, instruction: InstructionChoice) -> ModelConfig {
        let mut config = match self {
            Preset::Tiny => tiny(),
            Preset::Reader => reader(),
            Preset::DeepseekOcr => released(),
        };
        if instruction == InstructionChoice::Qwen2 {
            let d = &config.decoder;
            let encoder = serde_json::json!({
                "type": "qwen2", "causal": false, "vocab_size": d.vocab_size, "hidden_size": d.hidden_size,
                "intermediate_size": 2 * d.hidden_size, "num_hidden_layers": 2,
                "num_attention_heads": d.num_attention_heads, "num_key_value_heads": d.num_attention_heads,
                "rms_norm_eps": d.rms_norm_eps, "rope_theta": d.rope_theta,
                "max_position_embeddings": d.max_position_embeddings,
            });
            config.deepsynth.instruction =
                InstructionConfig::from_value(&serde_json::json!({"mode": "encoder", "encoder": encoder}))
                    .expect("a valid encoder configuration");
        }
        config
    }

    /// Where the tokenizer puts `<image>`.
    fn image_id(self) -> u32 {
        match self {
            Preset::Tiny | Preset::Reader => tokenizer::BYTE_LEVEL_IMAGE_ID,
            Preset::DeepseekOcr => RELEASED_IMAGE_ID,
        }
    }

    /// The dtype the weights are written in.
    fn dtype(self) -> DType {
        match self {
            Preset::Tiny | Preset::Reader => DType::F32,
            Preset::DeepseekOcr => DType::BF16,
        }
    }
}

fn decoder(hidden: usize, heads: usize, layers: usize, vocab: usize) -> DecoderConfig {
    DecoderConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: 0,
        moe_intermediate_size: 0,
        n_routed_experts: 0,
        n_shared_experts: 0,
        num_experts_per_tok: 0,
        first_k_dense_replace: 1,
        moe_layer_freq: 1,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        num_hidden_layers: layers,
        max_position_embeddings: 8192,
        bos_token_id: 0,
        eos_token_id: 1,
        topk_method: "greedy".into(),
        norm_topk_prob: false,
        routed_scaling_factor: 1.0,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        use_mla: false,
        kv_lora_rank: None,
        q_lora_rank: None,
    }
}

fn released() -> ModelConfig {
    let decoder = DecoderConfig {
        intermediate_size: 6848,
        moe_intermediate_size: 896,
        n_routed_experts: 64,
        n_shared_experts: 2,
        num_experts_per_tok: 6,
        ..decoder(1280, 10, 12, 129280)
    };
    ModelConfig {
        decoder,
        sam: SamConfig::default(),
        clip: ClipConfig::from_model_config(&serde_json::json!({"vision_config": {"width": {"clip-l-14-224": {}}}}))
            .expect("CLIP-L defaults"),
        projector: ProjectorConfig { projector_type: "linear".into(), input_dim: 2048, n_embed: 1280 },
        deepsynth: DeepsynthConfig::default(),
    }
}

/// Small widths, same structure: SAM (2 blocks, one global), both compressor convs, CLIP (2 layers) whose
/// position grid is the 8x8 of a 512 px page, a 3-layer decoder (dense, then MoE with shared experts).
/// Text is drawn at 16 px per character on 512 px pages: one character per SAM patch.
fn tiny() -> ModelConfig {
    let decoder = DecoderConfig {
        intermediate_size: 384,
        moe_intermediate_size: 96,
        n_routed_experts: 8,
        n_shared_experts: 1,
        num_experts_per_tok: 2,
        max_position_embeddings: 4096,
        ..decoder(192, 4, 3, tokenizer::BYTE_LEVEL_VOCAB)
    };
    let sam = SamConfig {
        width: 96,
        layers: 2,
        heads: 4,
        global_attn_indexes: vec![1],
        downsample_channels: vec![128, 192],
        image_size: 512,
        window_size: 8,
        out_chans: 96,
        ..SamConfig::default()
    };
    let clip = ClipConfig {
        width: 192,
        layers: 2,
        heads: 4,
        image_size: 112,
        patch_size: 14,
        ffn_hidden_size: Some(384),
        layernorm_epsilon: 1e-5,
    };
    let render = RenderConfig { width: 512, height: 512, ..RenderConfig::default() };
    ModelConfig {
        decoder,
        sam,
        clip,
        projector: ProjectorConfig { projector_type: "linear".into(), input_dim: 384, n_embed: 192 },
        deepsynth: DeepsynthConfig { mode: Mode::Tiny, render, ..DeepsynthConfig::default() },
    }
}

/// `tiny` with each visual token holding two characters of one line instead of ~4 characters of 2 lines: 32 px
/// patches and a single stride-2 conv (SAM attends over 16x16 patches, 4x cheaper than tiny's 32x32; visual tokens
/// still cover 64 px), type at 53 px per em (32 px a character) on 64 px lines from the page's corner, so that
/// lines and visual-token rows coincide: 8 lines of 16 characters a page.
fn reader() -> ModelConfig {
    let mut config = tiny();
    config.sam.patch_size = 32;
    config.sam.downsample_channels = vec![192];
    config.deepsynth.render = RenderConfig { width: 512, height: 512, font_size: 53.0, line_pitch: 64, margin: 0 };
    config
}

/// Writes `config.json`, `tokenizer.json` and `model.safetensors` for `preset` into `output` (created if needed;
/// each file written to a temporary file, then renamed). Returns the number of parameters.
pub fn init(preset: Preset, instruction: InstructionChoice, output: &Path, seed: u64) -> anyhow::Result<usize> {
    let config = preset.config(instruction);
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    let write = |name: &str, bytes: &[u8]| crate::data::io::write_atomic(&output.join(name), bytes);
    write(TOKENIZER, serde_json::to_string(&tokenizer::byte_level_json(preset.image_id()))?.as_bytes())?;
    write(CONFIG, serde_json::to_string_pretty(&config.to_value())?.as_bytes())?;

    let backend = Seeded { seed, tensors: Arc::default() };
    let tensors = backend.tensors.clone();
    let vb = VarBuilder::from_backend(Box::new(backend), preset.dtype(), Device::Cpu);
    // Building the model asks for every tensor once, with its name and shape.
    Model::new(config, output, vb)?;
    let tensors = std::mem::take(&mut *tensors.lock().expect("not poisoned"));
    let params = tensors.values().map(Tensor::elem_count).sum();
    super::checkpoint::save_atomic(&tensors, &output.join(WEIGHTS))?;
    Ok(params)
}

/// A weight source that makes each tensor as it is asked for: biases 0, constants (norm weights 1) as hinted,
/// everything else N(0, 0.02) (DeepSeek's `initializer_range`), from a stream seeded by the seed and the tensor's
/// name, so values do not depend on the order of construction.
struct Seeded {
    seed: u64,
    tensors: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl Seeded {
    fn values(&self, name: &str, n: usize, init: Init) -> Vec<f32> {
        if let Init::Const(v) = init {
            return vec![v as f32; n];
        }
        if name.ends_with(".bias") {
            return vec![0.0; n];
        }
        // FNV-1a of the name, mixed with the seed.
        let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        let mut rng = ChaCha8Rng::seed_from_u64(hash ^ self.seed.wrapping_mul(0x9E3779B97F4A7C15));
        (0..n)
            .map(|_| {
                // Box-Muller: one normal from two uniforms in (0, 1].
                let (u, v): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
            })
            .collect()
    }
}

impl SimpleBackend for Seeded {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let values = self.values(name, shape.elem_count(), init);
        let tensor = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
        self.tensors.lock().expect("not poisoned").insert(name.to_string(), tensor.clone());
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a new model's tensors need a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
