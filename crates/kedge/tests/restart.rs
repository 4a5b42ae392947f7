//! Durability and watch resumption across kill -9 of the real `kedge` process.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Kedge, wait_until};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Mutex;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": name}})).expect("cm")
}

/// Every write that got a 2xx before kill -9 is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kedge = Kedge::up(dir.path(), 0);
    let client = kedge.client().await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, acked, stop) = (
            Api::<ConfigMap>::namespaced(client.clone(), "default"),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{i}");
                if api.create(&PostParams::default(), &cm(&name)).await.is_ok() {
                    acked.lock().await.insert(name);
                }
                i += 1;
            }
        }));
    }
    // Kill in the middle of the burst, once a good number of writes have been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().await.len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes are too slow"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kedge.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();

    let kedge = Kedge::up(dir.path(), 0);
    let api = Api::<ConfigMap>::namespaced(kedge.client().await, "default");
    let stored: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() >= 300);
}

/// A kube-rs watcher keeps its place across a server restart: no relist, no missed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kedge = Kedge::up(dir.path(), 0);
    let port = kedge.port;
    let client = kedge.client().await;
    let api = Api::<ConfigMap>::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("before"))
        .await
        .expect("create");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(ev) = ev {
                let _ = tx.send(ev);
            }
        }
    });
    let mut seen = Vec::new();
    let mut next_until = async |want: &str, seen: &mut Vec<String>| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {want}; saw {seen:?}"))
                .expect("watcher ended");
            let label = match ev {
                watcher::Event::Init => "init".to_string(),
                watcher::Event::InitApply(c) => {
                    format!("initapply:{}", c.metadata.name.unwrap_or_default())
                }
                watcher::Event::InitDone => "initdone".to_string(),
                watcher::Event::Apply(c) => {
                    format!("apply:{}", c.metadata.name.unwrap_or_default())
                }
                watcher::Event::Delete(c) => {
                    format!("delete:{}", c.metadata.name.unwrap_or_default())
                }
            };
            seen.push(label.clone());
            if label == want {
                return;
            }
        }
    };
    next_until("initdone", &mut seen).await;
    api.create(&PostParams::default(), &cm("live"))
        .await
        .expect("create");
    next_until("apply:live", &mut seen).await;

    kedge.kill9();
    let kedge = Kedge::up(dir.path(), port);
    wait_until(Duration::from_secs(10), "restarted API", || {
        kedge
            .ok(&["get", "ns", "default", "-o", "name"])
            .contains("default")
            .then_some(())
    });
    api.create(&PostParams::default(), &cm("after"))
        .await
        .expect("create after restart");
    api.delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    next_until("apply:after", &mut seen).await;
    next_until("delete:before", &mut seen).await;
    assert_eq!(
        seen.iter().filter(|s| *s == "init").count(),
        1,
        "no relist: {seen:?}"
    );
}

/// A second process on the same data directory is refused with a clear message.
#[test]
fn one_process_per_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Kedge::up(dir.path(), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["up", "--api-port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("second kedge runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another kedge process"), "{err}");
}

/// `kedge token` prints a join token for the cloud in a data directory, and says what to do
/// when there is no cloud there yet.
#[test]
fn token_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = |d: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
            .args(["token", "--ttl", "1h", "--data-dir"])
            .arg(d)
            .output()
            .expect("kedge token runs")
    };
    let none = token(dir.path());
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("start `kedge cloud"));
    let _cloud = Kedge::up(dir.path(), 0);
    let out = token(dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let (hash, jwt) = text.trim().split_once('.').expect("hash.jwt");
    assert_eq!(hash.len(), 64);
    assert_eq!(jwt.split('.').count(), 3);
}
