//! A damaged store at start: a clear error naming the file and the way out, the file left as it
//! was (so it can still be recovered), and the same answer on every start — never a panic loop.

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
            .args([
                "cloud",
                "--bind",
                "127.0.0.1",
                "--api-port",
                "0",
                "--hub-port",
                "0",
            ])
            .args([
                "--https-port",
                "0",
                "--metrics-port",
                "0",
                "--router-port",
                "0",
            ])
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
