//! The whole model over a model directory: documents -> pages -> visual tokens, prompts with the visual tokens
//! spliced into the `<image>` positions, and batched generation. Every subcommand (instruct, inspect, train,
//! serve) goes through here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::checkpoint::{self, CONFIG, TOKENIZER};
use super::config::ModelConfig;
use super::decoder::{Decoder, Prompt};
use super::instruction::{InstructionEncoder, InstructionMode};
use super::linear::Linear;
use super::lora;
use super::sample::{Sampler, SamplingParams};
use super::tokenizer::Tokenizer;
use super::vision::DeepEncoder;
use crate::page;
pub use crate::page::Document;

/// A document's visual tokens [pages · tokens_per_page, hidden], ready to fill a prompt's `<image>` positions.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub tokens: Tensor,
    pub pages: usize,
    pub time: Duration,
}

/// One question for [`Model::answer`].
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub document: &'a Encoded,
    pub instruction: &'a str,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub answer: String,
    pub tokens_generated: usize,
    pub prompt_tokens: usize,
    pub vision_tokens: usize,
    /// Whether generation ended at EOS (rather than at max_new_tokens).
    pub finished: bool,
    pub timings: Timings,
}

/// Seconds spent per stage. In a batch, prefill and decode are the batch's (shared by its requests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timings {
    pub vision_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
}

#[derive(Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub vision: DeepEncoder,
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    /// In `encoder` instruction mode: the encoder (with its projector) and the tokenizer of instructions.
    pub instruction: Option<(InstructionEncoder, tokenizers::Tokenizer)>,
    pub dir: PathBuf,
}

impl Model {
    /// Loads a model directory (config.json, weights, tokenizer.json) onto `device` in f32.
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let config = ModelConfig::from_file(&dir.join(CONFIG))?;
        let vb = checkpoint::var_builder(dir, DType::F32, device)?;
        Self::new(config, dir, vb).with_context(|| format!("loading the model in {}", dir.display()))
    }

    /// Builds the model from `vb` (weights at the checkpoint's names) with the tokenizer of `dir`.
    pub fn new(config: ModelConfig, dir: &Path, vb: VarBuilder) -> anyhow::Result<Self> {
        let tokenizer =
            Tokenizer::from_file(&dir.join(TOKENIZER), config.decoder.bos_token_id, config.decoder.eos_token_id)?;
        ensure!(
            (tokenizer.image as usize) < config.decoder.vocab_size,
            "{}: the <image> id {} is outside the decoder's vocabulary ({})",
            dir.join(TOKENIZER).display(),
            tokenizer.image,
            config.decoder.vocab_size
        );
        ensure!(
            !(config.deepsynth.instruction_first && config.deepsynth.instruction.mode != InstructionMode::Prompt),
            "{}: deepsynth.instruction_first needs the instruction in the prompt (mode \"prompt\")",
            dir.join(CONFIG).display()
        );
        let vision = DeepEncoder::new(&config.sam, &config.clip, &config.projector, vb.clone())?;
        let instruction = match &config.deepsynth.instruction.mode {
            InstructionMode::Prompt => None,
            InstructionMode::Encoder(enc) => {
                let path = config.deepsynth.instruction.tokenizer_path(dir);
                let tokenizer = tokenizers::Tokenizer::from_file(&path)
                    .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer.json: {e}", path.display()))?;
                Some((InstructionEncoder::new(&enc.encoder, config.decoder.hidden_size, vb.clone())?, tokenizer))
            }
        };
        let decoder = Decoder::new(&config.decoder, vb)?;
        Ok(Self { config, vision, decoder, tokenizer, instruction, dir: dir.to_path_buf() })
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// Every layer that can carry a LoRA adapter: the vision encoder's, then the decoder's.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = self.vision.sam.linears_mut();
        all.extend(self.vision.clip.linears_mut());
        all.extend(self.vision.projector.linears_mut());
        if let Some((encoder, _)) = &mut self.instruction {
            all.extend(encoder.linears_mut());
        }
        all.extend(self.decoder.linears_mut());
        all
    }

    /// Attaches a PEFT LoRA adapter directory; returns how many layers it adapts.
    pub fn load_adapter(&mut self, dir: &Path) -> anyhow::Result<usize> {
        let device = self.device().clone();
        lora::load_adapter(dir, self.linears_mut(), &device)
            .with_context(|| format!("loading the adapter in {}", dir.display()))
    }

    /// The document's pages as the model sees them (see [`ModelConfig::pages`]).
    pub fn pages(&self, document: &Document) -> anyhow::Result<Vec<RgbImage>> {
        self.config.pages(document)
    }

    /// Pixels [pages, 3, S, S] for the document's pages.
    pub fn pixels(&self, document: &Document) -> anyhow::Result<Tensor> {
        self.pixels_of(&self.pages(document)?)
    }

    /// Pixels [pages, 3, S, S] for pages already rendered (see [`Model::pages`]).
    pub fn pixels_of(&self, pages: &[RgbImage]) -> anyhow::Result<Tensor> {
        let tensors =
            pages.iter().map(|p| page::preprocess::to_tensor(p, self.device())).collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&tensors, 0)?)
    }

    /// Each document's visual tokens from its pixels [pages, 3, S, S]: the pages of all documents go through the
    /// vision encoder together, `vision_batch` at a time (bigger matrix products than one page after another).
    /// `train` enables LoRA dropout.
    pub fn visual_tokens_of(
        &self,
        documents: &[&Tensor],
        vision_batch: usize,
        train: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let all = Tensor::cat(documents, 0)?;
        let pages = all.dim(0)?;
        let mut tokens = Vec::new();
        for start in (0..pages).step_by(vision_batch.max(1)) {
            let chunk = all.narrow(0, start, vision_batch.min(pages - start))?;
            tokens.push(self.vision.visual_tokens(&chunk, train)?);
        }
        let tokens = Tensor::cat(&tokens, 0)?;
        let per_page = tokens.dim(0)? / pages;
        let mut row = 0;
        documents
            .iter()
            .map(|document| {
                let len = document.dim(0)? * per_page;
                row += len;
                tokens.narrow(0, row - len, len)
            })
            .collect()
    }

    /// Renders (if text), preprocesses and encodes a document.
    pub fn encode(&self, document: &Document) -> anyhow::Result<Encoded> {
        let start = Instant::now();
        let pixels = self.pixels(document)?;
        let pages = pixels.dim(0)?;
        let tokens = self.vision.visual_tokens(&pixels, false)?;
        Ok(Encoded { tokens, pages, time: start.elapsed() })
    }

    /// A request's prompt embeddings [len, hidden] and the text ids in it (for the repetition penalty). Prompt
    /// mode: `<image>\n<instruction>` as ids ([`Model::prompt_ids`]); encoder mode: `<image>\n` then the
    /// instruction encoder's projected states. The answer follows directly. `train` enables LoRA dropout.
    pub fn prompt(&self, visual: &Tensor, instruction: &str, train: bool) -> anyhow::Result<(Tensor, Vec<u32>)> {
        let text = if self.instruction.is_some() { "" } else { instruction };
        let ids = self.prompt_ids(visual.dim(0)?, text)?;
        let mut embeds = self.embed_prompt(&ids, visual)?;
        let mut text_ids: Vec<u32> = ids.into_iter().filter(|&id| id != self.tokenizer.image).collect();
        if let Some((encoder, tokenizer)) = &self.instruction {
            let encoding = tokenizer
                .encode(instruction, true)
                .map_err(|e| anyhow::anyhow!("cannot tokenize the instruction: {e}"))?;
            let ids = encoding.get_ids();
            anyhow::ensure!(!ids.is_empty(), "the instruction is empty");
            let ids_t = Tensor::new(ids, self.device())?.unsqueeze(0)?;
            let mask = ids_t.ones_like()?;
            let states = encoder.forward_t(&ids_t, &mask, train)?.squeeze(0)?;
            embeds = Tensor::cat(&[&embeds, &states.to_dtype(embeds.dtype())?], 0)?;
            // The instruction's own ids only count for the penalty when both sides share one vocabulary.
            if self.config.deepsynth.instruction.tokenizer_path(&self.dir) == self.dir.join(TOKENIZER) {
                text_ids.extend_from_slice(ids);
            }
        }
        Ok((embeds, text_ids))
    }

    /// The prompt's ids: BOS, one `<image>` per visual token, then "\n" and the instruction (DeepSeek-OCR's
    /// `<image>\n<instruction>`); with `instruction_first`, `<instruction>\n<image>\n`.
    pub fn prompt_ids(&self, vision_tokens: usize, instruction: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(vision_tokens + instruction.len() + 2);
        ids.push(self.tokenizer.bos);
        if self.config.deepsynth.instruction_first {
            ids.extend(self.tokenizer.encode(&format!("{instruction}\n"))?);
            ids.extend(std::iter::repeat_n(self.tokenizer.image, vision_tokens));
            ids.extend(self.tokenizer.encode("\n")?);
        } else {
            ids.extend(std::iter::repeat_n(self.tokenizer.image, vision_tokens));
            ids.extend(self.tokenizer.encode(&format!("\n{instruction}"))?);
        }
        Ok(ids)
    }

    /// Embeddings [len, hidden] of `ids`, the rows at `<image>` positions replaced, in order, by `visual` rows.
    pub fn embed_prompt(&self, ids: &[u32], visual: &Tensor) -> anyhow::Result<Tensor> {
        let image = self.tokenizer.image;
        let placeholders = ids.iter().filter(|&&id| id == image).count();
        let rows = visual.dim(0)?;
        ensure!(placeholders == rows, "the prompt has {placeholders} <image> positions for {rows} visual tokens");
        let embeds = self.decoder.embed(&Tensor::new(ids, self.device())?)?;
        // Runs of text and of placeholders, each taken from its own source.
        let mut pieces = Vec::new();
        let (mut start, mut used) = (0, 0);
        while start < ids.len() {
            let is_image = ids[start] == image;
            let len = ids[start..].iter().take_while(|&&id| (id == image) == is_image).count();
            pieces.push(if is_image { visual.narrow(0, used, len)? } else { embeds.narrow(0, start, len)? });
            used += if is_image { len } else { 0 };
            start += len;
        }
        Ok(Tensor::cat(&pieces, 0)?)
    }

    /// Answers several requests in one batch (prompts left-padded to the longest).
    pub fn answer(&self, requests: &[Request]) -> anyhow::Result<Vec<Answer>> {
        self.answer_streaming(requests, |_, _| true)
    }

    /// [`Model::answer`], showing each token id to `on_token(request, id)` as it is chosen; a request stops early
    /// when it returns false (its answer then holds what came before, `finished` false).
    pub fn answer_streaming(
        &self,
        requests: &[Request],
        on_token: impl FnMut(usize, u32) -> bool,
    ) -> anyhow::Result<Vec<Answer>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(requests.len());
        let mut samplers = Vec::with_capacity(requests.len());
        for request in requests {
            request.params.validate()?;
            let vision_tokens = request.document.tokens.dim(0)?;
            let (embeds, text_ids) = self.prompt(&request.document.tokens, request.instruction, false)?;
            let len = embeds.dim(0)?;
            rows.push((embeds, len, vision_tokens));
            samplers.push(Sampler::new(request.params.clone(), text_ids));
        }
        let prompt = Prompt::left_padded(&rows.iter().map(|(e, _, _)| e.clone()).collect::<Vec<_>>())?;
        let generation = self.decoder.generate(&prompt, &mut samplers, Some(self.tokenizer.eos), on_token)?;
        let mut answers = Vec::with_capacity(requests.len());
        for ((request, (_, prompt_tokens, vision_tokens)), tokens) in requests.iter().zip(rows).zip(generation.tokens) {
            let finished = tokens.last() == Some(&self.tokenizer.eos);
            let text_tokens = if finished { &tokens[..tokens.len() - 1] } else { &tokens[..] };
            answers.push(Answer {
                answer: self.tokenizer.decode(text_tokens)?,
                tokens_generated: tokens.len(),
                prompt_tokens,
                vision_tokens,
                finished,
                timings: Timings {
                    vision_s: request.document.time.as_secs_f64(),
                    prefill_s: generation.prefill.as_secs_f64(),
                    decode_s: generation.decode.as_secs_f64(),
                },
            });
        }
        Ok(answers)
    }
}

/// The device named on the command line: `cpu`, or `cuda` / `cuda:N` when built with the `cuda` feature.
pub fn device(name: &str) -> anyhow::Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let ordinal = match name.strip_prefix("cuda:") {
                Some(n) => n.parse().with_context(|| format!("--device {name}: bad GPU number"))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {name}: this build has no CUDA support (rebuild with `--features cuda`)");
            }
            Device::new_cuda(ordinal).with_context(|| format!("--device {name}: cannot open the GPU"))
        }
        _ => bail!("--device {name}: expected cpu, cuda or cuda:N"),
    }
}
