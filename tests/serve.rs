//! `deepsynth serve` as clients use it: a real server on an ephemeral loopback port, over real HTTP. Every route,
//! every error path, streaming, caching, batching, limits, the API key, cancellation, timeouts and shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ok, Server};
use serde_json::{json, Value};

const DOC: &str = "Name: Alice Smith\nCity: Paris\nColour: green\nYear: 1987\nCode: QX-4471";

fn model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    ok(["init", "--preset", "tiny", "--output", model.to_str().unwrap(), "--seed", "1"]);
    model
}

/// A response: status, the headers asked for, body.
struct Reply {
    status: u16,
    body: String,
    retry_after: Option<String>,
    content_type: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts an error reply: the status, and the JSON error shape whose message holds `words`.
    fn error(&self, status: u16, words: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.content_type.starts_with("application/json"), "{}", self.content_type);
        let body = self.json();
        let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {body}"));
        assert!(body["error"]["type"].is_string(), "{body}");
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    Reply {
        status: response.status(),
        retry_after: response.header("retry-after").map(str::to_string),
        content_type: response.content_type().to_string(),
        body: response.into_string().unwrap(),
    }
}

fn get(server: &Server, path: &str) -> Reply {
    reply(ureq::get(&format!("{}{path}", server.url)).call())
}

fn post(server: &Server, path: &str, body: &Value) -> Reply {
    post_raw(server, path, &body.to_string(), None)
}

fn post_raw(server: &Server, path: &str, body: &str, key: Option<&str>) -> Reply {
    let mut request = ureq::post(&format!("{}{path}", server.url)).set("content-type", "application/json");
    if let Some(key) = key {
        request = request.set("authorization", &format!("Bearer {key}"));
    }
    reply(request.send_string(body))
}

fn instruct(server: &Server, document: &str, instruction: &str, tokens: usize) -> Value {
    let r = post(
        server,
        "/api/inference/instruct",
        &json!({"document": document, "instruction": instruction, "max_length": tokens}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The `data:` payloads of an SSE body, with the event name before each (None when unnamed).
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            }
        }
        if !data.is_empty() {
            events.push((name, data.join("\n")));
        }
    }
    events
}

fn metric(server: &Server, line_start: &str) -> f64 {
    let text = get(server, "/metrics").body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

fn png_base64() -> String {
    let image = image::RgbImage::from_fn(300, 200, |x, y| {
        if (x / 20 + y / 20) % 2 == 0 {
            [0, 0, 0].into()
        } else {
            [255, 255, 255].into()
        }
    });
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn every_route_answers_and_streams_agree_with_plain_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    // An adapter (random LoRA factors on q_proj) served beside the base model.
    let adapter = dir.path().join("adapter");
    common::random_q_proj_adapter(&model, &adapter);
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        &format!("legal={}", adapter.display()),
        "--model-name",
        "tiny-base",
    ]);

    assert_eq!(get(&server, "/health").json()["status"], "ok");
    assert_eq!(get(&server, "/ready").json()["status"], "ready");
    let page = get(&server, "/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html") && page.body.contains("<html"), "{}", page.content_type);

    // The OpenAPI document names every route the server has.
    let spec = get(&server, "/openapi.json").json();
    for path in [
        "/",
        "/health",
        "/ready",
        "/api/inference/instruct",
        "/api/render",
        "/api/cache/stats",
        "/api/cache/clear",
        "/v1/models",
        "/v1/chat/completions",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing from /openapi.json");
    }

    let models = get(&server, "/v1/models").json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny-base", "legal"]);

    // First question: the vision encoder runs; the follow-up about the same page comes from the cache.
    let first = instruct(&server, DOC, "What is the city?", 12);
    for key in ["answer", "tokens_generated", "prompt_tokens", "vision_tokens", "inference_time_ms", "cached"] {
        assert!(first.get(key).is_some(), "{key} missing from {first}");
    }
    assert_eq!(first["cached"], false);
    assert_eq!(first["tokens_generated"], 12);
    assert!(first["timings"]["vision_ms"].as_f64().unwrap() > 0.0);
    let again = instruct(&server, DOC, "What is the city?", 12);
    assert_eq!(again["cached"], true);
    assert_eq!(again["timings"]["vision_ms"], 0.0);
    assert_eq!(again["answer"], first["answer"], "greedy answers differ between cached and fresh tokens");
    let stats = get(&server, "/api/cache/stats").json();
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64(), stats["entries"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert!(stats["bytes"].as_u64().unwrap() > 0);

    // Streaming: the token events add up to the answer, which equals the plain one.
    let streamed = post(
        &server,
        "/api/inference/instruct",
        &json!({"document": DOC, "instruction": "What is the city?", "max_length": 12, "stream": true}),
    );
    assert!(streamed.content_type.starts_with("text/event-stream"), "{}", streamed.content_type);
    let events = sse_events(&streamed.body);
    let (done_name, done) = events.last().unwrap();
    assert_eq!(done_name.as_deref(), Some("done"));
    let done: Value = serde_json::from_str(done).unwrap();
    let pieces: String = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("token"))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(done["answer"], first["answer"]);
    assert_eq!(pieces, first["answer"].as_str().unwrap());

    // The adapter changes the answer; an unknown one is refused.
    let adapted = post(
        &server,
        "/api/inference/instruct",
        &json!({"document": DOC, "instruction": "What is the city?", "max_length": 12, "adapter": "legal"}),
    );
    assert_eq!(adapted.status, 200, "{}", adapted.body);
    assert_ne!(adapted.json()["answer"], first["answer"]);
    post(&server, "/api/inference/instruct", &json!({"document": DOC, "instruction": "q", "adapter": "nope"}))
        .error(404, "unknown adapter");

    // A page image, as base64.
    let image = post(
        &server,
        "/api/inference/instruct",
        &json!({"image": png_base64(), "instruction": "Free OCR.", "max_length": 4}),
    );
    assert_eq!(image.status, 200, "{}", image.body);
    assert_eq!(image.json()["vision_tokens"], first["vision_tokens"]);

    // The pages the model sees.
    let render = post(&server, "/api/render", &json!({"document": DOC})).json();
    let url = render["pages"][0].as_str().unwrap();
    let png = base64::engine::general_purpose::STANDARD.decode(url.strip_prefix("data:image/png;base64,").unwrap());
    let page = image::load_from_memory(&png.unwrap()).unwrap();
    assert_eq!(page.width(), page.height());
    assert_eq!(render["vision_tokens"], first["vision_tokens"]);

    // OpenAI chat: the document in the system message, then as an image data URL; streaming agrees.
    let chat = json!({"model": "tiny-base", "max_tokens": 12, "messages": [
        {"role": "system", "content": DOC}, {"role": "user", "content": "What is the city?"}]});
    let completion = post(&server, "/v1/chat/completions", &chat).json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "tiny-base");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(completion["choices"][0]["message"]["content"], first["answer"]);
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 12);
    assert_eq!(completion["usage"]["prompt_tokens"], first["prompt_tokens"]);
    let mut streaming = chat.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let body = post(&server, "/v1/chat/completions", &streaming).body;
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(content, first["answer"].as_str().unwrap());
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 12);
    let with_image = json!({"model": "legal", "max_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", png_base64())}},
        {"type": "text", "text": "Free OCR."}]}]});
    let completion = post(&server, "/v1/chat/completions", &with_image);
    assert_eq!(completion.status, 200, "{}", completion.body);
    post(&server, "/v1/chat/completions", &json!({"model": "gpt-4o", "messages": chat["messages"]}))
        .error(404, "unknown model");

    // Cache clearing: the next question runs the vision encoder again.
    assert!(post(&server, "/api/cache/clear", &json!({})).json()["cleared"].as_u64().unwrap() >= 2);
    assert_eq!(get(&server, "/api/cache/stats").json()["entries"], 0);
    assert_eq!(instruct(&server, DOC, "What is the city?", 2)["cached"], false);

    // Prometheus metrics count what happened above.
    let text = get(&server, "/metrics").body;
    for needle in [
        "deepsynth_requests_total{route=\"/api/inference/instruct\",method=\"POST\",status=\"200\"}",
        "deepsynth_requests_total{route=\"/api/inference/instruct\",method=\"POST\",status=\"404\"} 1",
        "deepsynth_request_duration_seconds_bucket{route=\"/v1/chat/completions\"",
        "deepsynth_time_to_first_token_seconds_count",
        "deepsynth_batch_size_bucket",
        "# TYPE deepsynth_queue_depth gauge",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
    }
    assert!(metric(&server, "deepsynth_cache_hits_total") >= 1.0);
    assert!(metric(&server, "deepsynth_generated_tokens_total") >= 12.0 * 6.0);
}

#[test]
fn bad_requests_get_json_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--max-body-mb",
        "1",
        "--max-tokens",
        "64",
        "--max-pages",
        "1",
    ]);
    let route = "/api/inference/instruct";
    post_raw(&server, route, "{\"document\": ", None).error(400, "not valid JSON");
    post_raw(&server, route, "not json at all", None).error(400, "not valid JSON");
    post(&server, route, &json!({"document": DOC})).error(422, "missing field `instruction`");
    post(&server, route, &json!({"instruction": "q"})).error(422, "missing the document");
    post(&server, route, &json!({"document": DOC, "instruction": "q", "max_len": 3})).error(422, "unknown field");
    post(&server, route, &json!({"document": DOC, "instruction": 5})).error(422, "invalid type");
    post(&server, route, &json!({"document": DOC, "instruction": ""})).error(422, "instruction is empty");
    post(&server, route, &json!({"image": "%%%not base64%%%", "instruction": "q"})).error(422, "not valid base64");
    post(&server, route, &json!({"image": "aGVsbG8gd29ybGQ=", "instruction": "q"})).error(422, "not a PNG or JPEG");
    let truncated = &png_base64()[..200];
    post(&server, route, &json!({"image": truncated, "instruction": "q"})).error(422, "image");
    post(&server, route, &json!({"document": DOC, "instruction": "q", "max_length": 65}))
        .error(422, "between 1 and 64");
    post(&server, route, &json!({"document": DOC, "instruction": "q", "max_length": 0})).error(422, "between 1 and 64");
    post(&server, route, &json!({"document": DOC, "instruction": "q", "temperature": -0.5})).error(422, "temperature");
    post(&server, route, &json!({"document": DOC, "instruction": "q", "top_p": 1.5})).error(422, "top_p");
    let long = "A line of text that fills the page.\n".repeat(400);
    post(&server, route, &json!({"document": long, "instruction": "q", "max_length": 2})).error(422, "at most 1");
    post(&server, "/api/render", &json!({"document": long})).error(422, "at most 1");
    // A body over --max-body-mb is refused from its announced length, before it is sent (a client writing it
    // all first may see the connection close under it: the server does not read what it refuses).
    for path in [route, "/v1/chat/completions", "/api/render"] {
        let address = server.url.strip_prefix("http://").unwrap();
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\n\
            Content-Length: {}\r\n\r\n{{\"document\": \"",
            2 << 20
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 413"), "{path}: {response}");
        let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("at most 1048576"), "{body}");
    }
    // A chunked body (no length announced) is cut at the limit too.
    let chunked = ureq::post(&format!("{}{route}", server.url))
        .send(std::io::Cursor::new(vec![b' '; 1 << 20]).chain(std::io::repeat(b' ').take(1 << 20)));
    match chunked {
        Err(ureq::Error::Status(413, _)) => {}
        Err(ureq::Error::Transport(_)) => {} // refused while still sending: the connection closed under it
        other => panic!("a 2 MiB chunked body was not refused: {:?}", other.map(|r| r.status())),
    }
    post(&server, "/v1/chat/completions", &json!({"messages": [{"role": "robot", "content": "hi"}]}))
        .error(422, "unknown variant");
    post(&server, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}]}))
        .error(422, "no document");
    post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/page.png"}}, {"type": "text", "text": "q"}]}]}),
    )
    .error(422, "data URLs");
    get(&server, "/no/such/route").error(404, "no such route");
    reply(ureq::delete(&format!("{}/api/inference/instruct", server.url)).call()).error(405, "method not allowed");
    reply(ureq::get(&format!("{}/api/inference/instruct", server.url)).call()).error(405, "method not allowed");
    // Still answering after all that.
    assert_eq!(instruct(&server, DOC, "What is the city?", 2)["tokens_generated"], 2);
    assert!(
        metric(&server, "deepsynth_requests_total{route=\"/api/inference/instruct\",method=\"POST\",status=\"422\"}")
            >= 9.0
    );
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    // From the environment, as a deployment would pass it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deepsynth"));
    child.env("DEEPSYNTH_API_KEY", "s3cret-key");
    let server = Server::start_command(child, &["--model", model.to_str().unwrap()]);
    assert_eq!(get(&server, "/health").status, 200);
    assert_eq!(get(&server, "/ready").status, 200);
    for path in ["/v1/models", "/metrics", "/api/cache/stats", "/openapi.json"] {
        get(&server, path).error(401, "API key");
        let wrong = reply(ureq::get(&format!("{}{path}", server.url)).set("authorization", "Bearer s3cret-kez").call());
        wrong.error(401, "wrong API key");
        let right = reply(ureq::get(&format!("{}{path}", server.url)).set("authorization", "Bearer s3cret-key").call());
        assert_eq!(right.status, 200, "{path}: {}", right.body);
    }
    let body = json!({"document": DOC, "instruction": "q", "max_length": 2}).to_string();
    post_raw(&server, "/api/inference/instruct", &body, None).error(401, "API key");
    post_raw(&server, "/api/inference/instruct", &body, Some("s3cret")).error(401, "wrong API key");
    assert_eq!(post_raw(&server, "/api/inference/instruct", &body, Some("s3cret-key")).status, 200);
    let x_api_key = ureq::get(&format!("{}/v1/models", server.url)).set("x-api-key", "s3cret-key").call();
    assert_eq!(reply(x_api_key).status, 200);
}

/// Sends `count` requests at once, each on its own thread; returns the replies in order.
fn concurrently(server: &Server, bodies: Vec<Value>) -> Vec<Reply> {
    let url = format!("{}/api/inference/instruct", server.url);
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let url = url.clone();
            std::thread::spawn(move || reply(ureq::post(&url).send_string(&body.to_string())))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_requests_are_batched_with_the_same_answers_and_overload_gets_429() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let questions = [
        "What is the city?",
        "Name?",
        "Which colour is listed on the card?",
        "Year?",
        "Code?",
        "Who is named on this card, in full?",
    ];
    let documents = [DOC, "Name: Bob Lee\nCity: Oslo", DOC, "Code: ZZ-1\nYear: 2001", DOC, "Name: Bob Lee\nCity: Oslo"];
    let bodies: Vec<Value> = questions
        .iter()
        .zip(documents)
        .map(|(q, d)| json!({"document": d, "instruction": q, "max_length": 10}))
        .collect();
    // One at a time first: the reference answers.
    let alone: Vec<Value> = {
        let server = Server::start(&["--model", model.to_str().unwrap(), "--max-batch", "1"]);
        bodies.iter().map(|b| post(&server, "/api/inference/instruct", b).json()).collect()
    };
    // All at once, with a wait long enough for them to join one batch.
    let server = Server::start(&["--model", model.to_str().unwrap(), "--max-batch", "8", "--batch-wait-ms", "500"]);
    let together = concurrently(&server, bodies.clone());
    for ((reply, alone), body) in together.iter().zip(&alone).zip(&bodies) {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["answer"], alone["answer"], "batched answer differs for {body}");
    }
    let batches = metric(&server, "deepsynth_batch_size_count");
    let requests = metric(&server, "deepsynth_batch_size_sum");
    assert_eq!(requests, 6.0);
    assert!(batches < 6.0, "{requests} requests in {batches} batches: nothing was batched");

    // Room for 1 in a batch + 1 waiting: of 8 long requests sent at once, the extra ones get 429 + Retry-After.
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-tokens",
        "3000",
    ]);
    let long = json!({"document": DOC, "instruction": "q", "max_length": 1500});
    let replies = concurrently(&server, vec![long; 8]);
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(refused.len() >= 6, "statuses: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &refused {
        r.error(429, "full");
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
    assert!(replies.iter().filter(|r| r.status == 200).count() >= 1);
    // Once they are done, the server admits again.
    assert_eq!(instruct(&server, DOC, "q", 2)["tokens_generated"], 2);
}

/// Sends a raw HTTP request and returns the stream (to read part of the answer, or to hang up).
fn raw(server: &Server, path: &str, body: &Value) -> TcpStream {
    let address = server.url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn disconnects_cancel_timeouts_answer_504_and_sigterm_finishes_requests_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = Server::start(&["--model", model.to_str().unwrap(), "--max-tokens", "3500", "--timeout-secs", "2"]);
    let long = |stream: bool| json!({"document": DOC, "instruction": "q", "max_length": 3400, "stream": stream});

    // A streaming client that reads its first token and hangs up: the generation stops.
    let stream = raw(&server, "/api/inference/instruct", &long(true));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("event: token") && !line.starts_with("data: {\"text\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended early");
    }
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop((stream, reader));
    wait_for("the hung-up stream to be cancelled", || metric(&server, "deepsynth_cancelled_total") >= 1.0);
    // A plain client that hangs up before the answer: cancelled too.
    let stream = raw(&server, "/api/inference/instruct", &long(false));
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    wait_for("the hung-up request to be cancelled", || metric(&server, "deepsynth_cancelled_total") >= 2.0);
    wait_for("nothing in flight", || metric(&server, "deepsynth_in_flight") == 0.0);

    // Longer than --timeout-secs: 504, and its generation is stopped.
    post(&server, "/api/inference/instruct", &long(false)).error(504, "no answer within 2 s");
    wait_for("the timed-out request to be cancelled", || metric(&server, "deepsynth_cancelled_total") >= 3.0);
    drop(server);

    // SIGTERM while a request is generating: the request still gets its answer, then the process exits 0.
    let mut server = Server::start(&["--model", model.to_str().unwrap(), "--shutdown-grace-secs", "60"]);
    let mut stream = raw(
        &server,
        "/api/inference/instruct",
        &json!({"document": DOC, "instruction": "q",
        "max_length": 600}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"tokens_generated\":600"), "{response}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Whether the server closed `stream` (EOF or reset) within `wait`, rather than keeping it open.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

#[test]
fn slow_headers_and_connections_beyond_the_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let server = Server::start(&["--model", model.to_str().unwrap(), "--header-timeout-secs", "1"]);
    let address = server.url.strip_prefix("http://").unwrap().to_string();
    // Half a request head, then nothing: the server hangs up after --header-timeout-secs.
    let mut slow = TcpStream::connect(&address).unwrap();
    write!(slow, "GET /health HTTP/1.1\r\nHost: {address}\r\n").unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(20)), "a slow-header client kept its connection");
    assert_eq!(get(&server, "/health").status, 200);
    drop(server);

    // At most --max-connections open: the ones beyond are closed at once; freeing one lets a new one in.
    let server = Server::start(&["--model", model.to_str().unwrap(), "--max-connections", "2"]);
    let address = server.url.strip_prefix("http://").unwrap().to_string();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut refused = 0;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&address).unwrap();
        if closed_within(&mut stream, Duration::from_millis(700)) {
            refused += 1;
        } else {
            held.push(stream);
        }
    }
    assert!(held.len() <= 2 && refused >= 1, "{} held, {refused} refused", held.len());
    held.clear();
    wait_for("a free connection slot", || {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(stream, "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn bad_command_lines_are_refused_before_the_server_binds() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let model = model.to_str().unwrap();
    for (args, words) in [
        (vec!["--model", model, "--device", "gpu"], "--device gpu"),
        (vec!["--model", "/no/such/model"], "/no/such/model"),
        (vec!["--model", model, "--adapter", "x=/no/such/adapter"], "not a directory"),
    ] {
        let out = common::deepsynth(["serve", "--port", "0"].iter().chain(&args));
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} bound before refusing: {}", String::from_utf8_lossy(&out.stdout));
    }
}
