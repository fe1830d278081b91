//! Engine speed on CPU: the decoder's prefill and greedy decode, the vision encoder per page, memory bandwidth.
//!
//! Not a test. `python3 bench/engine.py` builds this (`cargo bench --bench engine --no-run`, the bench profile:
//! opt-level 3), runs each part in its own process beside the transformers baseline (bench/engine_baseline.py) and
//! writes BENCHMARKS.md. Each subcommand prints one line `RESULT {json}` on stdout. candle's CPU kernels use
//! rayon's pool: its size is RAYON_NUM_THREADS.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use clap::{Parser, Subcommand};
use deepsynth::engine::decoder::{Decoder, DecoderConfig, Prompt};
use deepsynth::engine::read_model_config;
use deepsynth::engine::vision::clip::{visual_features, ClipConfig, ProjectorConfig};
use deepsynth::engine::vision::sam::SamConfig;
use deepsynth::engine::vision::DeepEncoder;
use rayon::prelude::*;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Prefill of the prompt, then greedy decoding without early stop. MODEL holds config.json,
    /// model.safetensors and prompt.safetensors (`input_ids` [1, len]).
    Decoder {
        model: PathBuf,
        /// Tokens generated per run: the first from the prefill, the others one decode step each.
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// One Base (1024 px) page through the DeepEncoder: MODEL is a DeepSeek-OCR model directory, IO the reference
    /// run's tensors (`images_ori`, `projector_out`).
    Vision {
        model: PathBuf,
        #[arg(long)]
        io: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Read bandwidth of a large array, summed by rayon's threads.
    Bandwidth {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Decoder { model, new_tokens, runs }) => decoder(&model, new_tokens, runs)?,
        Some(Command::Vision { model, io, runs }) => vision(&model, &io, runs)?,
        Some(Command::Bandwidth { mib, runs }) => bandwidth(mib, runs),
        None => {
            eprintln!("engine benchmark: run `python3 bench/engine.py` (it builds this and runs each part)");
            return Ok(());
        }
    };
    println!("RESULT {result}");
    Ok(())
}

fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn load_weights(dir: &Path) -> Result<VarBuilder<'static>> {
    let path = dir.join("model.safetensors");
    // SAFETY: the weights file is not modified while mapped.
    unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
        .with_context(|| format!("mapping {}", path.display()))
}

/// Peak and current resident set size (MiB) of this process, from /proc/self/status (VmHWM, VmRSS).
fn rss_mib() -> Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> Result<f64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        let kib: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// The greedy pick at the last position of logits [1, len, vocab].
fn last_argmax(logits: &Tensor) -> Result<u32> {
    let len = logits.dim(1)?;
    Ok(logits.i((0, len - 1))?.argmax(D::Minus1)?.to_scalar::<u32>()?)
}

/// One timed generation: prefill (hidden states of every prompt position, logits of the last only: all that
/// generation needs) then `new_tokens - 1` single-position steps. Returns (prefill s, decode s, ids).
fn generate_timed(decoder: &Decoder, ids: &Tensor, new_tokens: usize) -> Result<(f64, f64, Vec<u32>)> {
    let mut cache = decoder.new_cache();
    let start = Instant::now();
    let hidden = decoder.hidden_states(&decoder.embed(ids)?, Some(&mut cache), false)?;
    let len = hidden.dim(1)?;
    let mut next = last_argmax(&decoder.logits(&hidden.narrow(1, len - 1, 1)?)?)?;
    let prefill = seconds(start);
    let mut out = vec![next];
    let start = Instant::now();
    while out.len() < new_tokens {
        let embeds = decoder.embed(&Tensor::new(&[[next]], ids.device())?)?;
        next = last_argmax(&decoder.forward(&embeds, Some(&mut cache))?)?;
        out.push(next);
    }
    Ok((prefill, seconds(start), out))
}

fn decoder(dir: &Path, new_tokens: usize, runs: usize) -> Result<serde_json::Value> {
    ensure!(new_tokens >= 2, "--new-tokens must be at least 2 (one prefill token, then decode steps)");
    let cfg = DecoderConfig::from_file(&dir.join("config.json"))?;
    let start = Instant::now();
    let decoder = Decoder::new(&cfg, load_weights(dir)?).context("building the decoder")?;
    let load_s = seconds(start);
    let prompt_path = dir.join("prompt.safetensors");
    let prompt = candle_core::safetensors::load(&prompt_path, &Device::Cpu)
        .with_context(|| format!("reading {}", prompt_path.display()))?;
    let rows = prompt.get("input_ids").context("prompt.safetensors has no input_ids")?.to_vec2::<i64>()?;
    let ids: Vec<u32> = rows.concat().into_iter().map(|id| id as u32).collect();
    let prompt_len = ids.len();
    let ids = Tensor::from_vec(ids, (1, prompt_len), &Device::Cpu)?;

    // Warm-up: the library's own greedy loop, which must pick the same ids as the timed loop below.
    let start = Instant::now();
    let greedy = decoder.generate_greedy(&Prompt::new(decoder.embed(&ids)?), new_tokens, None)?;
    let generate_greedy_s = seconds(start);
    let (mut prefill_s, mut decode_s, mut ids_out) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (prefill, decode, out) = generate_timed(&decoder, &ids, new_tokens)?;
        prefill_s.push(prefill);
        decode_s.push(decode);
        ids_out = out;
    }
    ensure!(greedy[0] == ids_out, "generate_greedy picked {:?}, the timed loop {ids_out:?}", greedy[0]);
    let (peak, now) = rss_mib()?;
    Ok(json!({
        "threads": rayon::current_num_threads(), "load_s": load_s, "prompt_len": prompt_len,
        "decode_steps": new_tokens - 1, "prefill_s": prefill_s, "decode_s": decode_s,
        "generate_greedy_s": generate_greedy_s, "ids": ids_out, "peak_rss_mib": peak, "rss_mib": now,
    }))
}

fn vision(dir: &Path, io_path: &Path, runs: usize) -> Result<serde_json::Value> {
    ensure!(runs >= 1, "--runs must be at least 1");
    let config = read_model_config(&dir.join("config.json"))?;
    let (sam, clip, projector) = (
        SamConfig::from_model_config(&config)?,
        ClipConfig::from_model_config(&config)?,
        ProjectorConfig::from_model_config(&config)?,
    );
    let start = Instant::now();
    let encoder = DeepEncoder::new(&sam, &clip, &projector, load_weights(dir)?).context("building the encoder")?;
    let load_s = seconds(start);
    let io = candle_core::safetensors::load(io_path, &Device::Cpu)
        .with_context(|| format!("reading {}", io_path.display()))?;
    let tensor = |name: &str| io.get(name).with_context(|| format!("{} has no {name}", io_path.display()));
    let batch = tensor("images_ori")?.to_dtype(DType::F32)?;

    // Warm-up, and proof that this is the reference computation: the grid part of the tokens is projector_out.
    let tokens = encoder.visual_tokens(&batch, false)?;
    let want = tensor("projector_out")?.to_dtype(DType::F32)?;
    let (_, positions, n_embed) = want.dims3()?;
    let side = (positions as f64).sqrt() as usize;
    let grid = tokens.narrow(0, 0, side * (side + 1))?.reshape((side, side + 1, n_embed))?.narrow(1, 0, side)?;
    let max_abs_diff = (grid.reshape((1, positions, n_embed))? - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;

    // Timed pages: the calls visual_tokens makes, one by one, to see where the time goes.
    let (mut page_s, mut parts) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let sam_out = encoder.sam.forward(&batch)?;
        let sam_s = seconds(start);
        let clip_out = encoder.clip.forward(&sam_out)?;
        let clip_s = seconds(start) - sam_s;
        let projected = encoder.projector.forward_t(&visual_features(&clip_out, &sam_out)?, false)?;
        let timed = encoder.projector.image_tokens(&projected.squeeze(0)?, (side, side))?;
        page_s.push(seconds(start));
        parts = vec![sam_s, clip_s, page_s[page_s.len() - 1] - sam_s - clip_s];
        ensure!(timed.eq(&tokens)?.min_all()?.to_scalar::<u8>()? == 1, "the timed calls differ from visual_tokens");
    }
    let (peak, now) = rss_mib()?;
    Ok(json!({
        "threads": rayon::current_num_threads(), "load_s": load_s, "page_s": page_s,
        "tokens": tokens.dim(0)?, "max_abs_diff": max_abs_diff,
        "parts_s": {"sam": parts[0], "clip": parts[1], "projector": parts[2]},
        "peak_rss_mib": peak, "rss_mib": now,
    }))
}

fn bandwidth(mib: usize, runs: usize) -> serde_json::Value {
    let words = mib << 17; // 8-byte words per MiB: 2^20 / 8
    let data: Vec<u64> = (0..words as u64).collect();
    let want = (0..words as u64).fold(0u64, u64::wrapping_add);
    let mut read_s = Vec::new();
    // One more pass than timed: the first warms the threads.
    for _ in 0..=runs {
        let start = Instant::now();
        // Integer sums vectorise (float sums would not, for want of reassociation): this reads at memory speed.
        let sum = data
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        read_s.push(seconds(start));
        assert_eq!(black_box(sum), want, "the sum checks that every word was read");
    }
    json!({"threads": rayon::current_num_threads(), "bytes": words * 8, "read_s": &read_s[1..]})
}
