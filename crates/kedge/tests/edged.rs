//! Edged with a real containerd (private, see `common/cri.rs`), the real `kedge` binary and
//! kubectl: pods run, report, restart, stop, and keep running while the cloud is away.

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{EdgeProc, Kedge, wait_until};
use cri::{Containerd, IMAGE};

const NODE: &str = "kube-edge-1";

fn up(ctrd: &Containerd, dir: &Path, extra: &[&str]) -> Kedge {
    let endpoint = ctrd.endpoint();
    let mut args = vec!["--cri-endpoint", endpoint.as_str()];
    args.extend(extra);
    Kedge::up_with(dir, 0, &args)
}

/// `kubectl get pod <pod> -o jsonpath=<path>`, empty while the pod or field is missing.
fn field(k: &Kedge, pod: &str, path: &str) -> String {
    let out = k.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod on the edge node running `script` in the test image, with hostNetwork (no CNI).
fn pod(name: &str, script: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  hostNetwork: true\n{extra_spec}  containers:\n  - name: main\n    image: {IMAGE}\n    command: [sh, -c, '{script}']\n"
    )
}

/// Waits until the pod runs and is ready; its container ID (without `containerd://`).
fn running(k: &Kedge, name: &str) -> String {
    let what = format!("{name} Running and ready");
    let path = "{.status.phase} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].containerID}";
    wait_until(Duration::from_secs(60), &what, || {
        let f = field(k, name, path);
        let mut it = f.split(' ');
        match (it.next(), it.next(), it.next()) {
            (Some("Running"), Some("true"), Some(id)) => {
                id.strip_prefix("containerd://").map(String::from)
            }
            _ => None,
        }
    })
}

#[test]
fn a_pod_runs_with_its_env_and_configmap_reports_and_stops_within_its_grace_period() {
    let ctrd = Containerd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let out = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &[]);
    let version = wait_until(Duration::from_secs(30), "the runtime in nodeInfo", || {
        let out = k.kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
        ]);
        let v = String::from_utf8_lossy(&out.stdout).into_owned();
        v.starts_with("containerd://").then_some(v)
    });
    assert!(version.len() > "containerd://".len(), "{version}");

    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  greeting: hello\n  app.conf: mode=fast\n";
    k.apply(config);
    let script = "trap \"echo bye > /out/term; exit 0\" TERM; echo \"$GREETING $PLAIN\" > /out/env; cat /etc/app/app.conf > /out/conf; while true; do sleep 1; done";
    let spec = format!(
        "  terminationGracePeriodSeconds: 20\n  volumes:\n  - name: conf\n    configMap: {{name: app-config}}\n  - name: out\n    hostPath: {{path: {}}}\n",
        out.path().display()
    );
    let mut yaml = pod("sleeper", script, &spec);
    yaml.push_str("    env:\n    - name: GREETING\n      valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}\n    - {name: PLAIN, value: world}\n");
    yaml.push_str("    volumeMounts:\n    - {name: conf, mountPath: /etc/app}\n    - {name: out, mountPath: /out}\n");
    k.apply(&yaml);

    let id = running(&k, "sleeper");
    assert_eq!(
        ctrd.running("sleeper"),
        vec![id.clone()],
        "the reported container is the one running"
    );
    assert_eq!(
        field(&k, "sleeper", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(
        field(&k, "sleeper", "{.status.podIP}"),
        field(&k, "sleeper", "{.status.hostIP}")
    );
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap_or_default();
    wait_until(Duration::from_secs(10), "the container's files", || {
        (!read("conf").is_empty()).then_some(())
    });
    assert_eq!(
        read("env"),
        "hello world\n",
        "env from the ConfigMap and a value"
    );
    assert_eq!(read("conf"), "mode=fast", "the mounted ConfigMap");

    // Graceful deletion: the container gets SIGTERM, the pod goes once it stopped, well
    // within the 20 s grace period.
    let started = Instant::now();
    k.ok(&["delete", "pod", "sleeper"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(read("term"), "bye\n", "SIGTERM reached the container");
    wait_until(
        Duration::from_secs(10),
        "the pod's containers and sandbox removed",
        || ctrd.all_of("sleeper").is_empty().then_some(()),
    );
}

#[test]
fn a_crashing_container_restarts_with_a_growing_back_off() {
    let ctrd = Containerd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &["--restart-backoff", "1"]);
    k.apply(&pod("crasher", "exit 1", ""));
    let mut delays = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let path = "{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].state.waiting.message}";
    loop {
        assert!(Instant::now() < deadline, "restarts {delays:?}");
        let f = field(&k, "crasher", path);
        let (count, message) = f.split_once('|').unwrap_or(("", ""));
        let delay = message
            .strip_prefix("back-off ")
            .and_then(|m| m.split('s').next()?.parse::<u64>().ok());
        if let Some(d) = delay
            && delays.last() != Some(&d)
        {
            delays.push(d);
        }
        if count.parse::<u32>().unwrap_or(0) >= 3 && delays.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "back-off grows: {delays:?}"
    );
    assert_eq!(
        field(
            &k,
            "crasher",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    assert_eq!(field(&k, "crasher", "{.status.phase}"), "Running");
}

#[test]
fn a_missing_image_shows_in_the_status_and_nothing_else_suffers() {
    let ctrd = Containerd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &[]);
    let never = pod("never", "sleep 600", "").replace(IMAGE, "kedge.local/missing:1")
        + "    imagePullPolicy: Never\n";
    k.apply(&never);
    k.apply(&pod("pull", "sleep 600", "").replace(IMAGE, "kedge.invalid/missing:1"));
    k.apply(&pod("fine", "sleep 600", ""));
    let reason = |p: &str| field(&k, p, "{.status.containerStatuses[0].state.waiting.reason}");
    wait_until(Duration::from_secs(60), "ErrImageNeverPull", || {
        (reason("never") == "ErrImageNeverPull").then_some(())
    });
    wait_until(
        Duration::from_secs(60),
        "the pull fails and backs off",
        || matches!(reason("pull").as_str(), "ErrImagePull" | "ImagePullBackOff").then_some(()),
    );
    assert_eq!(field(&k, "never", "{.status.phase}"), "Pending");
    running(&k, "fine");
    let ready = k.ok(&[
        "get",
        "node",
        NODE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True");
}

#[test]
fn an_edge_restarted_without_the_cloud_adopts_its_pods_and_restores_lost_ones() {
    let ctrd = Containerd::start();
    let cloud_dir = tempfile::tempdir().expect("tmp");
    let edge_dir = tempfile::tempdir().expect("tmp");
    let mut cloud = Kedge::cloud(cloud_dir.path());
    let endpoint = ctrd.endpoint();
    let flags = ["--cri-endpoint", endpoint.as_str()];
    let token = cloud.token();
    let mut edge = EdgeProc::start_with(&cloud, edge_dir.path(), NODE, &token, &flags);
    cloud.apply(&pod("steady", "sleep 3600", ""));
    cloud.apply(&pod("fragile", "sleep 3600", ""));
    let steady = running(&cloud, "steady");
    let fragile = running(&cloud, "fragile");

    cloud.kill9();
    edge.kill9();
    ctrd.remove_by_hand(&fragile);
    let _edge = EdgeProc::start_with(&cloud, edge_dir.path(), NODE, &token, &flags);
    let back = wait_until(
        Duration::from_secs(60),
        "the lost container restored, cloud down",
        || {
            let ids = ctrd.running("fragile");
            (ids.len() == 1 && ids[0] != fragile).then(|| ids[0].clone())
        },
    );
    assert_eq!(
        ctrd.running("steady"),
        vec![steady.clone()],
        "the healthy pod was adopted, not restarted"
    );

    // Once the cloud is back, it hears about both.
    let cloud = Kedge::cloud_on(
        cloud_dir.path(),
        cloud.port,
        cloud.hub_port,
        cloud.join_port,
    );
    wait_until(
        Duration::from_secs(60),
        "the restored container reported",
        || (running(&cloud, "fragile") == back).then_some(()),
    );
    assert_eq!(running(&cloud, "steady"), steady);
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn probes_gate_readiness_and_restart_what_is_not_alive() {
    let ctrd = Containerd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &["--restart-backoff", "1"]);
    let (web, closed) = (free_port(), free_port());
    // Serves only after 3 s: not ready until then; its liveness (exec) passes.
    let script = format!(
        "sleep 3; mkdir -p /www; echo ok > /www/index.html; httpd -f -p 127.0.0.1:{web} -h /www"
    );
    let mut yaml = pod("web", &script, "");
    yaml.push_str(&format!(
        "    readinessProbe: {{httpGet: {{port: {web}, path: /index.html}}, periodSeconds: 1}}\n"
    ));
    yaml.push_str("    livenessProbe: {exec: {command: [cat, /www/index.html]}, initialDelaySeconds: 8, periodSeconds: 1}\n");
    k.apply(&yaml);
    // Nothing listens where this one's liveness probe looks: it is restarted.
    let mut yaml = pod("dead", "sleep 3600", "");
    yaml.push_str(&format!("    livenessProbe: {{tcpSocket: {{port: {closed}}}, periodSeconds: 1, failureThreshold: 2}}\n"));
    k.apply(&yaml);

    wait_until(Duration::from_secs(30), "web running but not ready", || {
        let f = field(
            &k,
            "web",
            "{.status.phase} {.status.containerStatuses[0].ready}",
        );
        (f == "Running false").then_some(())
    });
    let id = running(&k, "web");
    wait_until(
        Duration::from_secs(60),
        "dead restarted by its liveness probe",
        || {
            let n = field(&k, "dead", "{.status.containerStatuses[0].restartCount}");
            (n.parse::<u32>().unwrap_or(0) >= 1).then_some(())
        },
    );
    assert!(
        !field(
            &k,
            "dead",
            "{.status.containerStatuses[0].lastState.terminated.finishedAt}"
        )
        .is_empty()
    );
    assert_eq!(
        running(&k, "web"),
        id,
        "a passing liveness probe leaves the container alone"
    );
    assert_eq!(
        field(&k, "web", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

#[test]
fn a_pod_without_host_network_gets_an_address_from_the_runtimes_cni() {
    let ctrd = Containerd::start_with_cni();
    let dir = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &[]);
    let script = "mkdir -p /www; echo ok > /www/index.html; httpd -f -p 8080 -h /www";
    let mut yaml = pod("web", script, "").replace("  hostNetwork: true\n", "");
    yaml.push_str(
        "    readinessProbe: {httpGet: {port: 8080, path: /index.html}, periodSeconds: 1}\n",
    );
    k.apply(&yaml);
    running(&k, "web");
    let ip = field(&k, "web", "{.status.podIP}");
    assert!(ip.starts_with("10.213."), "the pod's own address: {ip}");
    assert_ne!(ip, field(&k, "web", "{.status.hostIP}"));
}

#[test]
fn the_node_is_ready_only_while_its_runtime_answers() {
    let mut ctrd = Containerd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let k = up(&ctrd, dir.path(), &[]);
    let ready = |k: &Kedge| {
        let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason}";
        k.ok(&["get", "node", NODE, "-o", path])
    };
    wait_until(Duration::from_secs(30), "Ready with the runtime", || {
        (ready(&k) == "True EdgeReady").then_some(())
    });
    ctrd.kill();
    wait_until(Duration::from_secs(30), "NotReady without it", || {
        (ready(&k) == "False ContainerRuntimeDown").then_some(())
    });
}
