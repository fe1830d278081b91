//! The HTTP routes: JSON API, OpenAI-compatible chat, cache, health, metrics, OpenAPI and the web page.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api::{document_of, Ask, ChatRequest, InstructRequest, Limits, Variants};
use super::engine::{Event, Job, Outcome, Shared};
use super::error::ApiError;
use crate::engine::config::ModelConfig;

const PAGE: &str = include_str!("page/index.html");
const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI document as this server runs: its token limit, and no security requirement without an API key.
pub fn openapi(api_key: bool, max_tokens: usize) -> String {
    let mut spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON");
    let schemas = &mut spec["components"]["schemas"];
    schemas["InstructRequest"]["properties"]["max_length"]["maximum"] = json!(max_tokens);
    for field in ["max_tokens", "max_completion_tokens"] {
        schemas["ChatRequest"]["properties"][field]["maximum"] = json!(max_tokens);
    }
    if !api_key {
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("security");
        }
    }
    spec.to_string()
}

/// Everything the handlers share.
pub struct AppState {
    pub shared: Arc<Shared>,
    pub jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    pub variants: Variants,
    pub limits: Limits,
    pub config: ModelConfig,
    pub max_pages: usize,
    pub max_body: usize,
    /// SHA-256 of the API key, when one is required.
    pub api_key: Option<[u8; 32]>,
    /// How many requests may be admitted and not answered yet (batch + queue; the count is the in-flight
    /// metric): beyond, 429.
    pub capacity: u64,
    pub timeout: Duration,
    pub shutting_down: AtomicBool,
    pub started: u64,
    /// The OpenAPI document served (see [`openapi`]).
    pub openapi: String,
}

type AppRef = Arc<AppState>;

pub fn router(state: AppRef) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/api/inference/instruct", post(instruct))
        .route("/api/render", post(render))
        .route("/api/cache/stats", get(cache_stats))
        .route("/api/cache/clear", post(cache_clear))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|State(state): State<AppRef>| async move {
                ([(header::CONTENT_TYPE, "application/json")], state.openapi.clone())
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), announced_length))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every response by route and status, with its duration.
async fn observe(State(state): State<AppRef>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    state.shared.metrics.observe_request(&route, &method, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

/// A body announced larger than the limit is refused before it is read (otherwise the server would wait for
/// bytes it will not take), and the connection closed.
async fn announced_length(State(state): State<AppRef>, request: Request, next: Next) -> Response {
    let announced =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(length) if length > state.max_body as u64 => {
            let mut response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the body is {length} bytes; this server takes at most {} (--max-body-mb)", state.max_body),
            )
            .into_response();
            response.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            response
        }
        _ => next.run(request).await,
    }
}

/// Routes that need no API key: liveness and readiness probes, and the page (static; its calls carry the key).
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/")
}

/// The API key, from `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time (as digests).
async fn authorize(State(state): State<AppRef>, request: Request, next: Next) -> Response {
    let Some(expected) = state.api_key else { return next.run(request).await };
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(given) = given else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this server needs an API key: `Authorization: Bearer KEY`",
        )
        .into_response();
    };
    let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    let differs = digest.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "wrong API key").into_response();
    }
    next.run(request).await
}

async fn ready(State(state): State<AppRef>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.shutting_down.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("shutting down"));
    }
    if !state.shared.ready.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("the model is loading"));
    }
    Ok(Json(json!({ "status": "ready", "model": state.variants.names[0] })))
}

/// A JSON body: the size limit (413) first, then syntax (400) and shape (422).
fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_request_error" };
        ApiError::new(status, kind, format!("cannot read the body: {}", r.body_text()))
    })?;
    serde_json::from_slice(&body).map_err(ApiError::from_json)
}

/// A request admitted to the engine; dropping it cancels the generation and frees its place.
struct Submission {
    events: UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
    state: AppRef,
    deadline: tokio::time::Instant,
}

impl Drop for Submission {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.state.shared.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Submission {
    /// The next event, or a timeout (504) once the request's time is up.
    async fn next(&mut self) -> Result<Event, ApiError> {
        match tokio::time::timeout_at(self.deadline, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(ApiError::internal("the engine dropped the request")),
            Err(_) => Err(ApiError::timeout(format!(
                "no answer within {} s (--timeout-secs)",
                self.state.timeout.as_secs_f64()
            ))),
        }
    }

    /// Waits for the outcome, skipping the streamed pieces.
    async fn outcome(mut self) -> Result<Outcome, ApiError> {
        loop {
            match self.next().await? {
                Event::Token(_) => {}
                Event::Done(outcome) => return Ok(outcome),
                Event::Failed(e) => return Err(e),
            }
        }
    }
}

/// Admits `ask` (503 before the model is ready or while shutting down, 429 when full) and queues it.
fn submit(state: &AppRef, ask: Ask) -> Result<Submission, ApiError> {
    if state.shutting_down.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("shutting down"));
    }
    if !state.shared.ready.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("the model is loading; retry when /ready says so"));
    }
    let metrics = &state.shared.metrics;
    if metrics.in_flight.fetch_add(1, Ordering::Relaxed) >= state.capacity {
        metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::overloaded(format!(
            "the server is full ({} requests in progress or queued); retry later",
            state.capacity
        )));
    }
    let (events_tx, events) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let submission = Submission {
        events,
        cancel: cancel.clone(),
        state: state.clone(),
        deadline: tokio::time::Instant::now() + state.timeout,
    };
    let job = Job { ask, events: events_tx, cancel, admitted: Instant::now() };
    let sender = state.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    if sender.is_none_or(|s| s.send(job).is_err()) {
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("the engine has stopped"));
    }
    Ok(submission)
}

/// Runs `work` off the async threads (image decoding and page rendering are CPU work).
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(format!("request task: {e}")))?
}

/// An SSE response fed by a task that turns engine events into SSE events (`render` returns the events for one
/// engine event, and whether it was the last). The first event decides the status: a failure before any token is
/// a plain JSON error. The task stops, cancelling the generation, when the client goes.
async fn sse_response<F>(mut submission: Submission, mut render: F) -> Result<Response, ApiError>
where
    F: FnMut(Result<Event, ApiError>) -> (Vec<SseEvent>, bool) + Send + 'static,
{
    let first = match submission.next().await? {
        Event::Failed(e) => return Err(e),
        event => event,
    };
    let (tx, rx) = unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let mut event = Ok(first);
        loop {
            let (out, last) = render(event);
            for e in out {
                if tx.send(e).is_err() {
                    return; // the client went away: dropping the submission cancels the generation
                }
            }
            if last {
                return;
            }
            event = tokio::select! {
                e = submission.next() => e,
                _ = tx.closed() => return,
            };
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn json_event(name: Option<&str>, value: &impl serde::Serialize) -> SseEvent {
    let event = SseEvent::default().data(serde_json::to_string(value).unwrap_or_default());
    match name {
        Some(name) => event.event(name),
        None => event,
    }
}

async fn instruct(State(state): State<AppRef>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: InstructRequest = parse(body)?;
    let stream = request.stream;
    let app = state.clone();
    let ask = blocking(move || request.into_ask(&app.variants, &app.limits)).await?;
    let submission = submit(&state, ask)?;
    if !stream {
        return Ok(Json(submission.outcome().await?).into_response());
    }
    sse_response(submission, |event| match event {
        Ok(Event::Token(text)) => (vec![json_event(Some("token"), &json!({ "text": text }))], false),
        Ok(Event::Done(outcome)) => (vec![json_event(Some("done"), &outcome)], true),
        Ok(Event::Failed(e)) | Err(e) => (vec![json_event(Some("error"), &e.body())], true),
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    document: Option<String>,
    image: Option<String>,
}

/// The pages exactly as the model sees them, as PNG data URLs.
async fn render(
    State(state): State<AppRef>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RenderRequest = parse(body)?;
    blocking(move || {
        let document = document_of(request.document, request.image.as_deref())?;
        let pages = super::api::pages(&state.config, &document.document, state.max_pages)?;
        let urls = pages
            .iter()
            .map(|page| {
                let mut png = Vec::new();
                page.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .map_err(|e| ApiError::internal(format!("PNG encoding: {e}")))?;
                Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Json(json!({ "pages": urls, "vision_tokens": pages.len() * state.config.tokens_per_page() })))
    })
    .await
}

async fn cache_stats(State(state): State<AppRef>) -> Json<super::cache::Stats> {
    Json(state.shared.cache.lock().unwrap_or_else(|e| e.into_inner()).stats())
}

async fn cache_clear(State(state): State<AppRef>) -> Json<serde_json::Value> {
    let cleared = state.shared.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    Json(json!({ "cleared": cleared }))
}

async fn models(State(state): State<AppRef>) -> Json<serde_json::Value> {
    let data: Vec<_> = state
        .variants
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({ "id": name, "object": "model", "created": state.started, "owned_by": "deepsynth",
                    "adapter": i > 0 })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn metrics(State(state): State<AppRef>) -> impl IntoResponse {
    let stats = state.shared.cache.lock().unwrap_or_else(|e| e.into_inner()).stats();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.shared.metrics.render(&stats))
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn finish_reason(outcome: &Outcome) -> &'static str {
    if outcome.finished {
        "stop"
    } else {
        "length"
    }
}

fn usage(outcome: &Outcome) -> serde_json::Value {
    json!({ "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.tokens_generated,
            "total_tokens": outcome.prompt_tokens + outcome.tokens_generated })
}

async fn chat(State(state): State<AppRef>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(body)?;
    let stream = request.stream;
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let app = state.clone();
    let ask = blocking(move || request.into_ask(&app.variants, &app.limits)).await?;
    let model = state.variants.names[ask.variant].clone();
    let id = format!("chatcmpl-{:x}{:x}", unix_now(), rand::random::<u64>());
    let created = unix_now();
    let submission = submit(&state, ask)?;
    if !stream {
        let outcome = submission.outcome().await?;
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": outcome.answer },
                          "finish_reason": finish_reason(&outcome), "logprobs": null }],
            "usage": usage(&outcome),
            "deepsynth": { "cached": outcome.cached, "vision_tokens": outcome.vision_tokens,
                           "inference_time_ms": outcome.inference_time_ms, "timings": outcome.timings },
        }))
        .into_response());
    }
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }] })
    };
    let mut started = false;
    sse_response(submission, move |event| {
        let mut out = Vec::new();
        if !started {
            started = true;
            out.push(json_event(None, &chunk(json!({ "role": "assistant", "content": "" }), None)));
        }
        let last = match event {
            Ok(Event::Token(text)) => {
                out.push(json_event(None, &chunk(json!({ "content": text }), None)));
                false
            }
            Ok(Event::Done(outcome)) => {
                out.push(json_event(None, &chunk(json!({}), Some(finish_reason(&outcome)))));
                if include_usage {
                    let mut last = chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage(&outcome);
                    out.push(json_event(None, &last));
                }
                out.push(SseEvent::default().data("[DONE]"));
                true
            }
            Ok(Event::Failed(e)) | Err(e) => {
                out.push(json_event(None, &e.body()));
                true
            }
        };
        (out, last)
    })
    .await
}
