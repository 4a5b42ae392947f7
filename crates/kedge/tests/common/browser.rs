//! A real headless Chromium (Debian's `chromium`), driven through the DevTools protocol over its
//! WebSocket: navigate, type, click with the mouse, read the page, take screenshots.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, stream::MaybeTlsStream};

/// Where Debian installs it (`scripts/test` installs the package).
const CHROMIUM: &str = "/usr/bin/chromium";
/// No answer from the browser within this is a failure, not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium with a fresh profile; screenshots go to `shots`. The page's certificate
    /// is the cloud CA's, which this browser does not know: certificate errors are ignored.
    pub fn launch(shots: &Path) -> Browser {
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--ignore-certificate-errors",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMIUM} starts (apt-get install chromium): {e}"));
        // Chromium writes the port it took, then the browser's path, into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port =
            crate::common::wait_until(Duration::from_secs(30), "Chromium's DevTools port", || {
                let text = std::fs::read_to_string(&port_file).ok()?;
                text.lines().next()?.trim().parse::<u16>().ok()
            });
        let page =
            crate::common::wait_until(Duration::from_secs(30), "Chromium's page target", || {
                page_target(port)
            });
        let (ws, _) = tungstenite::connect(page.as_str()).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
        }
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            shots: shots.to_path_buf(),
        };
        b.call("Page.enable", json!({}));
        b
    }

    /// One DevTools call; its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("send to Chromium");
        loop {
            let msg = self.ws.read().expect("an answer from Chromium");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` and waits for the document to be loaded.
    pub fn goto(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
        self.wait_for("the page loaded", "document.readyState === 'complete'");
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy in the page; returns its value.
    pub fn wait_for(&mut self, what: &str, expr: &str) -> Value {
        self.wait_within(Duration::from_secs(30), what, expr)
    }

    pub fn wait_within(&mut self, within: Duration, what: &str, expr: &str) -> Value {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < within {
            last = self.eval(&format!(
                "(() => {{ try {{ return {expr}; }} catch (_) {{ return null; }} }})()"
            ));
            let truthy = !matches!(&last, Value::Null | Value::Bool(false))
                && last != json!("")
                && last != json!(0);
            if truthy {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what} did not happen within {within:?} (last: {last}); {expr}");
    }

    /// The text of the first element `selector` matches (None: no such element).
    pub fn text(&mut self, selector: &str) -> Option<String> {
        let v = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.textContent : null; }})()",
            json!(selector)
        ));
        v.as_str().map(String::from)
    }

    /// A mouse click in the middle of the element `selector` matches.
    pub fn click(&mut self, selector: &str) {
        let at = self.wait_for(
            &format!("{selector} on the page"),
            &format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                json!(selector)
            ),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at[0], "y": at[1], "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Clicks the field `selector` matches and types `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Saves a PNG of the page as `<shots>/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

/// The WebSocket address of the browser's first page, from `GET /json/list`.
fn page_target(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/json/list"))
        .output()
        .ok()?;
    let targets: Value = serde_json::from_slice(&out.stdout).ok()?;
    targets
        .as_array()?
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .map(String::from)
}
