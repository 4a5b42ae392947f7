//! A private containerd for Edged's tests: its own config, root, state and socket under a
//! temporary directory (never the machine's containerd), run in its own PID and mount
//! namespaces so that everything it started — shims, containers, mounts — goes with it. Two
//! images are imported from tarballs built from the host's static busybox (no registry is
//! reachable): the test image and the pause image CRI needs for pod sandboxes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::wait_until;

/// The image test pods run (busybox: `sh`, `sleep`, `nc`, `httpd`, …).
pub const IMAGE: &str = "kedge.local/busybox:1";
const PAUSE: &str = "kedge.local/pause:1";

pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The host bridge of the CNI network, when there is one.
    bridge: Option<String>,
}

/// A bridge network for pods without hostNetwork: its own bridge and subnet (so that tests in
/// parallel do not meet), addresses kept under the test's directory.
fn cni_config(dir: &Path, bridge: &str, subnet: u8) -> String {
    format!(
        r#"{{"cniVersion": "0.4.0", "name": "{bridge}", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{}", "ranges": [[{{"subnet": "10.213.{subnet}.0/24"}}]]}}}},
  {{"type": "loopback"}}]}}"#,
        dir.join("ipam").display()
    )
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oci-image.py")
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_port = "0"
  # Leave the OOM score as it is: this sandbox may not lower it (runc would fail).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
"#
    )
}

impl Containerd {
    pub fn start() -> Containerd {
        Self::start_inner(false)
    }

    /// With a CNI bridge network, for pods that do not use the host's network.
    pub fn start_with_cni() -> Containerd {
        Self::start_inner(true)
    }

    fn start_inner(cni: bool) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("kc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let path = dir.path();
        std::fs::create_dir_all(path.join("net.d")).expect("net.d");
        std::fs::write(path.join("config.toml"), config(path)).expect("config");
        let bridge = cni.then(|| {
            // A bridge and subnet of its own per containerd, also among those one test starts
            // (sharing one, the first to stop would take the others' network with it).
            static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let k = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = (std::process::id() + k * 37) % 200 + 20;
            let bridge = format!("kc{n}");
            let conf = cni_config(path, &bridge, n as u8);
            std::fs::write(path.join("net.d/10-kedge.conflist"), conf).expect("cni config");
            bridge
        });
        let log = std::fs::File::create(path.join("containerd.log")).expect("log");
        let child = Command::new("unshare")
            .args(["--pid", "--mount", "--fork", "--kill-child", "--mount-proc"])
            .arg("containerd")
            .arg("--config")
            .arg(path.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts (apt-get install containerd runc)");
        let c = Containerd {
            child,
            socket: path.join("c.sock"),
            dir,
            bridge,
        };
        wait_until(Duration::from_secs(20), "containerd answers", || {
            c.ctr(&["version"]).ok()
        });
        c.import("busybox.tar", IMAGE, &["sh"]);
        c.import("pause.tar", PAUSE, &["sleep", "2147483647"]);
        c
    }

    /// `unix://…` for `--cri-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn import(&self, file: &str, reference: &str, cmd: &[&str]) {
        let tar = self.dir.path().join(file);
        let out = Command::new("python3")
            .arg(script())
            .arg(&tar)
            .arg(reference)
            .args(cmd)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = tar.display().to_string();
        self.ctr(&["images", "import", &tar])
            .expect("image imported");
    }

    /// `ctr -n k8s.io <args>` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// IDs of the running containers of pod `name` (their tasks are RUNNING), sandboxes aside.
    pub fn running(&self, pod: &str) -> Vec<String> {
        let filter = format!(
            "labels.\"io.kubernetes.pod.name\"=={pod},labels.\"io.cri-containerd.kind\"==container"
        );
        let ids = self
            .ctr(&["containers", "ls", "-q", &filter])
            .unwrap_or_default();
        let tasks = self.ctr(&["tasks", "ls"]).unwrap_or_default();
        ids.lines()
            .filter(|id| {
                tasks
                    .lines()
                    .any(|t| t.starts_with(*id) && t.contains("RUNNING"))
            })
            .map(String::from)
            .collect()
    }

    /// Every container (and sandbox) of pod `name` this containerd holds.
    pub fn all_of(&self, pod: &str) -> Vec<String> {
        let filter = format!("labels.\"io.kubernetes.pod.name\"=={pod}");
        let ids = self
            .ctr(&["containers", "ls", "-q", &filter])
            .unwrap_or_default();
        ids.lines().map(String::from).collect()
    }

    /// Kills and deletes a container behind Edged's back.
    pub fn remove_by_hand(&self, id: &str) {
        let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
        wait_until(Duration::from_secs(10), "the task stopped", || {
            let tasks = self.ctr(&["tasks", "ls"]).unwrap_or_default();
            (!tasks
                .lines()
                .any(|t| t.starts_with(id) && t.contains("RUNNING")))
            .then_some(())
        });
        let _ = self.ctr(&["tasks", "delete", id]);
        self.ctr(&["containers", "delete", id])
            .expect("container deleted");
    }
}

impl Containerd {
    /// Stops containerd and everything it started (containerd is PID 1 of its namespace).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip").args(["link", "delete", b]).status();
        }
    }
}
