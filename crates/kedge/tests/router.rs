//! The router with the seed's commands: real curl against `kedge up`'s REST listener, real
//! mosquitto_sub on the edge's broker, rules changed with kubectl.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Kedge;
use mqtt::Sub;

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
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
