//! A cloud app for the router's REST endpoints: a small HTTP/1.1 server on loopback.
#![allow(dead_code)]

use std::time::Duration;

/// One HTTP/1.1 request read off `stream`: the request line, a header's value, and the body.
pub struct Request {
    pub line: String,
    pub header: String,
    pub body: String,
    pub stream: std::net::TcpStream,
    /// The whole request arrived (a sender killed mid-request leaves only part of one).
    pub complete: bool,
}

/// Reads a request, keeping the value of `header` (lower case).
pub fn read_request(stream: std::net::TcpStream, header: &str) -> Request {
    use std::io::{BufRead, BufReader, Read};
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    let (mut len, mut value) = (0usize, String::new());
    let mut headers_ended = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        if h == "\r\n" {
            headers_ended = true;
            break;
        }
        if let Some((name, v)) = h.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            } else if name == header {
                value = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0; len];
    let body_read = r.read_exact(&mut body).is_ok();
    Request {
        complete: line.ends_with("\r\n") && headers_ended && body_read,
        line,
        header: value,
        body: String::from_utf8_lossy(&body).into_owned(),
        stream: r.into_inner(),
    }
}

/// A small HTTP server: every complete request's (NodeName header, body) arrives on the
/// channel, answered 200; one cut off mid-way is neither. After `stop` its port is free again.
pub struct App {
    pub port: u16,
    pub got: std::sync::mpsc::Receiver<(String, String)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl App {
    pub fn start(port: u16) -> App {
        use std::io::Write;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, got) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let mut req = read_request(stream, "nodename");
                if !req.complete {
                    // The sender died mid-request: nothing was delivered (and nothing is
                    // acknowledged, so it comes again).
                    continue;
                }
                let _ = req.stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tx.send((req.header, req.body));
            }
        });
        App {
            port,
            got,
            stop,
            thread,
        }
    }

    pub fn stop(self) -> u16 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The listener closes when its thread ends.
        let _ = self.thread.join();
        self.port
    }
}

/// The seed's eventbus→rest rule and its endpoints, for node kube-edge-1 and an app on `port`.
pub fn eventbus_to_app(k: &crate::common::Kedge, port: u16) {
    let example = |name: &str| crate::common::examples().join(name);
    let files = ["ruleEndpoint-rest.yaml", "ruleEndpoint-eventbus.yaml"].map(example);
    k.ok(&[
        "apply",
        "-f",
        &files[0].display().to_string(),
        "-f",
        &files[1].display().to_string(),
    ]);
    let rule = std::fs::read_to_string(example("rule-eventbus-rest.yaml"))
        .expect("rule")
        .replace("k8s-edge-1", "kube-edge-1")
        .replace(
            "http://k8s-master:8080/b",
            &format!("http://127.0.0.1:{port}/b"),
        );
    k.apply(&rule);
}
