//! The engine thread: owns the model (and one copy per adapter, sharing the base weights), takes questions from
//! a queue, and answers them in dynamic batches: it waits for the first question, gathers more for up to
//! `batch_wait` or until `max_batch`, encodes the documents the cache lacks in one vision pass, and decodes all
//! the batch's questions together, streaming each token to its request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::api::Ask;
use super::cache::{Cache, Key};
use super::error::ApiError;
use super::metrics::Metrics;
use crate::engine::model::{Encoded, Model, Request};
use crate::engine::tokenizer::Tokenizer;

/// How the engine batches and what it accepts.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub max_batch: usize,
    pub batch_wait: Duration,
    /// Pages run through the vision encoder in one pass (memory grows with it).
    pub vision_batch: usize,
    pub max_pages: usize,
}

/// What a request hears from the engine: text pieces as they are generated, then the outcome or a failure.
#[derive(Debug)]
pub enum Event {
    Token(String),
    Done(Outcome),
    Failed(ApiError),
}

/// The answer to one question, with its counts and where its time went.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub answer: String,
    pub tokens_generated: usize,
    pub prompt_tokens: usize,
    pub vision_tokens: usize,
    pub pages: usize,
    /// Whether generation ended at EOS (rather than at the token limit or a cancellation).
    pub finished: bool,
    /// Whether the document's visual tokens came from the cache.
    pub cached: bool,
    /// From admission to the answer, queueing included.
    pub inference_time_ms: f64,
    pub timings: Timings,
}

/// Milliseconds per stage. Vision, prefill and decode are those of the batch the request was part of.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub queue_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

pub struct Job {
    pub ask: Ask,
    pub events: UnboundedSender<Event>,
    /// Set when the request goes away (client disconnected, timed out): the engine stops its generation.
    pub cancel: Arc<AtomicBool>,
    pub admitted: Instant,
}

impl Job {
    fn fail(&self, error: ApiError) {
        let _ = self.events.send(Event::Failed(error));
    }
}

/// What the HTTP side shares with the engine thread.
pub struct Shared {
    pub cache: Mutex<Cache>,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// Set at the end of a shutdown's grace period: every generation stops.
    pub stop_all: AtomicBool,
}

/// Starts the engine thread, which loads the model and its adapters, then answers the jobs sent on the returned
/// channel until every sender is gone. A model that fails to load ends the process (exit 1) with the error.
pub fn start(
    model: PathBuf,
    adapters: Vec<(String, PathBuf)>,
    device: candle_core::Device,
    settings: EngineSettings,
    shared: Arc<Shared>,
) -> anyhow::Result<mpsc::Sender<Job>> {
    let (sender, receiver) = mpsc::channel::<Job>();
    std::thread::Builder::new().name("engine".into()).spawn(move || {
        let models = match load(&model, &adapters, &device) {
            Ok(models) => models,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        };
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!("model loaded; ready");
        while let Ok(first) = receiver.recv() {
            let mut jobs = vec![first];
            let deadline = Instant::now() + settings.batch_wait;
            while jobs.len() < settings.max_batch {
                match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            shared.metrics.queue_depth.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
            let mut groups: HashMap<usize, Vec<Job>> = HashMap::new();
            for job in jobs {
                if job.cancel.load(Ordering::Relaxed) {
                    shared.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                groups.entry(job.ask.variant).or_default().push(job);
            }
            for (variant, jobs) in groups {
                run_batch(&models[variant], variant, jobs, &settings, &shared);
            }
        }
    })?;
    Ok(sender)
}

/// The base model, then one copy per adapter (the copies share the base weights; only LoRA factors are added).
fn load(
    model: &std::path::Path,
    adapters: &[(String, PathBuf)],
    device: &candle_core::Device,
) -> anyhow::Result<Vec<Model>> {
    let base = Model::load(model, device)?;
    let mut models = vec![base.clone()];
    for (name, dir) in adapters {
        let mut adapted = base.clone();
        let layers = adapted.load_adapter(dir).map_err(|e| e.context(format!("--adapter {name}")))?;
        tracing::info!("adapter {name} ({}): {layers} layers", dir.display());
        models.push(adapted);
    }
    Ok(models)
}

/// The text a request has streamed so far, to send only what is new, and never half a UTF-8 character.
struct TextStream {
    ids: Vec<u32>,
    sent: usize,
    /// Tokens since the last piece went out.
    held: usize,
}

impl TextStream {
    fn new() -> Self {
        Self { ids: Vec::new(), sent: 0, held: 0 }
    }

    fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Option<String> {
        self.ids.push(id);
        self.held += 1;
        let text = tokenizer.decode(&self.ids).ok()?;
        // A trailing replacement character may be a multi-byte character still arriving (at most 4 bytes, so
        // at most 3 more tokens); past that it is an invalid sequence the model wrote, and goes out as is.
        if text.ends_with('\u{FFFD}') && self.held < 4 {
            return None;
        }
        self.rest(&text)
    }

    fn rest(&mut self, text: &str) -> Option<String> {
        if text.len() <= self.sent || !text.is_char_boundary(self.sent) {
            return None;
        }
        let piece = text[self.sent..].to_string();
        self.sent = text.len();
        self.held = 0;
        Some(piece)
    }
}

/// A job's document, ready: its visual tokens, whether they were cached, and the vision time spent.
struct Ready {
    encoded: Encoded,
    cached: bool,
}

/// The visual tokens of each job's document, from the cache or from one batched vision pass; jobs whose
/// document cannot be used are failed and left out (None).
fn documents(
    model: &Model,
    variant: usize,
    jobs: &[Job],
    settings: &EngineSettings,
    shared: &Shared,
) -> Vec<Option<Ready>> {
    let mut ready: Vec<Option<Ready>> = (0..jobs.len()).map(|_| None).collect();
    // Documents to encode, each once however many jobs ask about it: key -> the jobs.
    let mut missing: Vec<(Key, Vec<usize>)> = Vec::new();
    {
        let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (i, job) in jobs.iter().enumerate() {
            let key = (variant, job.ask.document.hash);
            if let Some(pos) = missing.iter().position(|(k, _)| *k == key) {
                missing[pos].1.push(i);
            } else if let Some(encoded) = cache.get(&key) {
                ready[i] = Some(Ready { encoded: Encoded { time: Duration::ZERO, ..encoded }, cached: true });
            } else {
                missing.push((key, vec![i]));
            }
        }
    }
    if missing.is_empty() {
        return ready;
    }
    let start = Instant::now();
    // Pages in parallel (rendering is CPU work of its own); a document that fails fails its jobs only.
    let pixels: Vec<Option<Tensor>> = missing
        .par_iter()
        .map(|(_, users)| {
            let pages = super::api::pages(&model.config, &jobs[users[0]].ask.document.document, settings.max_pages)?;
            model.pixels_of(&pages).map_err(|e| ApiError::internal(format!("preprocessing: {e:#}")))
        })
        .zip(&missing)
        .map(|(result, (_, users))| {
            result
                .map_err(|e| {
                    for &i in users {
                        jobs[i].fail(e.clone());
                    }
                })
                .ok()
        })
        .collect();
    let usable: Vec<(&(Key, Vec<usize>), &Tensor)> =
        missing.iter().zip(&pixels).filter_map(|(m, p)| p.as_ref().map(|p| (m, p))).collect();
    let encoded =
        model.visual_tokens_of(&usable.iter().map(|(_, p)| *p).collect::<Vec<_>>(), settings.vision_batch, false);
    let time = start.elapsed();
    match encoded {
        Ok(tokens) => {
            let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (((key, users), pixels), tokens) in usable.iter().zip(tokens) {
                let encoded = Encoded { tokens, pages: pixels.dim(0).unwrap_or(1), time };
                cache.insert(*key, encoded.clone());
                for &i in users {
                    ready[i] = Some(Ready { encoded: encoded.clone(), cached: false });
                }
            }
        }
        Err(e) => {
            for ((_, users), _) in &usable {
                for &i in users {
                    jobs[i].fail(ApiError::internal(format!("vision encoder: {e:#}")));
                }
            }
        }
    }
    ready
}

fn run_batch(model: &Model, variant: usize, jobs: Vec<Job>, settings: &EngineSettings, shared: &Shared) {
    let taken = Instant::now();
    let ready = documents(model, variant, &jobs, settings, shared);
    let max_positions = model.config.decoder.max_position_embeddings;
    let mut live: Vec<(&Job, Ready)> = Vec::with_capacity(jobs.len());
    for (job, ready) in jobs.iter().zip(ready) {
        let Some(ready) = ready else { continue };
        let vision = ready.encoded.tokens.dim(0).unwrap_or(0);
        let text = model.prompt_ids(0, &job.ask.instruction).map(|ids| ids.len()).unwrap_or(0);
        let needed = vision + text + job.ask.params.max_new_tokens;
        if needed > max_positions {
            job.fail(ApiError::unprocessable(format!(
                "the document ({vision} visual tokens), the instruction ({text} tokens) and max tokens ({}) need \
                 {needed} positions; the model has {max_positions}",
                job.ask.params.max_new_tokens
            )));
            continue;
        }
        live.push((job, ready));
    }
    if live.is_empty() {
        return;
    }
    shared.metrics.observe_batch(live.len());
    let requests: Vec<Request> = live
        .iter()
        .map(|(job, ready)| Request {
            document: &ready.encoded,
            instruction: &job.ask.instruction,
            params: job.ask.params.clone(),
        })
        .collect();
    let mut streams: Vec<TextStream> = live.iter().map(|_| TextStream::new()).collect();
    let metrics = &shared.metrics;
    let result = model.answer_streaming(&requests, |i, id| {
        let job = live[i].0;
        if job.cancel.load(Ordering::Relaxed) || shared.stop_all.load(Ordering::Relaxed) {
            return false;
        }
        if streams[i].ids.is_empty() {
            metrics.observe_first_token(job.admitted.elapsed().as_secs_f64());
        }
        match streams[i].push(&model.tokenizer, id) {
            Some(piece) => job.events.send(Event::Token(piece)).is_ok(),
            None => true,
        }
    });
    let answers = match result {
        Ok(answers) => answers,
        Err(e) => {
            tracing::error!("generation failed: {e:#}");
            for (job, _) in &live {
                job.fail(ApiError::internal(format!("generation failed: {e:#}")));
            }
            return;
        }
    };
    for (((job, ready), answer), stream) in live.iter().zip(answers).zip(&mut streams) {
        metrics.tokens_generated.fetch_add(answer.tokens_generated as u64, Ordering::Relaxed);
        metrics.prompt_tokens.fetch_add(answer.prompt_tokens as u64, Ordering::Relaxed);
        if !answer.finished && answer.tokens_generated < job.ask.params.max_new_tokens {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(piece) = stream.rest(&answer.answer) {
            let _ = job.events.send(Event::Token(piece));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let outcome = Outcome {
            tokens_generated: answer.tokens_generated,
            prompt_tokens: answer.prompt_tokens,
            vision_tokens: answer.vision_tokens,
            pages: ready.encoded.pages,
            finished: answer.finished,
            cached: ready.cached,
            inference_time_ms: ms(job.admitted.elapsed()),
            timings: Timings {
                queue_ms: ms(taken.saturating_duration_since(job.admitted)),
                vision_ms: ms(ready.encoded.time),
                prefill_ms: answer.timings.prefill_s * 1e3,
                decode_ms: answer.timings.decode_s * 1e3,
            },
            answer: answer.answer,
        };
        let _ = job.events.send(Event::Done(outcome));
    }
}
