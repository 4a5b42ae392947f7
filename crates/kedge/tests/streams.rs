//! `kubectl logs/exec/attach/port-forward/cp/top` to edge pods: real kubectl (WebSocket, and
//! SPDY as older kubectls speak it) against the embedded API, real containerd (its streaming
//! server) at the edge, the streams inside the hub session. Through `kedge up`, through
//! `kedge cloud` with a separate `kedge edge` whose link to the cloud is then cut, and through
//! the kubelet API `kedge cloud --kubeconfig` serves a real cluster's kube-apiserver (called
//! here as kube-apiserver calls it: curl and SPDY with its client certificate).

mod common;
#[path = "common/cri.rs"]
#[allow(dead_code)] // the helpers Edged's tests use
mod cri;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{EdgeProc, Kedge, wait_until};
use cri::{Containerd, IMAGE};

/// A pod on `node` running `script` (sh -c) in container `c`.
fn pod(name: &str, node: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    \
         command: [sh, -c, {script:?}]\n{extra}"
    )
}

fn running(k: &Kedge, name: &str) {
    wait_until(
        Duration::from_secs(90),
        &format!("pod {name} running"),
        || {
            let out = k.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
            (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
        },
    );
}

/// A kubectl left running, its stdout lines on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Running { child, lines }
    }

    /// The next line that satisfies `f`, within `within`.
    fn line(&self, within: Duration, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if f(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line {what} within {within:?}"),
            }
        }
    }

    /// Waits for the process to end within `within`: its exit status and stderr.
    fn ended(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = wait_until(within, "kubectl to end", || {
            self.child.try_wait().ok().flatten()
        });
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Line numbers `line N` printed by the talker pod, in order.
fn numbers(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect()
}

const TALKER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done";

fn logs(k: &Kedge) {
    k.apply(&pod("talk", "kube-edge-1", TALKER, ""));
    running(k, "talk");
    wait_until(Duration::from_secs(30), "ten lines logged", || {
        (numbers(&k.ok(&["logs", "talk"])).len() >= 10).then_some(())
    });
    let tail = numbers(&k.ok(&["logs", "talk", "--tail", "3"]));
    assert_eq!(tail.len(), 3, "--tail 3: {tail:?}");
    assert!(tail.windows(2).all(|w| w[1] == w[0] + 1), "{tail:?}");
    let all = numbers(&k.ok(&["logs", "talk"]));
    let since = numbers(&k.ok(&["logs", "talk", "--since", "1s"]));
    assert!(
        !since.is_empty() && since.len() < all.len() && since.len() <= 7,
        "--since 1s: {} of {} lines",
        since.len(),
        all.len()
    );
    let stamped = k.ok(&["logs", "talk", "--tail", "1", "--timestamps"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z line "),
        "{stamped}"
    );
    let limited = k.ok(&["logs", "talk", "--limit-bytes", "5"]);
    assert_eq!(limited, "line ");

    // -f: lines arrive as they are written, newer than any seen before.
    let last = *all.last().expect("lines");
    let f = Running::start(k.kubectl_cmd(&["logs", "-f", "talk", "--tail", "1"]));
    f.line(Duration::from_secs(10), "followed past the start", |l| {
        l.strip_prefix("line ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > last + 3)
    });
    drop(f);

    let err = k.fails(&["logs", "talk", "-p"]);
    assert!(
        err.contains("previous terminated container \"c\" in pod \"talk\" not found"),
        "{err}"
    );
    let err = k.fails(&["logs", "talk", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod talk"),
        "{err}"
    );
    let err = k.fails(&["logs", "nosuch"]);
    assert!(err.contains("\"nosuch\" not found"), "{err}");

    // -p after a restart: the previous run's log, not the current one's.
    let script = "echo run $(date +%s%N); sleep 1; exit 1";
    k.apply(&pod("crashy", "kube-edge-1", script, ""));
    wait_until(Duration::from_secs(90), "crashy restarted", || {
        let out = k.kubectl(&[
            "get",
            "pod",
            "crashy",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        let n: u32 = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
        (n >= 1).then_some(())
    });
    let previous = wait_until(Duration::from_secs(30), "a previous log", || {
        let out = k.kubectl(&["logs", "crashy", "-p"]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && s.starts_with("run ")).then_some(s)
    });
    let current = wait_until(Duration::from_secs(30), "a current log", || {
        let s = k.ok(&["logs", "crashy"]);
        s.starts_with("run ").then_some(s)
    });
    assert_ne!(previous, current, "-p shows the run before");
}

fn exec(k: &Kedge) {
    let out = k.with_stdin(&["exec", "-i", "talk", "--", "cat"], "hello\nworld\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
    let out = k.kubectl(&[
        "exec",
        "talk",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "the command's exit code");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // Older kubectls speak SPDY/3.1.
    let mut cmd = k.kubectl_cmd(&["exec", "-i", "talk", "--", "sh", "-c", "cat; exit 4"]);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let out = with_input(cmd, b"over spdy\n");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over spdy\n");

    // A terminal, driven through a pty.
    let kubeconfig = k.kubeconfig();
    let line = format!(
        "kubectl --kubeconfig {} exec -it talk -- sh",
        kubeconfig.display()
    );
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    let out = with_input(script, b"tty\necho $((6*7))\nexit 5\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "a terminal: {text}");
    assert!(text.contains("42"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");

    // kubectl interrupted: the container side's stdin closes, so `cat` ends.
    let mut r = Running::start(k.kubectl_cmd(&[
        "exec",
        "-i",
        "talk",
        "--",
        "sh",
        "-c",
        "echo ready; cat >/dev/null; echo gone > /tmp/ended",
    ]));
    r.line(Duration::from_secs(20), "ready", |l| l == "ready");
    let _ = r.child.kill();
    wait_until(Duration::from_secs(20), "the exec's stdin closed", || {
        let out = k.kubectl(&["exec", "talk", "--", "cat", "/tmp/ended"]);
        (String::from_utf8_lossy(&out.stdout) == "gone\n").then_some(())
    });

    let err = k.fails(&["exec", "talk", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod talk"),
        "{err}"
    );
}

fn with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("ends")
}

fn attach(k: &Kedge) {
    let a = Running::start(k.kubectl_cmd(&["attach", "talk"]));
    let first = a.line(Duration::from_secs(20), "attached output", |l| {
        l.starts_with("line ")
    });
    a.line(Duration::from_secs(20), "more output", |l| {
        l.starts_with("line ") && l != first
    });
    drop(a);
    let echo = "while read l; do echo got:$l; done";
    let stdin = "    stdin: true\n    stdinOnce: true\n";
    k.apply(&pod("reader", "kube-edge-1", echo, stdin));
    running(k, "reader");
    // What is typed reaches the container; what it answers comes back while attached.
    let mut a = Running::start(k.kubectl_cmd(&["attach", "-i", "reader"]));
    let mut stdin = a.child.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").expect("type");
    stdin.flush().expect("flush");
    a.line(Duration::from_secs(20), "the container's answer", |l| {
        l == "got:ping"
    });
    stdin.write_all(b"pong\n").expect("type");
    a.line(Duration::from_secs(20), "the second answer", |l| {
        l == "got:pong"
    });
    // stdinOnce: closing stdin ends the container's input, and the session with it.
    drop(stdin);
    let (status, err) = a.ended(Duration::from_secs(20));
    assert!(status.success(), "{err}");
}

fn cp(k: &Kedge) {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("blob");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).expect("write");
    k.ok(&["cp", src.to_str().expect("path"), "talk:/tmp/blob"]);
    let back = dir.path().join("back");
    k.ok(&["cp", "talk:/tmp/blob", back.to_str().expect("path")]);
    assert!(
        std::fs::read(&back).expect("read") == data,
        "cp both ways keeps the bytes"
    );
}

/// `kubectl port-forward` to port 8080 of pod `web` (an httpd); the local port.
fn forward(k: &Kedge, websocket: bool) -> (Running, u16) {
    let mut cmd = k.kubectl_cmd(&["port-forward", "pod/web", ":8080"]);
    if !websocket {
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    let r = Running::start(cmd);
    let line = r.line(Duration::from_secs(20), "Forwarding from", |l| {
        l.starts_with("Forwarding from 127.0.0.1:")
    });
    let port = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a local port");
    (r, port)
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port_forward(k: &Kedge) {
    let httpd = "mkdir -p /www && echo hello from the pod > /www/index.html && \
                 exec httpd -f -p 127.0.0.1:8080 -h /www";
    k.apply(&pod("web", "kube-edge-1", httpd, ""));
    running(k, "web");
    for websocket in [true, false] {
        let (_pf, port) = forward(k, websocket);
        for _ in 0..3 {
            let body = curl(&[&format!("http://127.0.0.1:{port}/index.html")]);
            assert_eq!(body, "hello from the pod\n", "websocket={websocket}");
        }
        let url = format!("http://127.0.0.1:{port}/nothing-here");
        assert_eq!(
            curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]),
            "404"
        );
    }
}

fn top(k: &Kedge) {
    let nodes = wait_until(Duration::from_secs(30), "node metrics", || {
        let out = k.kubectl(&["top", "node"]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.contains("kube-edge-1").then_some(s)
    });
    assert!(
        nodes.contains("CPU(cores)") && nodes.contains("Mi"),
        "{nodes}"
    );
    let pods = k.ok(&["top", "pod", "talk", "--containers"]);
    let row = pods
        .lines()
        .find(|l| l.starts_with("talk"))
        .unwrap_or_else(|| panic!("{pods}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1), Some(&"c"), "{pods}");
    assert!(cols[2].ends_with('m') && cols[3].ends_with("Mi"), "{pods}");
    let err = k.fails(&["top", "pod", "nosuch"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn kubectl_logs_exec_attach_cp_port_forward_and_top_through_kedge_up() {
    let c = Containerd::start_with_cni();
    let dir = tempfile::tempdir().expect("tmp");
    let k = Kedge::up_with(dir.path(), 0, &["--cri-endpoint", &c.endpoint()]);
    logs(&k);
    exec(&k);
    attach(&k);
    cp(&k);
    port_forward(&k);
    top(&k);
}

/// A TCP relay that can go silent: bytes stop flowing both ways, nothing is closed (a cable
/// pulled, a NAT that forgot the flow).
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Relay {
    fn to(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for inbound in l.incoming().map_while(Result::ok) {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        inbound.try_clone().expect("clone"),
                        outbound.try_clone().expect("clone"),
                    ),
                    (outbound, inbound),
                ] {
                    let cut = c.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if !cut.load(Ordering::Relaxed) && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Relay { port, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_separate_edge_streams_and_a_cut_link_ends_kubectl_with_a_clear_error() {
    let c = Containerd::start_with_cni();
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let k = Kedge::cloud(d1.path());
    let relay = Relay::to(k.hub_port);
    let _edge = EdgeProc::start_through(
        &k,
        d2.path(),
        "kube-edge-1",
        &k.token(),
        &["--cri-endpoint", &c.endpoint()],
        relay.port,
    );
    wait_until(Duration::from_secs(60), "the edge Ready", || {
        (k.node_ready("kube-edge-1") == "True").then_some(())
    });
    k.apply(&pod("talk", "kube-edge-1", TALKER, ""));
    running(&k, "talk");
    let out = k.with_stdin(
        &["exec", "-i", "talk", "--", "sh", "-c", "cat; exit 2"],
        "x\n",
    );
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(2), b"x\n".as_slice())
    );
    top(&k);

    let logs = Running::start(k.kubectl_cmd(&["logs", "-f", "talk"]));
    logs.line(Duration::from_secs(20), "a followed line", |l| {
        l.starts_with("line ")
    });
    let mut exec =
        Running::start(k.kubectl_cmd(&["exec", "-i", "talk", "--", "sh", "-c", "echo ready; cat"]));
    exec.line(Duration::from_secs(20), "ready", |l| l == "ready");
    let stdin = exec.child.stdin.take();
    relay.cut();
    let cut_at = Instant::now();
    // The cloud gives up on a silent session after its keepalive timeout (30 s).
    let (status, err) = exec.ended(Duration::from_secs(45));
    assert!(!status.success());
    assert!(
        err.contains("kube-edge-1") && err.contains("session ended"),
        "a clear error: {err}"
    );
    let why = logs.line(Duration::from_secs(15), "the cut reported", |l| {
        l.contains("the log stream from node kube-edge-1 was cut")
    });
    assert!(why.contains("session ended"), "{why}");
    let (status, _) = logs.ended(Duration::from_secs(10));
    assert!(
        !status.success(),
        "kubectl logs -f fails when the link is cut"
    );
    assert!(cut_at.elapsed() < Duration::from_secs(45));
    drop(stdin);
}

/// A CA of the cluster's, and client certificates it signed (openssl, as an operator makes them).
struct ClientPki {
    dir: std::path::PathBuf,
}

impl ClientPki {
    fn new(dir: &std::path::Path, names: &[&str]) -> ClientPki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=cluster-ca",
        ]);
        std::fs::write(dir.join("ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        for n in names {
            let subj = format!("/O=system:masters/CN={n}");
            let (key, csr, crt) = (format!("{n}.key"), format!("{n}.csr"), format!("{n}.crt"));
            openssl(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subj,
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "ext",
                "-out",
                &crt,
                "-days",
                "1",
            ]);
            let der = format!("{n}.der");
            openssl(&["x509", "-in", &crt, "-outform", "DER", "-out", &der]);
        }
        ClientPki {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// `curl` with `who`'s certificate (none: no certificate), trusting `ca`: the body and the
/// status code, or curl's error.
fn curl_as(
    pki: &ClientPki,
    who: Option<&str>,
    ca: &str,
    url: &str,
) -> Result<(String, u16), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--cacert", ca, "-w", "\n%{http_code}", url]);
    if let Some(w) = who {
        cmd.args(["--cert", &pki.path(&format!("{w}.crt"))]);
        cmd.args(["--key", &pki.path(&format!("{w}.key"))]);
    }
    let out = cmd.output().expect("curl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status code");
    Ok((body.to_string(), code.parse().expect("code")))
}

/// `/exec` over SPDY as kube-apiserver calls a kubelet (TLS, its client certificate): stdout
/// and the status on the error stream.
async fn exec_as_kube_apiserver(
    pki: &ClientPki,
    ca_der: Vec<u8>,
    port: u16,
    path: &str,
) -> (String, String) {
    use kedge_stream::spdy::conn::upgrade;
    let who = "kube-apiserver-kubelet-client";
    let cert = std::fs::read(pki.path(&format!("{who}.der"))).expect("client cert");
    let key = std::fs::read_to_string(pki.path(&format!("{who}.key"))).expect("client key");
    let cfg = kedge_pki::node::Identity::new(ca_der, cert, key)
        .client_config()
        .expect("client TLS");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS with a client certificate");
    let host = format!("127.0.0.1:{port}");
    let (conn, _incoming, chosen) = upgrade(tls, &host, path, &["v4.channel.k8s.io"])
        .await
        .expect("upgraded to SPDY");
    assert_eq!(chosen, "v4.channel.k8s.io");
    let open = |t: &str| conn.open(vec![("streamtype".into(), t.into())]);
    let (mut error, mut stdout, _stderr) = (open("error"), open("stdout"), open("stderr"));
    let read_all = async |s: &mut kedge_stream::spdy::SpdyStream| {
        let mut all = Vec::new();
        while let Ok(Some(d)) = s.recv().await {
            all.extend(d);
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    let out = read_all(&mut stdout).await;
    let status = read_all(&mut error).await;
    (out, status)
}

#[test]
fn a_kube_apiservers_kubelet_calls_reach_edge_pods_through_the_cloud() {
    let c = Containerd::start_with_cni();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("tmp")).collect();
    // One kedge's embedded API stands in for the cluster (kube-rs sees no difference).
    let cluster = Kedge::cloud(dirs[0].path());
    let pki = ClientPki::new(
        dirs[3].path(),
        &["kube-apiserver-kubelet-client", "someone-else"],
    );
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let ca = pki.path("ca.crt");
    let cloud = Kedge::cloud_with(
        dirs[1].path(),
        0,
        0,
        0,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--advertise-address",
            "127.0.0.1",
            "--kubelet-client-ca",
            &ca,
            "--kubelet-port",
            "0",
        ],
    );
    let served = cloud.endpoints["kubelet API"].clone();
    let port: u16 = served
        .strip_prefix("https://127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the kubelet API's address: {served}"));
    let _edge = EdgeProc::start_with(
        &cloud,
        dirs[2].path(),
        "kube-edge-1",
        &cloud.token(),
        &["--cri-endpoint", &c.endpoint()],
    );
    wait_until(Duration::from_secs(60), "the edge Ready", || {
        (cluster.node_ready("kube-edge-1") == "True").then_some(())
    });
    // kube-apiserver dials the first address of the types it prefers (Hostname first) at the
    // Node's kubelet port: both name the cloud.
    let advertised = cluster.ok(&[
        "get",
        "node",
        "kube-edge-1",
        "-o",
        "jsonpath={.status.addresses[0].type}={.status.addresses[0].address}:{.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert_eq!(advertised, format!("Hostname=127.0.0.1:{port}"));
    cluster.apply(&pod("talk", "kube-edge-1", TALKER, ""));
    running(&cluster, "talk");

    let kedge_ca = dirs[1].path().join("pki/ca.crt").display().to_string();
    let base = format!("https://127.0.0.1:{port}");
    let logs = format!("{base}/containerLogs/default/talk/c?tailLines=2");
    let me = Some("kube-apiserver-kubelet-client");
    let (body, code) = wait_until(Duration::from_secs(30), "two lines logged", || {
        let r = curl_as(&pki, me, &kedge_ca, &logs).expect("served");
        (numbers(&r.0).len() == 2).then_some(r)
    });
    assert_eq!(code, 200, "{body}");
    let (body, code) = curl_as(
        &pki,
        me,
        &kedge_ca,
        &format!("{base}/containerLogs/default/nosuch/c"),
    )
    .expect("served");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#"pods \"nosuch\" not found"#), "{body}");
    let (body, code) = curl_as(&pki, Some("someone-else"), &kedge_ca, &logs).expect("answered");
    assert_eq!(code, 403, "another certificate of the same CA: {body}");
    assert!(body.contains("kubeletClientNames"), "{body}");
    let err = curl_as(&pki, None, &kedge_ca, &logs).expect_err("no client certificate");
    assert!(!err.is_empty());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ca_der = kedge_pki::Ca::load_existing(dirs[1].path())
        .expect("the cloud's CA")
        .cert_der()
        .to_vec();
    let path = "/exec/default/talk/c?command=sh&command=-c&command=echo%20out%3B%20exit%203&output=1&error=1";
    let (out, status) = rt.block_on(exec_as_kube_apiserver(&pki, ca_der, port, path));
    assert_eq!(out, "out\n");
    let status: serde_json::Value = serde_json::from_str(&status).expect("a Status");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
}
