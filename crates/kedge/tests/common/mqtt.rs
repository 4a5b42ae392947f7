//! Real `mosquitto_sub` / `mosquitto_pub`, as devices and apps use them, plus a real mosquitto
//! broker for the external-broker mode. Nothing here sleeps to synchronise: a subscriber is
//! ready when mosquitto_sub reports its SUBACK, and every wait has a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `mosquitto_sub -v` (topic and payload per line).
pub struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn_lines(mut child: Child) -> (Child, mpsc::Receiver<String>) {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

impl Sub {
    /// Subscribes to `topic` on 127.0.0.1:`port` and returns once the broker has confirmed.
    pub fn start(port: u16, topic: &str) -> Sub {
        Self::start_with(port, topic, &["-h", "127.0.0.1"])
    }

    /// Like [`Sub::start`], with connection flags (`-h`, `--cafile`, `-u`, `-P`, …).
    pub fn start_with(port: u16, topic: &str, conn: &[&str]) -> Sub {
        // Line-buffered: mosquitto_sub block-buffers a pipe.
        let child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-p", &port.to_string()])
            .args(conn)
            .args(["-d", "-v", "-q", "1", "-t", topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs");
        let (child, lines) = spawn_lines(child);
        let mut s = Sub { child, lines };
        s.line(Duration::from_secs(30), |l| l.contains("received SUBACK"))
            .expect("mosquitto_sub subscribed");
        s
    }

    fn line(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next message (topic, payload as printed) within `within`.
    pub fn next_raw(&mut self, within: Duration) -> Option<(String, String)> {
        let line = self.line(within, |l| {
            !l.starts_with("Client ") && !l.starts_with("Subscribed")
        })?;
        let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        Some((topic.to_string(), payload.to_string()))
    }

    /// The next message (topic, JSON payload) within `within` for which `want` holds.
    pub fn next_json(
        &mut self,
        within: Duration,
        want: impl Fn(&str, &Value) -> bool,
    ) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left, |l| {
                !l.starts_with("Client ") && !l.starts_with("Subscribed")
            })?;
            let Some((topic, payload)) = line.split_once(' ') else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(payload)
                && want(topic, &v)
            {
                return Some((topic.to_string(), v));
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub -q 1 -t topic -m payload`; panics if it fails.
pub fn publish(port: u16, topic: &str, payload: &str) {
    publish_with(port, topic, payload, &["-h", "127.0.0.1"]);
}

/// Like [`publish`], with connection flags.
pub fn publish_with(port: u16, topic: &str, payload: &str, conn: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(["-p", &port.to_string()])
        .args(conn)
        .args(["-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "mosquitto_pub -t {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes `payload` to `topic` until a message on `sub` satisfies `want` (the edge may not
/// know the device yet), for up to `within`.
pub fn ask(
    port: u16,
    sub: &mut Sub,
    topic: &str,
    payload: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        publish(port, topic, payload);
        if let Some((_, v)) = sub.next_json(Duration::from_millis(500), |_, v| want(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no wanted answer to {topic} within {within:?}"
        );
    }
}

/// A real mosquitto broker on a free loopback port.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A TLS listener's CA, and the one user allowed in.
pub struct Secure {
    pub ca: std::path::PathBuf,
    pub user: &'static str,
    pub password: &'static str,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_conf(|_| String::new())
    }

    /// mosquitto with TLS (a certificate for localhost from a fresh CA) and a password file.
    pub fn start_secure() -> (Mosquitto, Secure) {
        let mut secure = None;
        let m = Self::start_conf(|dir| {
            let ca = kedge_pki::Ca::load_or_create(&dir.join("ca")).expect("ca");
            let issued = ca
                .issue_server("mosquitto", &["localhost".to_string()])
                .expect("server cert");
            let w = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
            w("ca.pem", ca.cert_pem().to_string());
            w(
                "server.pem",
                kedge_pki::pem("CERTIFICATE", &issued.chain[0]),
            );
            w(
                "server.key",
                kedge_pki::pem("PRIVATE KEY", issued.key.secret_der()),
            );
            let passwd = dir.join("passwd");
            let ok = Command::new("mosquitto_passwd")
                .args(["-b", "-c"])
                .arg(&passwd)
                .args(["edge", "s3cret-pw"])
                .status()
                .expect("mosquitto_passwd runs");
            assert!(ok.success());
            secure = Some(Secure {
                ca: dir.join("ca.pem"),
                user: "edge",
                password: "s3cret-pw",
            });
            format!(
                "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\npassword_file {0}/passwd\nallow_anonymous false\n",
                dir.display()
            )
        });
        (m, secure.expect("secure"))
    }

    fn start_conf(extra: impl FnOnce(&std::path::Path) -> String) -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("dir");
        let conf = dir.path().join("mosquitto.conf");
        let more = extra(dir.path());
        let anonymous = if more.is_empty() {
            "allow_anonymous true\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{anonymous}persistence false\n{more}"),
        )
        .expect("config");
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
