//! A damaged store at start: a clear error naming the file and the way out, the file left as it
//! was (so it can still be recovered), and the same answer on every start — never a panic loop.
//! A store in use by another process: refused, so one store never has two writers.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn a_damaged_api_store_is_refused_clearly_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("apiserver.db");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db, &garbage).expect("write");
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kedge"))
            .args(["cloud", "--bind", "127.0.0.1"])
            .args(common::CLOUD_FREE_PORTS)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kedge starts");
        // It must stop by itself, promptly.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("kedge cloud kept running on a damaged store");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!err.contains("panicked"), "{err}");
        for want in [
            "apiserver.db",
            "file is not a database",
            "damaged",
            "backup",
            "aside",
        ] {
            assert!(err.contains(want), "no {want:?} in: {err}");
        }
        assert_eq!(
            std::fs::read(&db).expect("read"),
            garbage,
            "the file is left as it was"
        );
    }
}

/// Runs `kedge edge` on `dir` expecting it to stop by itself, promptly; returns its stderr.
fn edge_refuses(cloud: &common::Kedge, dir: &std::path::Path) -> String {
    let out = Command::new("timeout")
        .args(["-s", "KILL", "30"])
        .arg(env!("CARGO_BIN_EXE_kedge"))
        .args(["edge", "--node-name", "kube-edge-1", "--cloud", "127.0.0.1"])
        .args(["--hub-port", &cloud.hub_port.to_string()])
        .args(["--https-port", &cloud.join_port.to_string()])
        .args([
            "--mqtt-port",
            "0",
            "--servicebus-port",
            "0",
            "--metrics-port",
            "0",
            "--cri-endpoint",
            "none",
        ])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("kedge edge runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "it stops with an error: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A damaged edge store: wholly (not a database) or in part (a torn page after its header).
#[test]
fn a_damaged_edge_store_is_refused_clearly_and_left_untouched() {
    let cloud_dir = tempfile::tempdir().expect("cloud dir");
    let cloud = common::Kedge::cloud(cloud_dir.path());
    let dir = tempfile::tempdir().expect("edge dir");
    let mut edge = common::EdgeProc::start(&cloud, dir.path(), "kube-edge-1", &cloud.token());
    edge.kill9();
    let db = dir.path().join("edge.db");
    // Fold the WAL in, so the damage below is what the edge opens.
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    drop(c);
    let good = std::fs::read(&db).expect("read");
    assert!(good.len() >= 3 * 4096, "a store of a few pages");
    let torn: Vec<u8> = good[..4096]
        .iter()
        .copied()
        .chain((0..4096u32).map(|i| (i * 7919 % 251) as u8))
        .chain(good[8192..].iter().copied())
        .collect();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 253) as u8).collect();
    for damage in [torn, garbage] {
        std::fs::write(&db, &damage).expect("write");
        for _ in 0..2 {
            let err = edge_refuses(&cloud, dir.path());
            for want in [
                "edge.db",
                "damaged",
                "backup",
                "aside",
                "from the cloud again",
            ] {
                assert!(err.contains(want), "no {want:?} in: {err}");
            }
            assert_eq!(std::fs::read(&db).expect("read"), damage, "left as it was");
        }
    }
    // Moved aside, as the message says: the edge starts afresh.
    std::fs::rename(&db, dir.path().join("edge.db.damaged")).expect("move aside");
    let _edge = common::EdgeProc::start(&cloud, dir.path(), "kube-edge-1", "");
    // A second edge on the same data directory is refused while the first runs.
    let err = edge_refuses(&cloud, dir.path());
    assert!(err.contains("in use by another kedge edge"), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
}
