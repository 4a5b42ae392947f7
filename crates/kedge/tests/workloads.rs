//! Workloads with zero set-up: real kubectl against `kedge up`, two edges each with its own
//! real containerd (with a CNI bridge: `kubectl create deployment` pods use the pod network).
//! Deployments roll out, scale, update, undo and go with their ReplicaSets and pods; the
//! scheduler places pods by selectors and says why one fits nowhere.

mod common;
#[path = "common/cri.rs"]
#[allow(dead_code)] // the helpers Edged's tests use
mod cri;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{EdgeProc, Kedge, wait_until};
use cri::{Containerd, IMAGE};

const IMAGE2: &str = "kedge.local/busybox:2";

fn get(k: &Kedge, args: &[&str]) -> String {
    String::from_utf8_lossy(&k.kubectl(args).stdout)
        .trim()
        .to_string()
}

/// `<node> <image> <phase>` of each pod of the app, sorted.
fn pods(k: &Kedge, app: &str) -> Vec<String> {
    let path = "{range .items[*]}{.spec.nodeName} {.spec.containers[0].image} {.status.phase}{\"\\n\"}{end}";
    let out = get(
        k,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            &format!("jsonpath={path}"),
        ],
    );
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

fn rollout(k: &Kedge, what: &str) -> String {
    k.ok(&["rollout", "status", what, "--timeout=120s"])
}

/// Waits until the app has exactly `n` pods, all Running with `image`; their nodes.
fn running(k: &Kedge, app: &str, n: usize, image: &str) -> BTreeSet<String> {
    wait_until(
        Duration::from_secs(120),
        &format!("{n} pods of {app} running {image}"),
        || {
            let ps = pods(k, app);
            let ok = ps.len() == n && ps.iter().all(|p| p.ends_with(&format!(" {image} Running")));
            ok.then(|| {
                ps.iter()
                    .filter_map(|p| p.split(' ').next().map(String::from))
                    .collect()
            })
        },
    )
}

#[test]
fn a_deployment_runs_scales_updates_undoes_and_goes_with_its_replica_sets() {
    let (c1, c2) = (Containerd::start_with_cni(), Containerd::start_with_cni());
    for c in [&c1, &c2] {
        c.ctr(&["images", "tag", IMAGE, IMAGE2])
            .expect("second tag");
    }
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let e1 = c1.endpoint();
    let k = Kedge::up_with(d1.path(), 0, &["--cri-endpoint", &e1]);
    let e2 = c2.endpoint();
    let _edge2 = EdgeProc::start_with(
        &k,
        d2.path(),
        "edge-2",
        &k.token(),
        &["--cri-endpoint", &e2],
    );
    wait_until(Duration::from_secs(60), "edge-2 Ready", || {
        (k.node_ready("edge-2") == "True").then_some(())
    });

    k.ok(&[
        "create",
        "deployment",
        "hello",
        &format!("--image={IMAGE}"),
        "--",
        "sleep",
        "3600",
    ]);
    let out = rollout(&k, "deployment/hello");
    assert!(out.contains("successfully rolled out"), "{out}");
    running(&k, "hello", 1, IMAGE);
    let cols = k.ok(&["get", "deployment", "hello"]);
    assert!(
        cols.contains("READY") && cols.contains("UP-TO-DATE") && cols.contains("AVAILABLE"),
        "{cols}"
    );
    assert!(cols.contains("1/1"), "{cols}");

    k.ok(&["scale", "deployment", "hello", "--replicas=5"]);
    rollout(&k, "deployment/hello");
    let nodes = running(&k, "hello", 5, IMAGE);
    assert_eq!(
        nodes,
        BTreeSet::from(["edge-2".to_string(), "kube-edge-1".to_string()]),
        "spread over both edges"
    );
    k.ok(&["scale", "deployment", "hello", "--replicas=0"]);
    wait_until(Duration::from_secs(60), "no pods of hello", || {
        pods(&k, "hello").is_empty().then_some(())
    });

    k.ok(&["scale", "deployment", "hello", "--replicas=2"]);
    rollout(&k, "deployment/hello");
    k.ok(&[
        "set",
        "image",
        "deployment/hello",
        &format!("busybox={IMAGE2}"),
    ]);
    rollout(&k, "deployment/hello");
    running(&k, "hello", 2, IMAGE2);
    let history = k.ok(&["rollout", "history", "deployment/hello"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    k.ok(&["rollout", "undo", "deployment/hello"]);
    rollout(&k, "deployment/hello");
    running(&k, "hello", 2, IMAGE);
    let described = k.ok(&["describe", "deployment", "hello"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");

    // Orphaned: the ReplicaSets and pods stay; deleting those (background) takes the pods.
    k.ok(&["delete", "deployment", "hello", "--cascade=orphan"]);
    wait_until(Duration::from_secs(30), "the Deployment gone", || {
        get(&k, &["get", "deployments", "-o", "name"])
            .is_empty()
            .then_some(())
    });
    let sets = get(&k, &["get", "replicasets", "-l", "app=hello", "-o", "name"]);
    assert_eq!(sets.lines().count(), 2, "{sets}");
    assert_eq!(pods(&k, "hello").len(), 2, "the pods stay");
    k.ok(&["delete", "replicasets", "-l", "app=hello"]);
    wait_until(
        Duration::from_secs(60),
        "the orphaned pods collected",
        || pods(&k, "hello").is_empty().then_some(()),
    );
}

#[test]
fn pods_are_placed_by_selectors_and_one_that_fits_nowhere_says_why() {
    let c1 = Containerd::start_with_cni();
    let d1 = tempfile::tempdir().expect("tmp");
    let e1 = c1.endpoint();
    let k = Kedge::up_with(d1.path(), 0, &["--cri-endpoint", &e1]);
    k.ok(&["label", "node", "kube-edge-1", "site=plant-a"]);
    let pod = |name: &str, site: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  nodeSelector: {{site: {site}}}\n  containers:\n  - {{name: main, image: {IMAGE}, command: [sleep, '3600']}}\n"
        )
    };
    k.apply(&pod("placed", "plant-a"));
    k.apply(&pod("stuck", "plant-b"));
    running(&k, "placed", 1, IMAGE);
    let why = wait_until(
        Duration::from_secs(30),
        "stuck's PodScheduled condition",
        || {
            let path = "{.status.conditions[?(@.type==\"PodScheduled\")].status} {.status.conditions[?(@.type==\"PodScheduled\")].message}";
            let out = get(
                &k,
                &["get", "pod", "stuck", "-o", &format!("jsonpath={path}")],
            );
            out.starts_with("False ").then_some(out)
        },
    );
    assert!(
        why.contains(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"
        ),
        "{why}"
    );
    assert_eq!(
        get(
            &k,
            &["get", "pod", "stuck", "-o", "jsonpath={.status.phase}"]
        ),
        "Pending"
    );
    let events = k.ok(&["describe", "pod", "stuck"]);
    assert!(events.contains("FailedScheduling"), "{events}");
    // The node gets the label: the pod is placed.
    k.ok(&[
        "label",
        "node",
        "kube-edge-1",
        "site=plant-b",
        "--overwrite",
    ]);
    running(&k, "stuck", 1, IMAGE);
}
