//! The router with the seed's commands: real curl against `kedge up`'s REST listener, real
//! mosquitto_sub on the edge's broker, rules changed with kubectl.

#[path = "common/app.rs"]
mod app;
mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::process::Command;
use std::time::{Duration, Instant};

use app::{App, read_request};
use common::Kedge;
use mqtt::Sub;

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
}

/// The seed's rest→servicebus rule and its endpoints, with the edge app on `port`.
fn servicebus_to_app(k: &Kedge, port: u16) {
    let endpoint = std::fs::read_to_string(example("ruleEndpoint-servicebus.yaml"))
        .expect("endpoint")
        .replace("6666", &port.to_string());
    k.apply(&endpoint);
    k.ok(&[
        "apply",
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("rule-rest-servicebus.yaml"),
    ]);
}

/// `curl -X POST -d <body> <url>` → (status, body).
fn post(url: &str, body: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-w", "\n%{http_code}", url])
        .args(body)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rest_to_eventbus_with_the_seed_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    up.ok(&[
        "apply",
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("ruleEndpoint-eventbus.yaml"),
    ]);
    up.ok(&["apply", "-f", &example("rule-rest-eventbus.yaml")]);
    let base = format!("http://127.0.0.1:{}", up.router_port);
    let url = format!("{base}/kube-edge-1/default/a");
    let mut sub = Sub::start(up.mqtt_port, "test/#");
    let mut test = Sub::start(up.mqtt_port, "test");

    // The seed's command, once the rule is in effect; the body arrives byte for byte.
    let mut last = (0, String::new());
    until(Duration::from_secs(30), "the rule to take effect", || {
        last = post(&url, &["-d", r#"{"message": "123"}"#]);
        last.0 != 404
    });
    assert_eq!(last, (200, "message delivered\n".into()));
    let (topic, payload) = test
        .next_raw(Duration::from_secs(10))
        .expect("a message on test");
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("test", r#"{"message": "123"}"#)
    );

    // The rest of the path goes after the topic.
    assert_eq!(post(&format!("{url}/x/y"), &["-d", "deeper"]).0, 200);
    let got = sub.next_raw(Duration::from_secs(10));
    let got = if got.as_ref().is_some_and(|(t, _)| t == "test") {
        sub.next_raw(Duration::from_secs(10))
    } else {
        got
    };
    assert_eq!(got, Some(("test/x/y".into(), "deeper".into())));

    // Honest errors.
    let (code, body) = post(
        &format!("{base}/kube-edge-1/default/nothing-here"),
        &["-d", "x"],
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no rule"), "{body}");
    let (code, body) = post(&format!("{base}/kube-edge-9/default/a"), &["-d", "x"]);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("kube-edge-9") && body.contains("not connected"),
        "{body}"
    );
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 13 << 20]).expect("big body");
    let (code, _) = post(&url, &["--data-binary", &format!("@{}", big.display())]);
    assert_eq!(code, 413, "a body over 12 MiB");

    // The rule's status counts what happened (written under `status`, unlike KubeEdge).
    let status = |path: &str| {
        up.ok(&[
            "get",
            "rule",
            "my-rule",
            "-o",
            &format!("jsonpath={{.status.{path}}}"),
        ])
    };
    until(Duration::from_secs(10), "the rule's status", || {
        status("successMessages").parse::<u64>().unwrap_or(0) >= 2
            && status("failMessages").parse::<u64>().unwrap_or(0) >= 1
            && status("errors").contains("kube-edge-9 is not connected")
    });

    // An update takes effect (KubeEdge ignores updates), and so does a delete.
    up.ok(&[
        "patch",
        "rule",
        "my-rule",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetResource":{"topic":"moved"}}}"#,
    ]);
    let mut moved = Sub::start(up.mqtt_port, "moved");
    until(
        Duration::from_secs(30),
        "the updated rule to route to topic moved",
        || {
            post(&url, &["-d", "after the update"]).0 == 200
                && moved.next_raw(Duration::from_millis(300)).is_some()
        },
    );
    up.ok(&["delete", "rule", "my-rule"]);
    until(
        Duration::from_secs(30),
        "the deleted rule to stop routing",
        || post(&url, &["-d", "x"]).0 == 404,
    );
}

#[test]
fn eventbus_to_rest_with_the_seed_commands_at_least_once() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let app = App::start(0);
    app::eventbus_to_app(&up, app.port);

    // The seed's command, once the edge has subscribed: the app receives exactly that body.
    let mut received = None;
    until(
        Duration::from_secs(30),
        "the message at the cloud app",
        || {
            mqtt::publish(up.mqtt_port, "default/test", r#"{"edgemsg":"msgtocloud"}"#);
            received = app.got.recv_timeout(Duration::from_millis(500)).ok();
            received.is_some()
        },
    );
    assert_eq!(
        received,
        Some((
            "kube-edge-1".to_string(),
            r#"{"edgemsg":"msgtocloud"}"#.to_string()
        ))
    );
    while app.got.try_recv().is_ok() {}

    // The app is down: the message waits in the edge's outbox and arrives once it is back.
    let port = app.stop();
    mqtt::publish(up.mqtt_port, "default/test", "sent while the app was down");
    let app = App::start(port);
    let got = app
        .got
        .recv_timeout(Duration::from_secs(30))
        .expect("delivered after the app came back");
    assert_eq!(got.1, "sent while the app was down");
}

/// A small app on a free port for `n` requests: each is answered `<status line>` with
/// `head` (header lines) and the body `echo` makes of the request, whose `header` is read.
fn app(
    n: usize,
    header: &'static str,
    status: &'static str,
    head: &'static str,
    echo: fn(&app::Request) -> String,
) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(stream) = stream else { continue };
            let mut req = read_request(stream, header);
            let body = echo(&req);
            let reply = format!(
                "HTTP/1.1 {status}\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = req.stream.write_all(reply.as_bytes());
        }
    });
    (port, thread)
}

/// An edge app for servicebus: it answers 201 with header `x-app: yes` and a body that echoes
/// the request: method, path and query, the `x-test` header, and the body.
fn echo_app() -> (u16, std::thread::JoinHandle<()>) {
    app(4, "x-test", "201 Created", "x-app: yes\r\n", |req| {
        let mut parts = req.line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("{method} {target} {} {}", req.header, req.body)
    })
}

/// `curl -X <method> -H 'x-test: t' [-d body] <url>` → (status, `x-app` header, body).
fn call(method: &str, url: &str, body: Option<&str>) -> (u16, bool, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-i", "-X", method, "-H", "x-test: t", url]);
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let app = head.to_ascii_lowercase().contains("x-app: yes");
    (status, app, body.to_string())
}

#[test]
fn rest_to_servicebus_carries_method_path_query_headers_and_body_both_ways() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let (port, app) = echo_app();
    servicebus_to_app(&up, port);
    let url = format!(
        "http://127.0.0.1:{}/kube-edge-1/default/source/x?y=1",
        up.router_port
    );
    let mut first = (0, false, String::new());
    until(
        Duration::from_secs(30),
        "the servicebus rule to take effect",
        || {
            first = call("GET", &url, None);
            first.0 != 404
        },
    );
    assert_eq!(first, (201, true, "GET /target/x?y=1 t ".to_string()));
    for (method, body) in [("POST", "created"), ("PUT", "replaced"), ("DELETE", "")] {
        let got = call(method, &url, Some(body));
        assert_eq!(
            got,
            (201, true, format!("{method} /target/x?y=1 t {body}")),
            "{method}"
        );
    }
    app.join().expect("app");
    // The app is gone: the edge cannot reach it, and says so.
    let (status, _, body) = call("GET", &url, None);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
}

#[test]
fn an_edge_killed_mid_request_is_a_prompt_503() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut edge = common::EdgeProc::start(&cloud, edge_dir.path(), "kube-edge-1", &cloud.token());
    // An app that takes requests and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hang.local_addr().expect("addr").port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reached_app = reached.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            held.push(s);
            reached_app.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = accepted_tx.send(());
        }
    });
    servicebus_to_app(&cloud, port);
    let url = format!(
        "http://127.0.0.1:{}/kube-edge-1/default/source",
        cloud.router_port
    );
    let caller = std::thread::spawn(move || {
        // Retried until the rule and the edge are there (404, 503); the call that reaches the
        // app hangs until the edge is killed.
        loop {
            let code = common::http_status(&["--max-time", "60", &url]);
            let waiting = code == "404" || code == "503";
            if !waiting || reached.load(std::sync::atomic::Ordering::SeqCst) {
                return (code, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    accepted
        .recv_timeout(Duration::from_secs(60))
        .expect("the request reached the app");
    let killed = Instant::now();
    edge.kill9();
    let (code, answered) = caller.join().expect("caller");
    assert_eq!(code, "503");
    assert!(
        answered.duration_since(killed) < Duration::from_secs(5),
        "answered {:?} after the kill",
        answered.duration_since(killed)
    );
}

#[test]
fn rules_wait_for_their_endpoints_and_rules_that_can_never_route_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    let ready = |rule: &str| {
        let at = |field: &str| {
            cloud.ok(&[
                "get",
                "rule",
                rule,
                "-o",
                &format!("jsonpath={{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
            ])
        };
        (at("status"), at("reason"), at("message"))
    };
    // Its endpoints do not exist yet: accepted, and its status says what it waits for.
    cloud.ok(&["create", "-f", &example("rule-rest-eventbus.yaml")]);
    until(
        Duration::from_secs(10),
        "the rule to say why it waits",
        || {
            let (status, reason, message) = ready("my-rule");
            status == "False" && reason == "EndpointMissing" && message.contains("my-rest")
        },
    );
    cloud.ok(&[
        "apply",
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("ruleEndpoint-eventbus.yaml"),
    ]);
    until(Duration::from_secs(10), "the rule to take effect", || {
        ready("my-rule").0 == "True"
    });
    // A second rule with the same source path.
    let copy = std::fs::read_to_string(example("rule-rest-eventbus.yaml"))
        .expect("rule")
        .replace("name: my-rule", "name: my-rule-copy");
    let out = cloud.with_stdin(&["create", "-f", "-"], &copy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already uses this source path"),
        "{err}"
    );
    // An unsupported pair: eventbus → eventbus.
    let bad = r#"{"apiVersion":"rules.kubeedge.io/v1","kind":"Rule","metadata":{"name":"loop","namespace":"default"},
        "spec":{"source":"my-eventbus","sourceResource":{"topic":"a","node_name":"n"},"target":"my-eventbus","targetResource":{"topic":"b"}}}"#;
    let out = cloud.with_stdin(&["create", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a supported route"),
        "{err}"
    );
    // A malformed source: a rest source needs a path.
    let no_path = r#"{"apiVersion":"rules.kubeedge.io/v1","kind":"Rule","metadata":{"name":"nopath","namespace":"default"},
        "spec":{"source":"my-rest","sourceResource":{},"target":"later","targetResource":{}}}"#;
    let out = cloud.with_stdin(&["create", "-f", "-"], no_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("path is required"),
        "{err}"
    );
}

/// `kubectl apply -f examples/` applies files in name order: the Rules (`rule-*`) before their
/// RuleEndpoints (`ruleEndpoint-*`), the Device before its DeviceModel. Everything is created
/// on the first run, and carries traffic.
#[test]
fn a_directory_applies_in_one_go_whatever_the_order() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let out = up.kubectl(&["apply", "-f", &common::examples().display().to_string()]);
    assert!(
        out.status.success(),
        "the first apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout).to_string();
    for what in [
        "rule.rules.kubeedge.io/my-rule created",
        "ruleendpoint.rules.kubeedge.io/my-rest created",
        "device.devices.kubeedge.io/counter created",
        "devicemodel.devices.kubeedge.io/counter-model created",
    ] {
        assert!(created.contains(what), "{what} in {created}");
    }
    // rest→eventbus carries traffic.
    let url = format!("http://127.0.0.1:{}/kube-edge-1/default/a", up.router_port);
    let mut test = Sub::start(up.mqtt_port, "test");
    until(
        Duration::from_secs(30),
        "the rule to carry a message",
        || {
            post(&url, &["-d", "first run"]).0 == 200
                && test
                    .next_raw(Duration::from_millis(500))
                    .is_some_and(|(_, p)| p == "first run")
        },
    );
    until(
        Duration::from_secs(10),
        "the rule's status to say it is in effect",
        || {
            let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
            up.ok(&["get", "rule", "my-rule", "-o", jsonpath]) == "True"
        },
    );
    // The device reached its edge with its model (applied after it): a property the model
    // lacks is refused naming the model's, and a good report lands in the cloud.
    let device = "$hw/events/device/default/counter";
    let mut result = Sub::start(up.mqtt_port, &format!("{device}/twin/update/result"));
    mqtt::ask(
        up.mqtt_port,
        &mut result,
        &format!("{device}/twin/update"),
        r#"{"event_id":"e","twin":{"nope":{"actual":{"value":"1"}}}}"#,
        Duration::from_secs(30),
        |v| v["code"] == 400 && v["reason"].as_str().is_some_and(|r| r.contains("status")),
    );
    mqtt::publish(
        up.mqtt_port,
        &format!("{device}/twin/update"),
        r#"{"event_id":"e","twin":{"status":{"actual":{"value":"7"}}}}"#,
    );
    until(Duration::from_secs(10), "the report at the cloud", || {
        up.ok(&[
            "get",
            "device",
            "counter",
            "-o",
            "jsonpath={.status.twins[0].reported.value}",
        ]) == "7"
    });
}

#[test]
fn an_edge_app_that_does_not_answer_is_a_504_at_the_configured_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud_with(dir.path(), 0, 0, 0, &["--router-timeout", "2s"]);
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let _edge = common::EdgeProc::start(&cloud, edge_dir.path(), "kube-edge-1", &cloud.token());
    // An app that takes requests and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hang.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let held: Vec<_> = hang.incoming().flatten().collect();
        drop(held);
    });
    servicebus_to_app(&cloud, port);
    let url = format!(
        "http://127.0.0.1:{}/kube-edge-1/default/source",
        cloud.router_port
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (code, took, body) = loop {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--max-time", "30", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        if code != "404" && code != "503" {
            break (code.to_string(), t.elapsed(), body.to_string());
        }
        assert!(Instant::now() < deadline, "the rule never took effect");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, "504", "{body}");
    assert!(body.contains("did not answer"), "{body}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn eventbus_messages_made_while_the_cloud_is_dead_arrive_after_it_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cloud = Kedge::cloud(dir.path());
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let edge = common::EdgeProc::start(&cloud, edge_dir.path(), "kube-edge-1", &cloud.token());
    let app = App::start(0);
    app::eventbus_to_app(&cloud, app.port);
    until(
        Duration::from_secs(30),
        "the first message at the app",
        || {
            mqtt::publish(edge.mqtt_port, "default/test", "first");
            app.got.recv_timeout(Duration::from_millis(500)).is_ok()
        },
    );
    while app.got.try_recv().is_ok() {}

    cloud.kill9();
    for i in 0..20 {
        mqtt::publish(
            edge.mqtt_port,
            "default/test",
            &format!("while the cloud was dead {i}"),
        );
    }
    let cloud = Kedge::cloud_on(dir.path(), cloud.port, cloud.hub_port, cloud.join_port);
    // At least once: every message arrives; a message in flight when the cloud died may come twice.
    let want: std::collections::BTreeSet<String> = (0..20)
        .map(|i| format!("while the cloud was dead {i}"))
        .collect();
    let mut got = std::collections::BTreeSet::new();
    while !want.is_subset(&got) {
        let (_, body) = app
            .got
            .recv_timeout(Duration::from_secs(60))
            .expect("every message after the restart");
        got.insert(body);
    }
    drop(cloud);
}

/// A device that publishes the instant a restarted edge's broker takes connections: its PUBACK
/// means the message is on its way (the broker admits devices only once the edge's EventBus has
/// subscribed the rule topics; before, such a message was confirmed to nobody and lost).
#[test]
fn a_message_published_the_instant_the_edge_restarts_arrives() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let flags = ["--mqtt-port", port.as_str()];
    let start = || {
        common::EdgeProc::start_with(
            &cloud,
            edge_dir.path(),
            "kube-edge-1",
            &cloud.token(),
            &flags,
        )
    };
    let app = App::start(0);
    app::eventbus_to_app(&cloud, app.port);
    for round in 0..5 {
        let mut edge = start();
        until(Duration::from_secs(30), "the rule in effect", || {
            mqtt::publish(edge.mqtt_port, "default/test", "warm-up");
            app.got.recv_timeout(Duration::from_millis(500)).is_ok()
        });
        while app.got.try_recv().is_ok() {}
        edge.kill9();
        // The device tries from before the edge starts: its first publish the new broker
        // confirms is as early as one can be.
        let body = format!("first after restart {round}");
        let device = {
            let (port, body) = (port.clone(), body.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let out = Command::new("mosquitto_pub")
                        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
                        .args(["-t", "default/test", "-m", &body])
                        .output()
                        .expect("mosquitto_pub runs");
                    if out.status.success() {
                        return true;
                    }
                }
                false
            })
        };
        let edge = start();
        assert!(
            device.join().expect("the device"),
            "the broker never took the message"
        );
        let mut got = Vec::new();
        while !got.contains(&body) {
            let (_, b) = app
                .got
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{body:?} never reached the app; got {got:?}"));
            got.push(b);
        }
        drop(edge);
    }
}

/// A message too large for the cloud–edge channel once encoded (13 MiB of binary: 17 MiB in
/// base64) is left out with a warning; it does not wedge the messages behind it.
#[test]
fn an_eventbus_message_too_large_for_the_channel_blocks_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let app = App::start(0);
    app::eventbus_to_app(&up, app.port);
    until(Duration::from_secs(30), "the rule in effect", || {
        mqtt::publish(up.mqtt_port, "default/test", "warm-up");
        app.got.recv_timeout(Duration::from_millis(500)).is_ok()
    });
    while app.got.try_recv().is_ok() {}
    let big = dir.path().join("big");
    let bytes: Vec<u8> = (0..13u32 << 20).map(|i| (i % 251) as u8 | 0x80).collect();
    std::fs::write(&big, bytes).expect("write");
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &up.mqtt_port.to_string()])
        .args(["-q", "1", "-t", "default/test", "-f"])
        .arg(&big)
        .output()
        .expect("mosquitto_pub runs");
    assert!(out.status.success(), "{out:?}");
    mqtt::publish(up.mqtt_port, "default/test", "after");
    let (_, body) = app
        .got
        .recv_timeout(Duration::from_secs(30))
        .expect("the next message arrives");
    assert_eq!(body, "after");
}

/// A cloud app for servicebus→rest: answers 202 with `<method> <NodeName header> <body>`.
fn cloud_echo_app() -> (u16, std::thread::JoinHandle<()>) {
    app(2, "nodename", "202 Accepted", "", |req| {
        let method = req.line.split_whitespace().next().unwrap_or("");
        format!("{method} {} {}", req.header, req.body)
    })
}

/// `curl -s -X POST -d <body> <url>` → (HTTP status, the JSON answer).
fn ask_servicebus(url: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = post(url, &["--data-binary", body]);
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[test]
fn servicebus_to_rest_with_kubeedges_request_and_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let sb = format!(
        "http://{}/",
        up.endpoints["servicebus"].trim_start_matches("http://")
    );
    let ask = |target: &str, method: &str, payload: &str| {
        let req = format!(r#"{{"method":"{method}","targetURL":"{target}","payload":{payload}}}"#);
        ask_servicebus(&sb, &req)
    };
    let target = "http://127.0.0.1:9000/echo";

    // No rule allows the target yet: refused at the edge, with KubeEdge's words.
    let (status, answer) = ask(target, "POST", r#""x""#);
    assert_eq!(
        (status, answer["code"].as_u64()),
        (404, Some(404)),
        "{answer}"
    );
    assert!(
        answer["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("is not allowed")
    );

    let (port, app) = cloud_echo_app();
    up.ok(&[
        "apply",
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("ruleEndpoint-servicebus.yaml"),
    ]);
    let rule = std::fs::read_to_string(example("rule-servicebus-rest.yaml"))
        .expect("rule")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    up.apply(&rule);

    let mut last = (0, serde_json::Value::Null);
    until(
        Duration::from_secs(30),
        "the rule to reach the edge",
        || {
            last = ask(target, "PUT", r#"{"a":1}"#);
            last.0 != 404
        },
    );
    assert_eq!(
        last,
        (
            202,
            serde_json::json!({"code": 202, "msg": "receive response from cloud successfully",
                "body": r#"PUT kube-edge-1 {"a":1}"#})
        )
    );
    // A string payload is the body as it is.
    let (status, answer) = ask(target, "POST", r#""hello""#);
    assert_eq!(
        (status, answer["body"].as_str()),
        (202, Some("POST kube-edge-1 hello"))
    );
    app.join().expect("the app served two calls");

    // The cloud app gone: the edge app hears so, promptly.
    let (status, answer) = ask(target, "POST", r#""again""#);
    assert_eq!(
        (status, answer["code"].as_u64()),
        (502, Some(502)),
        "{answer}"
    );

    // Not KubeEdge's request shape: 400, and nothing sent.
    let (status, answer) = ask_servicebus(&sb, "{not json");
    assert_eq!(
        (status, answer["code"].as_u64()),
        (400, Some(400)),
        "{answer}"
    );
    let (status, _) = ask("http://127.0.0.1:9000/other", "POST", "1");
    assert_eq!(status, 404);
    // The rule counts both calls the target answered and the one it could not take.
    let counts = "jsonpath={.status.successMessages}/{.status.failMessages}";
    until(Duration::from_secs(30), "the rule's counts", || {
        up.ok(&["get", "rule", "my-rule-servicebus-rest", "-o", counts]) == "2/1"
    });
}
