//! `deepsynth serve`: the model behind an HTTP API (axum on tokio). The model runs on its own thread
//! ([`engine`]), which batches concurrent requests; the async side parses, admits, streams and measures.

mod api;
mod cache;
mod engine;
mod error;
mod metrics;
mod routes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sha2::Digest;

use crate::engine::checkpoint;
use crate::engine::config::ModelConfig;

/// The environment variable that can hold the API key (so that it stays out of process listings).
pub const API_KEY_ENV: &str = "DEEPSYNTH_API_KEY";

#[derive(Debug, Clone)]
pub struct Options {
    /// A model directory or a Hub id.
    pub model: String,
    /// `NAME=DIR` adapters, each served as its own model name.
    pub adapters: Vec<(String, PathBuf)>,
    /// The base model's name in `/v1/models` (default: the model directory's name).
    pub model_name: Option<String>,
    pub device: String,
    pub host: IpAddr,
    /// 0 picks a free port (the address is printed).
    pub port: u16,
    pub api_key: Option<String>,
    pub max_batch: usize,
    pub batch_wait: Duration,
    pub max_queue: usize,
    pub vision_batch: usize,
    pub cache_bytes: usize,
    pub max_body_bytes: usize,
    pub max_tokens: usize,
    pub default_tokens: usize,
    pub max_pages: usize,
    pub timeout: Duration,
    pub shutdown_grace: Duration,
    /// Connections open at once (more are closed at once).
    pub max_connections: usize,
    /// Time a connection has to send a whole request head.
    pub header_timeout: Duration,
}

/// Runs the server until SIGINT or SIGTERM. Prints `deepsynth serve: listening on http://ADDR` on stdout once
/// bound (the model may still be loading: `/ready` says when it is done).
pub fn run(options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.max_batch >= 1, "--max-batch must be at least 1");
    anyhow::ensure!(options.max_tokens >= 1, "--max-tokens must be at least 1");
    // Everything that can be refused is refused before the server binds.
    let device = crate::engine::model::device(&options.device)?;
    let dir = checkpoint::resolve(&options.model)?;
    let config = ModelConfig::from_file(&dir.join(checkpoint::CONFIG))?;
    let mut names = vec![options.model_name.clone().unwrap_or_else(|| {
        dir.file_name().map_or_else(|| options.model.clone(), |n| n.to_string_lossy().into_owned())
    })];
    for (name, path) in &options.adapters {
        anyhow::ensure!(!names.contains(name), "--adapter {name}: the name is taken");
        anyhow::ensure!(path.is_dir(), "--adapter {name}={}: not a directory", path.display());
        names.push(name.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(options, device, dir, config, names))
}

async fn serve(
    options: Options,
    device: candle_core::Device,
    dir: PathBuf,
    config: ModelConfig,
    names: Vec<String>,
) -> anyhow::Result<()> {
    let address = SocketAddr::new(options.host, options.port);
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "deepsynth serve: listening on http://{bound}")?;
        stdout.flush()?;
    }
    let shared = Arc::new(engine::Shared {
        cache: Mutex::new(cache::Cache::new(options.cache_bytes)),
        metrics: Arc::default(),
        ready: AtomicBool::new(false),
        stop_all: AtomicBool::new(false),
    });
    let settings = engine::EngineSettings {
        max_batch: options.max_batch,
        batch_wait: options.batch_wait,
        vision_batch: options.vision_batch,
        max_pages: options.max_pages,
    };
    let jobs = engine::start(dir, options.adapters.clone(), device, settings, shared.clone())?;
    let state = Arc::new(routes::AppState {
        shared: shared.clone(),
        jobs: Mutex::new(Some(jobs)),
        variants: api::Variants { names },
        limits: api::Limits {
            max_tokens: options.max_tokens,
            default_tokens: options.default_tokens.min(options.max_tokens),
        },
        config,
        max_pages: options.max_pages,
        max_body: options.max_body_bytes,
        api_key: options.api_key.as_deref().map(|k| sha2::Sha256::digest(k.trim().as_bytes()).into()),
        capacity: (options.max_batch + options.max_queue) as u64,
        timeout: options.timeout,
        shutting_down: AtomicBool::new(false),
        openapi: routes::openapi(options.api_key.is_some(), options.max_tokens),
        started: routes::unix_now(),
    });
    let app = routes::router(state.clone());
    let connections = Connections { max: options.max_connections, header_timeout: options.header_timeout };
    let open = accept_until_signal(listener, app, connections).await;
    // Stopped accepting; the connections still open finish what they are doing. After the grace period, every
    // generation stops (its request ends with what it has), and the connections get a moment to send that.
    tracing::info!("shutting down: finishing requests in progress");
    state.shutting_down.store(true, Ordering::SeqCst);
    let deadline = async {
        tokio::time::sleep(options.shutdown_grace).await;
        tracing::warn!("grace period over: cancelling what is still generating");
        shared.stop_all.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        _ = open.shutdown() => {}
        _ = deadline => {}
    }
    // Closing the queue ends the engine thread.
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    eprintln!("deepsynth serve: stopped");
    Ok(())
}

/// Limits on the connections themselves (before any request is read).
#[derive(Debug, Clone, Copy)]
struct Connections {
    /// Connections open at once; more are closed as soon as they are accepted.
    max: usize,
    /// A connection that has not sent a whole request head within this is closed (slow-header clients).
    header_timeout: Duration,
}

/// Serves HTTP/1.1 connections until SIGINT or SIGTERM; returns the open connections' watcher, whose
/// `shutdown` lets each finish its request in progress, then closes it.
async fn accept_until_signal(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Connections,
) -> hyper_util::server::graceful::GracefulShutdown {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut signal => return graceful,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("{} connections open (--max-connections): closing a new one", limits.max);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
