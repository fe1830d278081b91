//! The page `deepsynth serve` serves at `/`, used as a person uses it: headless Chromium driven through chromedriver
//! (WebDriver over HTTP) fills the form, submits, and the test reads the answer, timings and pages off the page.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The JSON key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const DOCUMENT: &str = "Invoice 2291. Customer: Zoë Ramírez. Total due: 1,250 EUR by 30 June.";
const INSTRUCTION: &str = "Who is the customer?";

/// Whether Chromium and chromedriver are installed; a missing one fails the test unless DEEPSYNTH_SKIP_BROWSER=1.
fn browser_installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("DEEPSYNTH_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: {missing:?} not installed and DEEPSYNTH_SKIP_BROWSER=1");
        return false;
    }
    panic!(
        "{missing:?} not installed: .ci/run installs them (apt-get install chromium chromium-driver); \
         set DEEPSYNTH_SKIP_BROWSER=1 to skip this test"
    );
}

/// A chromedriver process and its one headless Chromium session, both ended when dropped (also on a panic).
struct Browser {
    driver: Child,
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT`, chromedriver's address.
    base: String,
    /// `/session/ID` once the session exists.
    session: Option<String>,
    /// Chromium's profile: a fresh one per run, removed after the browser has quit.
    profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        // A free port for chromedriver: bind port 0, read the port the OS chose, release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, agent, base, session: None, profile: tempfile::tempdir().unwrap() };
        browser.wait_until_driver_ready();

        // Without the background-networking flags Chromium keeps calling Google's services over a closed network.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser.request("POST", "/session", Some(capabilities));
        let id = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {created}"));
        browser.session = Some(format!("/session/{id}"));
        browser
    }

    fn wait_until_driver_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("chromedriver exited at start: {status}");
            }
            let ready = self.agent.get(&format!("{}/status", self.base)).call().ok();
            if ready.and_then(|r| r.into_json::<Value>().ok()).is_some_and(|v| v["value"]["ready"] == true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver was not ready after 30 s");
    }

    /// One WebDriver command; returns its `value`, and panics with the driver's error message on a failure.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match response {
            Ok(r) => r.into_json::<Value>().expect("WebDriver's JSON reply")["value"].take(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("WebDriver {method} {path}: HTTP {code}: {}", r.into_string().unwrap_or_default())
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// A command on the session (`path` after `/session/ID`).
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.request(method, &format!("{}{path}", self.session.as_ref().unwrap()), body)
    }

    fn go(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    fn element(&self, css: &str) -> String {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.command("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    fn clear(&self, css: &str) {
        let element = self.element(css);
        self.command("POST", &format!("/element/{element}/clear"), Some(json!({})));
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.command("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    /// Runs `script` in the page (its `arguments` are `args`) and returns what it returns.
    fn script(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    fn text(&self, id: &str) -> String {
        let text = self.script("return document.getElementById(arguments[0]).textContent", json!([id]));
        text.as_str().unwrap_or_else(|| panic!("no element #{id}")).to_string()
    }

    /// Polls `#status` until the request has ended; returns `done` or `error`.
    fn wait_for_result(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.text("status");
            if status == "done" || status == "error" {
                return status;
            }
            assert!(Instant::now() < deadline, "status still {status:?} after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine;
        let png = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64 screenshot")).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Quits Chromium; a failure here must not hide the panic that may be unwinding.
            let _ = self.agent.delete(&format!("{}{session}", self.base)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A tiny model served by `deepsynth serve`, and a browser showing its page; None when the test is skipped.
fn open_page() -> Option<(tempfile::TempDir, common::Server, Browser)> {
    if !browser_installed() {
        return None;
    }
    let model = tempfile::tempdir().unwrap();
    let dir = model.path().to_str().unwrap();
    common::ok(["init", "--preset", "tiny", "--output", dir, "--seed", "1"]);
    let server = common::Server::start(&["--model", dir]);
    let browser = Browser::start();
    browser.go(&format!("{}/", server.url));
    Some((model, server, browser))
}

/// A direct API call: the reply's status and JSON body.
fn post(server: &common::Server, path: &str, body: Value) -> (u16, Value) {
    let response = match ureq::post(&format!("{}{path}", server.url)).send_json(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    (response.status(), response.into_json().expect("a JSON reply"))
}

#[test]
fn the_page_streams_the_same_answer_as_the_api_with_timings_and_pages() {
    let Some((_model, server, browser)) = open_page() else { return };
    browser.type_into("#document", DOCUMENT);
    browser.type_into("#instruction", INSTRUCTION);
    // Max tokens sits in the collapsed advanced settings: open them first, as a person would.
    browser.click("#advanced > summary");
    browser.clear("#max-tokens");
    browser.type_into("#max-tokens", "8");
    browser.click("#submit");
    let status = browser.wait_for_result();
    assert_eq!(status, "done", "the page shows an error: {}", browser.text("error"));

    let (code, direct) = post(
        &server,
        "/api/inference/instruct",
        json!({"document": DOCUMENT, "instruction": INSTRUCTION, "max_length": 8, "temperature": 0.0}),
    );
    assert_eq!(code, 200, "{direct}");
    let want = direct["answer"].as_str().expect("an answer");
    // An empty answer would make the comparison below prove nothing.
    assert!(!want.is_empty(), "the tiny model answered nothing: {direct}");
    assert_eq!(browser.text("answer"), want);
    assert!(!browser.text("timings").trim().is_empty(), "no timings shown");
    assert_eq!(browser.text("error"), "");

    let widths =
        browser.script("return [...document.querySelectorAll('#pages img')].map(i => i.naturalWidth)", json!([]));
    let widths: Vec<u64> = widths.as_array().unwrap().iter().map(|w| w.as_u64().unwrap()).collect();
    assert!(!widths.is_empty() && widths.iter().all(|&w| w > 0), "rendered pages' widths: {widths:?}");

    // To look at the layout: DEEPSYNTH_SCREENSHOT=page.png cargo test --test serve_browser
    if let Some(path) = std::env::var_os("DEEPSYNTH_SCREENSHOT") {
        browser.script("window.scrollTo(0, 0)", json!([]));
        std::fs::write(&path, browser.screenshot_png()).unwrap();
        eprintln!("screenshot written to {}", Path::new(&path).display());
    }
}

#[test]
fn the_page_shows_the_servers_error_for_a_bad_request() {
    let Some((_model, server, browser)) = open_page() else { return };
    browser.type_into("#document", DOCUMENT);
    browser.click("#submit");
    let status = browser.wait_for_result();

    let (code, direct) = post(&server, "/api/inference/instruct", json!({"document": DOCUMENT, "instruction": ""}));
    assert_eq!(code, 422, "{direct}");
    let message = direct["error"]["message"].as_str().expect("an error message");
    assert_eq!(status, "error");
    assert_eq!(browser.text("error"), message);
    assert_eq!(browser.text("answer"), "");
}
