//! What users do while the faults happen: devices publish with the real mosquitto_pub inside the
//! edge's namespace (eventbus→rest messages and twin reports), and an operator changes desired
//! values with kubectl. Each keeps retrying an operation until it is acknowledged (PUBACK, or
//! kubectl's success), as real devices and scripts do; an acknowledged operation is "made" and
//! must show at the other side.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::net::Net;
use crate::rig::MQTT_PORT;

/// How long one operation may keep failing before the run is declared broken.
const GIVE_UP: Duration = Duration::from_secs(180);

#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Operations acknowledged: 0..made were all made.
    pub made: u64,
    /// Attempts that failed (and were retried).
    pub refused: u64,
}

impl Tally {
    /// The value the last acknowledged operation carried.
    pub fn last(&self) -> Option<u64> {
        self.made.checked_sub(1)
    }
}

/// Runs `op(n)` for n = 0, 1, … until `stop`, each until it succeeds; the operation under way
/// when `stop` is set is finished first.
fn repeat(
    stop: Arc<AtomicBool>,
    what: String,
    op: impl Fn(u64) -> bool + Send + 'static,
) -> JoinHandle<Tally> {
    std::thread::spawn(move || {
        let mut t = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            let since = Instant::now();
            while !op(t.made) {
                t.refused += 1;
                assert!(
                    since.elapsed() < GIVE_UP,
                    "{what} {} failed for {GIVE_UP:?}",
                    t.made
                );
                // A device's retry interval, not a synchronisation.
                std::thread::sleep(Duration::from_millis(100));
            }
            t.made += 1;
        }
        t
    })
}

/// `mosquitto_pub -q 1` inside the namespace: true once the broker's PUBACK came.
fn publish(ns: &str, client: &str, topic: &str, payload: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "timeout",
            "-s",
            "KILL",
            "60",
            "mosquitto_pub",
        ])
        .args(["-h", "127.0.0.1", "-p", MQTT_PORT, "-q", "1", "-i", client])
        .args(["-t", topic, "-m", payload])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A device publishing `m-<n>` on the eventbus→rest rule's topic.
pub fn bus_messages(net: &Net, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
    let ns = net.ns.clone();
    repeat(stop, "eventbus message".into(), move |n| {
        publish(&ns, "fault-bus", "default/test", &format!("m-{n}"))
    })
}

/// A device reporting its twin `status` as `<n>`.
pub fn twin_reports(net: &Net, device: &str, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
    let ns = net.ns.clone();
    let topic = format!("$hw/events/device/default/{device}/twin/update");
    let client = format!("fault-{device}");
    repeat(stop, format!("{device} twin report"), move |n| {
        let body = format!(
            r#"{{"event_id":"e{n}","timestamp":0,"twin":{{"status":{{"actual":{{"value":"{n}"}}}}}}}}"#
        );
        publish(&ns, &client, &topic, &body)
    })
}

/// `kubectl patch` of a device's desired `status` to `d-<n>`.
pub fn desired_changes(
    kubeconfig: PathBuf,
    device: &str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Tally> {
    let device = device.to_string();
    repeat(stop, format!("{device} desired change"), move |n| {
        let patch = format!(
            r#"[{{"op":"replace","path":"/status/twins/0/desired/value","value":"d-{n}"}}]"#
        );
        let ok = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--request-timeout=10s", "patch", "device", &device])
            .args(["--type=json", "-p", &patch])
            .output()
            .is_ok_and(|o| o.status.success());
        // A desired change every half second or so, like an operator's script.
        std::thread::sleep(Duration::from_millis(400));
        ok
    })
}
