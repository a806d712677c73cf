//! The live status page in a real browser: headless Chromium (Debian's
//! `chromium`) driven over the Chrome DevTools Protocol against the real
//! binary. The page lists every backend with its admin state and health;
//! a killed backend's row turns down within a health-check interval plus a
//! refresh; the drain button, with the token typed into the page, drains a
//! backend; a hostile listener name shows as text; without write access
//! there are no buttons; nothing logs an error (CSP violations included);
//! and a screenshot is saved.
//!
//! The browser is driven through `--remote-debugging-pipe`: the protocol's
//! JSON messages over two pipes (file descriptors 3 and 4, each message
//! ended by a NUL byte), which needs no WebSocket client and no port. A
//! missing Chromium fails the test with how to install it: it is never
//! skipped. `CHROMIUM=/path/to/chrome` picks another binary;
//! `TCPLB_SCREENSHOT=/path.png` saves the screenshot there too.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    PATIENCE, TcplbProcess, TempDir, TestBackend, raw_exchange, spawn_process, tcplb_bin,
    wait_listening,
};
use serde_json::{Value, json};

const TOKEN: &str = "page-T0ken";
/// A listener name that would run script if the page wrote it as markup.
const HOSTILE: &str = "<img src=x onerror=\"document.title='owned'\">&web";
/// Health checks this often, so a killed backend is DOWN within it.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The page refreshes this often (status.js).
const REFRESH: Duration = Duration::from_secs(2);

/// A temporary directory, removed on drop.
/// The Chromium binary: `$CHROMIUM`, else the first of the usual names on
/// the PATH. None found fails the test with how to install one.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the status page test needs Chromium and found none of {names:?} on the PATH: \
         install Debian's package (`apt-get install chromium`; .ci/run does) or set \
         CHROMIUM=/path/to/chrome"
    );
}

/// A headless Chromium driven over `--remote-debugging-pipe`; closed (and
/// if need be killed, its process group with it) on drop.
/// How long a starting browser may take to answer its first commands.
const STARTING_PATIENCE: Duration = Duration::from_secs(60);

struct Browser {
    /// The browser process; its group is its own.
    child: Child,
    /// Commands to the browser (its fd 3).
    commands: std::io::PipeWriter,
    /// Messages from the browser (its fd 4), one JSON value each.
    messages: Receiver<Value>,
    /// Events seen so far, in order.
    events: Vec<Value>,
    /// The next command id.
    next_id: u64,
    /// How long a command may wait for its answer.
    patience: Duration,
    /// The page's DevTools session.
    session: String,
    /// Chromium's stderr, for a failure's message.
    stderr: Arc<Mutex<Vec<String>>>,
    /// Its profile, removed after it exits.
    _profile: TempDir,
}

impl Browser {
    fn launch() -> Browser {
        // One start at a time: three Chromiums starting together on a
        // loaded 2-core machine once missed the 20 s answer. Held until
        // the page's session is ready; it guards no data, so a failed
        // start's poison is ignored.
        static STARTING: Mutex<()> = Mutex::new(());
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let binary = chromium_binary();
        // One profile per browser: tests run side by side.
        static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = BROWSERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = TempDir::new(&format!("chromium-profile-{n}"));
        let (to_browser, commands) = std::io::pipe().expect("pipe");
        let (from_browser, browser_out) = std::io::pipe().expect("pipe");
        let (read_fd, write_fd) = (to_browser.as_raw_fd(), browser_out.as_raw_fd());
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                // Root in CI and containers: Chromium's sandbox needs a
                // user namespace it may not get there.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: between fork and exec only async-signal-safe calls:
        // fcntl and dup2 put the pipe ends on fds 3 and 4 (moved above 10
        // first, so neither overwrites the other), without close-on-exec.
        unsafe {
            command.pre_exec(move || {
                let read = libc::fcntl(read_fd, libc::F_DUPFD, 10);
                let write = libc::fcntl(write_fd, libc::F_DUPFD, 10);
                if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // The browser holds its own copies now.
        drop(to_browser);
        drop(browser_out);

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let (sender, messages) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if sender.send(value).is_err() {
                    break;
                }
            }
        });

        let mut browser = Browser {
            child,
            commands,
            messages,
            events: Vec::new(),
            next_id: 1,
            // A cold start on a loaded 2-core machine (a clean clone's CI,
            // the whole suite beside it) once took longer than 20 s to
            // answer the first command: the start alone may take a minute.
            patience: STARTING_PATIENCE,
            session: String::new(),
            stderr,
            _profile: profile,
        };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser.patience = PATIENCE;
        browser
    }

    /// Sends a command (to the page's session unless `session` is None)
    /// and waits for its result; events that arrive meanwhile are kept.
    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method}: the browser went away: {e}\n{}", self.log()));
        let deadline = Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(reply) if reply["id"] == id => {
                    if let Some(error) = reply.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return reply["result"].clone();
                }
                Ok(event) => self.events.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{method}: no answer within {:?}\n{}",
                        self.patience,
                        self.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{method}: the browser closed its pipe\n{}", self.log())
                }
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Chromium's stderr so far.
    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn navigate(&mut self, url: &str) {
        let navigated = self.call("Page.navigate", json!({"url": url}));
        assert!(navigated.get("errorText").is_none(), "{url}: {navigated}");
    }

    /// The value of `expression` in the page (JSON-serialisable).
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until `done` holds of it, for at
    /// most `within`; the last value and the time it took.
    fn wait_for(
        &mut self,
        expression: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let value = self.eval(expression);
            if done(&value) {
                return (value, started.elapsed());
            }
            if started.elapsed() > within {
                return (value, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page as it is.
    fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().expect("base64 data"))
    }

    /// Everything the page reported as an error: uncaught exceptions,
    /// console.error, and log entries at error level (CSP violations and
    /// failed loads among them).
    fn errors(&mut self) -> Vec<String> {
        // Let events still in the pipe arrive.
        self.call("Runtime.evaluate", json!({"expression": "1"}));
        while let Ok(event) = self.messages.try_recv() {
            self.events.push(event);
        }
        self.events
            .iter()
            .filter(|e| {
                let params = &e["params"];
                match e["method"].as_str() {
                    Some("Runtime.exceptionThrown") => true,
                    Some("Runtime.consoleAPICalled") => params["type"] == "error",
                    Some("Log.entryAdded") => params["entry"]["level"] == "error",
                    Some("Page.javascriptDialogOpening") => true,
                    _ => false,
                }
            })
            .map(|e| e.to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first; then kill the browser's own process group (its
        // renderers and helpers), which this test started.
        let id = self.next_id;
        let close = json!({"id": id, "method": "Browser.close"});
        let mut bytes = serde_json::to_vec(&close).unwrap();
        bytes.push(0);
        let _ = self.commands.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let group = self.child.id() as libc::pid_t;
        // SAFETY: signals the process group this test created for the browser.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as CDP sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let bits = data
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        out.extend_from_slice(&bytes[..data.len().saturating_sub(1)]);
    }
    out
}

/// Runs the binary with `config` (TOML) and returns it with its admin address.
async fn start_tcplb(dir: &TempDir, config: &str) -> (TcplbProcess, SocketAddr) {
    let file = dir.path("tcplb.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(tcplb_bin());
    command.arg("--config").arg(&file);
    let lb = wait_listening(spawn_process(command));
    let admin = lb.admin_addr().await;
    (lb, admin)
}

/// `GET /status` on the admin endpoint, parsed.
async fn status(admin: SocketAddr) -> Value {
    let text = raw_exchange(admin, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (_, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    serde_json::from_str(body).expect("JSON")
}

/// Every backend row the page shows: [name, state, health, has buttons].
const ROWS: &str = r#"JSON.stringify([...document.querySelectorAll("tr[data-backend]")].map(r => [
    r.dataset.backend, r.querySelector("td.state").textContent,
    r.querySelector("td.health").firstChild.textContent, r.querySelectorAll("button").length > 0]))"#;

fn rows(value: &Value) -> Vec<(String, String, String, bool)> {
    serde_json::from_str(value.as_str().unwrap_or("[]")).unwrap_or_default()
}

fn row<'a>(
    rows: &'a [(String, String, String, bool)],
    name: &str,
) -> Option<&'a (String, String, String, bool)> {
    rows.iter().find(|r| r.0 == name)
}

/// Where the screenshot goes: the build's temporary folder, and
/// `$TCPLB_SCREENSHOT` when set.
fn save_screenshot(png: &[u8]) -> PathBuf {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, png).expect("write the screenshot");
    if let Some(extra) = std::env::var_os("TCPLB_SCREENSHOT") {
        std::fs::write(&extra, png).expect("write $TCPLB_SCREENSHOT");
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_fleet_follows_a_dead_backend_and_drains_with_the_token() {
    let mut a = TestBackend::http().await;
    let b = TestBackend::http().await;
    let c = TestBackend::http().await;
    let d = TestBackend::http().await;
    let dir = TempDir::new("write");
    std::fs::write(dir.path("token"), TOKEN).unwrap();
    let config = format!(
        r#"admin = "127.0.0.1:0"
admin_token_file = "{token}"
drain_timeout = "1s"

[[listener]]
name = "{name}"
listen = "127.0.0.1:0"
health = {{ interval = "1s", timeout = "500ms" }}
backends = ["{a}", "{b}", {{ address = "{c}", state = "drain" }}, {{ address = "{d}", state = "maintenance" }}]
"#,
        name = HOSTILE.replace('\\', "\\\\").replace('"', "\\\""),
        token = dir.path("token").display(),
        a = a.addr,
        b = b.addr,
        c = c.addr,
        d = d.addr,
    );
    let (lb, admin) = start_tcplb(&dir, &config).await;
    // Some traffic for the charts, in the background for the whole test.
    let traffic_addr = lb.addr;
    let traffic = tokio::spawn(async move {
        for _ in 0..400 {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), common::http_get(traffic_addr)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let url = format!("http://{admin}/");
    let names = [a.addr, b.addr, c.addr, d.addr].map(|x| x.to_string());
    let mut browser = tokio::task::block_in_place(Browser::launch);
    tokio::task::block_in_place(|| browser.navigate(&url));

    // Every backend listed, with its admin state and health.
    let (seen, _) =
        tokio::task::block_in_place(|| browser.wait_for(ROWS, PATIENCE, |v| rows(v).len() == 4));
    let seen = rows(&seen);
    assert_eq!(seen.len(), 4, "every backend listed: {seen:?}");
    for (name, state) in [
        (&names[0], "ready"),
        (&names[1], "ready"),
        (&names[2], "drain"),
        (&names[3], "maintenance"),
    ] {
        let shown = row(&seen, name).unwrap_or_else(|| panic!("{name} not listed: {seen:?}"));
        assert_eq!(
            (shown.1.as_str(), shown.2.as_str()),
            (state, "up"),
            "{name}"
        );
        assert!(shown.3, "{name}: write access is configured: buttons");
    }
    // The hostile listener name is text, not markup.
    let heading = tokio::task::block_in_place(|| {
        browser.eval(r#"document.querySelector("section.listener h2").firstChild.textContent"#)
    });
    assert_eq!(heading, HOSTILE);
    let images = tokio::task::block_in_place(|| browser.eval("document.images.length"));
    assert_eq!(images, 0);
    assert_ne!(
        tokio::task::block_in_place(|| browser.eval("document.title")),
        "owned"
    );

    // Kill A: its row turns down within a check interval and a refresh.
    a.kill().await;
    let killed = Instant::now();
    let bound = CHECK_INTERVAL + REFRESH + Duration::from_secs(3);
    let (seen, took) = tokio::task::block_in_place(|| {
        browser.wait_for(ROWS, bound, |v| {
            row(&rows(v), &names[0]).is_some_and(|r| r.2 == "down")
        })
    });
    let seen = rows(&seen);
    assert_eq!(
        row(&seen, &names[0]).map(|r| r.2.as_str()),
        Some("down"),
        "{} not shown down within {bound:?}: {seen:?}",
        names[0]
    );
    eprintln!(
        "the killed backend's row showed down {:?} after the kill (bound {bound:?})",
        killed.elapsed().min(took + Duration::from_millis(100))
    );
    let others_up = seen.iter().filter(|r| r.0 != names[0]).all(|r| r.2 == "up");
    assert!(others_up, "only A is down: {seen:?}");
    // Its row says why and since when: the last check's result and
    // reason, and how long it has been down (the time in the tooltip).
    let why = format!(
        r#"JSON.stringify((() => {{
            const r = document.querySelector('tr[data-backend="{}"]');
            return [r.querySelector("td.check").textContent,
                    r.querySelector("td.health .since").textContent,
                    r.querySelector("td.health").title];
        }})())"#,
        names[0]
    );
    let (shown, _) = tokio::task::block_in_place(|| {
        browser.wait_for(&why, PATIENCE, |v| {
            v.as_str().is_some_and(|t| t.contains("connection refused"))
        })
    });
    let [check, since, title]: [String; 3] =
        serde_json::from_str(shown.as_str().unwrap_or("[]")).expect("three texts");
    assert!(
        check.starts_with("failed") && check.contains("connection refused"),
        "{check}"
    );
    assert!(
        since.starts_with("for ") && since.ends_with(" s"),
        "{since}"
    );
    assert!(
        title.starts_with("down since 20") && title.contains("connection refused"),
        "{title}"
    );

    // Drain B with the button, the token typed into the page.
    tokio::task::block_in_place(|| {
        browser.eval(r#"document.getElementById("token").focus()"#);
        browser.call("Input.insertText", json!({"text": TOKEN}));
        let click = format!(
            r#"document.querySelector('tr[data-backend="{}"] button.act-drain').click()"#,
            names[1]
        );
        browser.eval(&click);
    });
    let (seen, _) = tokio::task::block_in_place(|| {
        browser.wait_for(ROWS, PATIENCE, |v| {
            row(&rows(v), &names[1]).is_some_and(|r| r.1 == "drain")
        })
    });
    assert_eq!(
        row(&rows(&seen), &names[1]).map(|r| r.1.as_str()),
        Some("drain")
    );
    let outcome = tokio::task::block_in_place(|| {
        browser.eval(r#"document.getElementById("outcome").textContent"#)
    });
    assert!(
        outcome
            .as_str()
            .unwrap_or("")
            .contains("state ready -> drain"),
        "{outcome}"
    );
    let now = status(admin).await;
    let drained = now["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == names[1].as_str())
        .cloned()
        .unwrap();
    assert_eq!(drained["admin_state"], "drain", "the API really drained it");
    // The token stays in the page's memory only.
    let stored = tokio::task::block_in_place(|| {
        browser.eval("localStorage.length + sessionStorage.length + document.cookie.length")
    });
    assert_eq!(stored, 0);

    // Charts: the listener's, and one sparkline per backend row.
    let (charts, _) = tokio::task::block_in_place(|| {
        browser.wait_for(
            r#"document.querySelectorAll("svg.chart polyline").length"#,
            PATIENCE,
            |v| v.as_u64().unwrap_or(0) >= 3 + 4 * 2,
        )
    });
    assert!(charts.as_u64().unwrap() >= 3 + 4 * 2, "{charts}");
    // The time axis fits the data there is: a process a few seconds old
    // fills its chart, rather than a sliver at the right of 15 minutes.
    let leftmost = r#"Math.min(...[...document.querySelectorAll(".chart-box svg.chart polyline")]
        .map(p => parseFloat(p.getAttribute("points").split(" ")[0].split(",")[0])))"#;
    let (left, _) = tokio::task::block_in_place(|| {
        browser.wait_for(leftmost, PATIENCE, |v| {
            v.as_f64().is_some_and(|x| x < 150.0)
        })
    });
    assert!(
        left.as_f64().is_some_and(|x| x < 150.0),
        "the listener chart starts at x = {left} of 600"
    );
    let scale = tokio::task::block_in_place(|| {
        browser.eval(r#"[...document.querySelectorAll(".chart-box text.scale")].map(t => t.textContent).join("|")"#)
    });
    assert!(
        scale.as_str().is_some_and(|s| s.ends_with(" s ago")),
        "{scale}"
    );

    let png = tokio::task::block_in_place(|| browser.screenshot());
    let path = save_screenshot(&png);
    eprintln!("screenshot: {}", path.display());

    let errors = tokio::task::block_in_place(|| browser.errors());
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    traffic.abort();
    drop(browser);
    drop(lb);
    drop((b, c, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_write_access_the_page_has_no_buttons_and_shows_tls_routes() {
    let a = TestBackend::http().await;
    let e = TestBackend::http().await;
    let dir = TempDir::new("read");
    let config = format!(
        r#"admin = "127.0.0.1:0"
drain_timeout = "1s"

[[listener]]
listen = "127.0.0.1:0"
backends = ["{a}"]

[[listener.route]]
name = "api"
server_names = ["api.example.com"]
backends = ["{e}"]
"#,
        a = a.addr,
        e = e.addr
    );
    let (_lb, admin) = start_tcplb(&dir, &config).await;
    let url = format!("http://{admin}/");
    let mut browser = tokio::task::block_in_place(Browser::launch);
    tokio::task::block_in_place(|| browser.navigate(&url));
    let (seen, _) =
        tokio::task::block_in_place(|| browser.wait_for(ROWS, PATIENCE, |v| rows(v).len() == 2));
    let seen = rows(&seen);
    assert_eq!(
        seen.len(),
        2,
        "the listener's backend and the route's: {seen:?}"
    );
    for shown in &seen {
        assert_eq!(
            (shown.1.as_str(), shown.2.as_str(), shown.3),
            ("ready", "up", false),
            "{shown:?}"
        );
    }
    // The route's backend sits in the route's own table.
    let pools = tokio::task::block_in_place(|| {
        browser.eval(
            r#"[...document.querySelectorAll("tr[data-backend]")].map(r => [r.dataset.pool, r.dataset.backend])"#,
        )
    });
    assert_eq!(pools[1], json!(["api", e.addr.to_string()]), "{pools}");
    let heading = tokio::task::block_in_place(|| {
        browser.eval(r#"document.querySelector("h3[data-route]").textContent"#)
    });
    assert!(
        heading
            .as_str()
            .unwrap_or("")
            .starts_with("route api api.example.com"),
        "{heading}"
    );
    let hidden = tokio::task::block_in_place(|| {
        browser.eval(r#"[document.getElementById("auth").hidden, document.querySelectorAll("button").length]"#)
    });
    assert_eq!(hidden, json!([true, 0]));
    let errors = tokio::task::block_in_place(|| browser.errors());
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_counts_every_503_and_shows_those_of_limits_as_overload() {
    // "limited" answers its second client 503 after the --max-conns queue
    // timeout; "drained" has no backend to try, so every client gets 503.
    let a = TestBackend::http().await;
    let dir = TempDir::new("overload");
    let config = format!(
        r#"admin = "127.0.0.1:0"
[[listener]]
name = "limited"
listen = "127.0.0.1:0"
backends = ["{a}"]
max_conns = 1
queue_timeout = "100ms"

[[listener]]
name = "drained"
listen = "127.0.0.1:0"
backends = [{{ address = "{a}", state = "drain" }}]
"#,
        a = a.addr
    );
    let (lb, admin) = start_tcplb(&dir, &config).await;
    let before = status(admin).await;
    let drained: SocketAddr = before["listeners"][1]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // One client holds the slot (answered, kept alive); the next hears 503.
    let mut held = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut held, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 15];
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_exact(&mut held, &mut answer),
    )
    .await
    .expect("the first client is answered")
    .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    for addr in [lb.addr, drained] {
        let answer = common::http_get(addr).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{addr}: {answer}");
    }
    let now = status(admin).await;
    for (i, reason) in [(0, "queue_timeout"), (1, "no_backend")] {
        let failures = &now["listeners"][i]["failures"];
        assert_eq!(failures["503"], 1, "{now}");
        assert_eq!(failures["503_by_reason"][reason], 1, "{now}");
    }

    let url = format!("http://{admin}/");
    let mut browser = tokio::task::block_in_place(Browser::launch);
    tokio::task::block_in_place(|| browser.navigate(&url));
    // Each listener's figures: term -> [value, tooltip].
    const FIGURES: &str = r#"JSON.stringify([...document.querySelectorAll("section.listener")].map(s =>
        [s.dataset.listener, Object.fromEntries([...s.querySelectorAll("dl.figures > div")].map(d =>
            [d.dataset.figure, [d.querySelector("dd").textContent, d.title]]))]))"#;
    type Figures = Vec<(String, std::collections::HashMap<String, (String, String)>)>;
    let figures = |v: &Value| -> Figures {
        serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
    };
    let (shown, _) = tokio::task::block_in_place(|| {
        browser.wait_for(FIGURES, PATIENCE, |v| figures(v).len() == 2)
    });
    let shown = figures(&shown);
    assert_eq!(shown.len(), 2, "{shown:?}");
    let figure = |listener: usize, term: &str| {
        let (_, terms) = &shown[listener];
        let (value, title) = terms
            .get(term)
            .unwrap_or_else(|| panic!("no {term}: {shown:?}"));
        (value.as_str(), title.as_str())
    };
    assert_eq!(shown[0].0, "limited");
    assert_eq!(figure(0, "503"), ("1", "queue timeout: 1"));
    assert_eq!(figure(0, "503 over limits"), ("1", "queue timeout: 1"));
    assert_eq!(figure(0, "rejected"), ("1", ""));
    assert_eq!(shown[1].0, "drained");
    assert_eq!(figure(1, "503"), ("1", "no backend: 1"));
    assert_eq!(figure(1, "503 over limits"), ("0", ""));
    let errors = tokio::task::block_in_place(|| browser.errors());
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    drop(held);
}
