//! A full disk at the edge (its data directory on a small tmpfs) while the cloud is away: the
//! edge keeps running, says what is wrong, confirms to devices only what it stored (leaving
//! SQLite the room it needs to delete and checkpoint), and once the cloud is back every
//! confirmed message arrives and new ones are taken again.

#[path = "common/app.rs"]
mod app;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{EdgeProc, Kedge, wait_until};

/// A tmpfs of `mib` MiB mounted on a fresh directory (the tests run as root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).output();
    }
}

/// A device's `mosquitto_pub -q 1`: true once the broker confirmed (PUBACK) within 5 s.
fn publish(port: u16, payload: &Path) -> bool {
    Command::new("timeout")
        .args(["-s", "KILL", "5", "mosquitto_pub", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "default/test",
            "-f",
        ])
        .arg(payload)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A 32 KiB message whose first line names it.
fn message(dir: &Path, i: usize) -> (PathBuf, String) {
    let name = format!("message {i}");
    let body = format!("{name}\n{}", "x".repeat(32 << 10));
    let path = dir.join(format!("m{i}"));
    std::fs::write(&path, &body).expect("write");
    (path, name)
}

#[test]
fn a_full_disk_at_the_edge_loses_nothing_and_recovers() {
    let disk = Tmpfs::mount(16);
    let scratch = tempfile::tempdir().expect("scratch");
    let cloud_dir = tempfile::tempdir().expect("cloud dir");
    let mut cloud = Kedge::cloud(cloud_dir.path());
    let app = app::App::start(0);
    app::eventbus_to_app(&cloud, app.port);
    let (edge, log) = EdgeProc::start_logged(&cloud, &disk.path(), "kube-edge-1", &cloud.token());
    let first = |b: &str| b.lines().next().unwrap_or_default().to_string();
    let (warm, _) = message(scratch.path(), 0);
    wait_until(
        Duration::from_secs(30),
        "a first message at the app",
        || {
            publish(edge.mqtt_port, &warm);
            app.got.recv_timeout(Duration::from_millis(500)).ok()
        },
    );

    // The cloud is away: messages wait in the edge's outbox until the disk is full.
    cloud.kill9();
    let mut confirmed = Vec::new();
    let mut refused = None;
    for i in 1..400 {
        let (path, name) = message(scratch.path(), i);
        if publish(edge.mqtt_port, &path) {
            confirmed.push(name);
        } else {
            refused = Some((path, name));
            break;
        }
    }
    let (refused_path, refused_name) = refused.expect("the 16 MiB disk filled up");
    assert!(confirmed.len() > 10, "{} confirmed first", confirmed.len());
    let said = wait_until(Duration::from_secs(10), "the edge to say why", || {
        log.try_iter().find(|l| l.contains("held back"))
    });
    assert!(said.contains("the outbox or the disk is full"), "{said}");

    // Back: everything confirmed arrives, the space it took is freed, and the device's retry of
    // the refused message goes through.
    let _cloud = Kedge::cloud_on(
        cloud_dir.path(),
        cloud.port,
        cloud.hub_port,
        cloud.join_port,
    );
    let mut got = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !confirmed.iter().all(|m| got.contains(m)) {
        assert!(
            Instant::now() < deadline,
            "confirmed messages missing at the app"
        );
        if let Ok((_, body)) = app.got.recv_timeout(Duration::from_millis(200)) {
            got.insert(first(&body));
        }
    }
    wait_until(
        Duration::from_secs(60),
        "the refused message, sent again",
        || publish(edge.mqtt_port, &refused_path).then_some(()),
    );
    wait_until(
        Duration::from_secs(30),
        "the refused message at the app",
        || {
            let (_, body) = app.got.recv_timeout(Duration::from_millis(200)).ok()?;
            (first(&body) == refused_name).then_some(())
        },
    );
    drop(edge);
}
