//! A real headless Chromium (Debian's `chromium`), driven through the DevTools protocol over its
//! WebSocket: navigate, type, click with the mouse, read the page, take screenshots. The
//! dashboard's end-to-end test and `kedge-bench` use it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, stream::MaybeTlsStream};

/// Where Debian installs it (`scripts/test` installs the package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// No answer from the browser within this is a failure, not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::wait_for`] waits.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("starting {CHROMIUM} (apt-get install chromium): {0}")]
    Start(std::io::Error),
    #[error("Chromium did not open its DevTools port within {0:?}")]
    NoPort(Duration),
    #[error("the DevTools WebSocket: {0}")]
    Socket(#[from] Box<tungstenite::Error>),
    #[error("{method}: {error}")]
    Call { method: String, error: String },
    #[error("{what} did not happen within {within:?} (last: {last}); {expr}")]
    Timeout {
        what: String,
        within: Duration,
        last: String,
        expr: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, BrowserError>;

pub struct Browser {
    _chromium: Killed,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    shots: PathBuf,
}

impl Browser {
    /// Starts Chromium with a fresh profile; screenshots go to `shots`. The dashboard's
    /// certificate is the cloud CA's, which this browser does not know: certificate errors are
    /// ignored.
    pub fn launch(shots: &Path) -> Result<Browser> {
        std::fs::create_dir_all(shots)?;
        let profile = tempfile::tempdir()?;
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
            .map_err(BrowserError::Start)?;
        // Killed on every way out, a failed start included.
        let chromium = Killed(child);
        // Chromium writes the port it took into the profile, then serves its targets there.
        let port_file = profile.path().join("DevToolsActivePort");
        let page = poll(WAIT, || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            page_target(text.lines().next()?.trim().parse().ok()?)
        })
        .ok_or(BrowserError::NoPort(WAIT))?;
        let (ws, _) = tungstenite::connect(page.as_str()).map_err(Box::new)?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(CALL_TIMEOUT))?;
        }
        let mut b = Browser {
            _chromium: chromium,
            _profile: profile,
            ws,
            next_id: 0,
            shots: shots.to_path_buf(),
        };
        b.call("Page.enable", json!({}))?;
        Ok(b)
    }

    /// One DevTools call; its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).map_err(Box::new)?;
        loop {
            let Message::Text(text) = self.ws.read().map_err(Box::new)? else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if v["id"] != json!(id) {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(BrowserError::Call {
                    method: method.into(),
                    error: e.to_string(),
                });
            }
            return Ok(v["result"].clone());
        }
    }

    /// Opens `url` and waits for the document to be loaded.
    pub fn goto(&mut self, url: &str) -> Result<()> {
        let r = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = r.get("errorText") {
            return Err(BrowserError::Call {
                method: format!("Page.navigate {url}"),
                error: e.to_string(),
            });
        }
        self.wait_for("the page loaded", "document.readyState === 'complete'")?;
        Ok(())
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(BrowserError::Call {
                method: format!("evaluating {expr}"),
                error: e.to_string(),
            });
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expr` is truthy in the page; returns its value.
    pub fn wait_for(&mut self, what: &str, expr: &str) -> Result<Value> {
        self.wait_within(WAIT, what, expr)
    }

    pub fn wait_within(&mut self, within: Duration, what: &str, expr: &str) -> Result<Value> {
        let guarded =
            format!("(() => {{ try {{ return {expr}; }} catch (_) {{ return null; }} }})()");
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < within {
            last = self.eval(&guarded)?;
            if truthy(&last) {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(BrowserError::Timeout {
            what: what.into(),
            within,
            last: last.to_string(),
            expr: expr.into(),
        })
    }

    /// The text of the first element `selector` matches (None: no such element).
    pub fn text(&mut self, selector: &str) -> Result<Option<String>> {
        let v = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.textContent : null; }})()",
            json!(selector)
        ))?;
        Ok(v.as_str().map(String::from))
    }

    /// A mouse click in the middle of the element `selector` matches.
    pub fn click(&mut self, selector: &str) -> Result<()> {
        let at = self.wait_for(
            &format!("{selector} on the page"),
            &format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                json!(selector)
            ),
        )?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at[0], "y": at[1], "button": "left", "clickCount": 1}),
            )?;
        }
        Ok(())
    }

    /// Clicks the field `selector` matches and types `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) -> Result<()> {
        self.click(selector)?;
        self.call("Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// Saves a PNG of the page as `<shots>/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> Result<PathBuf> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .map_err(|e| BrowserError::Call {
                method: "Page.captureScreenshot".into(),
                error: e.to_string(),
            })?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

/// The browser process, killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false)) && *v != json!("") && *v != json!(0)
}

/// `f`'s first `Some` within `within`.
fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_javascripts() {
        for v in [json!(null), json!(false), json!(""), json!(0)] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [json!(true), json!("x"), json!(3), json!([0, 0])] {
            assert!(truthy(&v), "{v}");
        }
    }
}
