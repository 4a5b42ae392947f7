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
    let out = k.kubectl(&["rollout", "status", what, "--timeout=120s"]);
    if !out.status.success() {
        let (kind, name) = what.split_once('/').unwrap_or((what, ""));
        let state = get(k, &["describe", kind, name]);
        let pods = get(k, &["describe", "pods"]);
        let nodes = get(k, &["get", "nodes", "-o", "wide"]);
        panic!(
            "rollout of {what}: {}\n{state}\n{pods}\n{nodes}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the app has exactly `n` pods, all Running with `image`; their nodes. On a
/// timeout the pods are described (their conditions and events say why).
fn running(k: &Kedge, app: &str, n: usize, image: &str) -> BTreeSet<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ps = pods(k, app);
        if ps.len() == n && ps.iter().all(|p| p.ends_with(&format!(" {image} Running"))) {
            return ps
                .iter()
                .filter_map(|p| p.split(' ').next().map(String::from))
                .collect();
        }
        if std::time::Instant::now() > deadline {
            let described = get(k, &["describe", "pods", "-l", &format!("app={app}")]);
            let nodes = get(k, &["describe", "nodes"]);
            panic!(
                "timed out waiting for {n} pods of {app} running {image}: {ps:?}\n{described}\n{nodes}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `N` containerds with a pod network, each holding the test image also as `IMAGE2`.
fn runtimes<const N: usize>() -> [Containerd; N] {
    std::array::from_fn(|_| {
        let c = Containerd::start_with_cni();
        c.ctr(&["images", "tag", IMAGE, IMAGE2])
            .expect("second tag");
        c
    })
}

#[test]
fn a_deployment_runs_scales_updates_undoes_and_goes_with_its_replica_sets() {
    let [c1, c2]: [Containerd; 2] = runtimes();
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

    // Paused, a new image waits; resumed, it rolls out; a restart makes new pods.
    k.ok(&["rollout", "pause", "deployment/hello"]);
    k.ok(&[
        "set",
        "image",
        "deployment/hello",
        &format!("busybox={IMAGE2}"),
    ]);
    let progressing = "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}";
    wait_until(Duration::from_secs(30), "the rollout seen paused", || {
        (get(&k, &["get", "deployment", "hello", "-o", progressing]) == "DeploymentPaused")
            .then_some(())
    });
    assert_eq!(
        running(&k, "hello", 2, IMAGE).len(),
        2,
        "still the old image"
    );
    k.ok(&["rollout", "resume", "deployment/hello"]);
    rollout(&k, "deployment/hello");
    running(&k, "hello", 2, IMAGE2);
    let names = || {
        get(
            &k,
            &[
                "get",
                "pods",
                "-l",
                "app=hello",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        )
    };
    let before = names();
    k.ok(&["rollout", "restart", "deployment/hello"]);
    rollout(&k, "deployment/hello");
    wait_until(
        Duration::from_secs(60),
        "only new pods after the restart",
        || {
            let now = names();
            now.split(' ').all(|n| !before.contains(n)).then_some(())
        },
    );
    running(&k, "hello", 2, IMAGE2);

    // Orphaned: the ReplicaSets and pods stay; deleting those (background) takes the pods.
    k.ok(&["delete", "deployment", "hello", "--cascade=orphan"]);
    wait_until(Duration::from_secs(30), "the Deployment gone", || {
        get(&k, &["get", "deployments", "-o", "name"])
            .is_empty()
            .then_some(())
    });
    let sets = get(&k, &["get", "replicasets", "-l", "app=hello", "-o", "name"]);
    assert_eq!(
        sets.lines().count(),
        3,
        "image 1, image 2, restarted: {sets}"
    );
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

/// An edge `node` with its own containerd (the containerd must outlive it).
fn edge(k: &Kedge, ctrd: &Containerd, dir: &std::path::Path, node: &str) -> EdgeProc {
    let endpoint = ctrd.endpoint();
    let e = EdgeProc::start_with(k, dir, node, &k.token(), &["--cri-endpoint", &endpoint]);
    wait_until(Duration::from_secs(60), &format!("{node} Ready"), || {
        (k.node_ready(node) == "True").then_some(())
    });
    e
}

/// The nodes the app's pods are bound to (pods being deleted left out), sorted.
fn nodes_of(k: &Kedge, app: &str) -> Vec<String> {
    let path = "{range .items[*]}{.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}";
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
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| match l.split_once(' ') {
            Some((node, "")) => Some(node.to_string()),
            None => Some(l.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemon_set_runs_on_every_edge_a_new_one_included_and_follows_a_moved_label() {
    let ctrds: [Containerd; 4] = runtimes();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let e1 = ctrds[0].endpoint();
    let k = Kedge::up_with(dirs[0].path(), 0, &["--cri-endpoint", &e1]);
    let _e2 = edge(&k, &ctrds[1], dirs[1].path(), "edge-2");
    let _e3 = edge(&k, &ctrds[2], dirs[2].path(), "edge-3");
    let daemon = |name: &str, selector: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{selector}      containers:\n      - {{name: main, image: {IMAGE}, command: [sleep, '3600']}}\n"
        )
    };
    k.apply(&daemon("agent", ""));
    let three = ["edge-2", "edge-3", "kube-edge-1"]
        .map(String::from)
        .to_vec();
    wait_until(
        Duration::from_secs(90),
        "an agent on each of 3 edges",
        || {
            (running(&k, "agent", 3, IMAGE)
                .into_iter()
                .collect::<Vec<_>>()
                == three)
                .then_some(())
        },
    );
    let cols = k.ok(&["get", "daemonset", "agent"]);
    assert!(
        cols.contains("DESIRED") && cols.contains("NODE SELECTOR"),
        "{cols}"
    );
    let _e4 = edge(&k, &ctrds[3], dirs[3].path(), "edge-4");
    let four: BTreeSet<String> = ["edge-2", "edge-3", "edge-4", "kube-edge-1"]
        .map(String::from)
        .into();
    assert_eq!(
        running(&k, "agent", 4, IMAGE),
        four,
        "the new edge got its daemon"
    );
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);

    k.ok(&["label", "node", "edge-2", "probe=yes"]);
    k.apply(&daemon("probe", "      nodeSelector: {probe: 'yes'}\n"));
    assert_eq!(
        running(&k, "probe", 1, IMAGE),
        BTreeSet::from(["edge-2".to_string()])
    );
    k.ok(&["label", "node", "edge-2", "probe-"]);
    k.ok(&["label", "node", "edge-3", "probe=yes"]);
    wait_until(Duration::from_secs(60), "the probe moved to edge-3", || {
        (nodes_of(&k, "probe") == ["edge-3"]).then_some(())
    });
    running(&k, "probe", 1, IMAGE);

    // A new image rolls over every edge, one daemon at a time.
    k.ok(&["set", "image", "daemonset/agent", &format!("main={IMAGE2}")]);
    rollout(&k, "daemonset/agent");
    assert_eq!(running(&k, "agent", 4, IMAGE2), four);
}

#[test]
fn a_stateful_set_starts_in_order_and_a_job_runs_to_completion() {
    let c1 = Containerd::start_with_cni();
    let d1 = tempfile::tempdir().expect("tmp");
    let e1 = c1.endpoint();
    let k = Kedge::up_with(d1.path(), 0, &["--cri-endpoint", &e1]);
    k.apply(&format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web}}\nspec:\n  serviceName: web\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: main, image: {IMAGE}, command: [sleep, '3600']}}\n"
    ));
    // At every look, web-N exists only if every lower ordinal runs and is ready.
    let state = || {
        let path = "{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";
        get(
            &k,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
    };
    wait_until(
        Duration::from_secs(120),
        "web-0, web-1, web-2 running in order",
        || {
            let s = state();
            let up: Vec<(String, bool)> = s
                .lines()
                .map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    (
                        f[0].to_string(),
                        f.get(1) == Some(&"Running") && f.get(2) == Some(&"True"),
                    )
                })
                .collect();
            for (i, name) in ["web-0", "web-1", "web-2"].iter().enumerate() {
                if up.iter().any(|(n, _)| n == name) {
                    for lower in &["web-0", "web-1", "web-2"][..i] {
                        assert!(
                            up.iter().any(|(n, ready)| n == lower && *ready),
                            "{name} before {lower} was ready: {s}"
                        );
                    }
                }
            }
            (up.len() == 3 && up.iter().all(|(_, r)| *r)).then_some(())
        },
    );
    assert_eq!(
        get(
            &k,
            &["get", "pod", "web-1", "-o", "jsonpath={.spec.hostname}"]
        ),
        "web-1"
    );
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    // Scaled down, the highest ordinal goes first.
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    wait_until(Duration::from_secs(60), "only web-0 left", || {
        let s = state();
        let has = |n: &str| s.lines().any(|l| l.starts_with(&format!("{n} ")));
        assert!(
            has("web-1") || !has("web-2"),
            "web-1 went before web-2: {s}"
        );
        (has("web-0") && !has("web-1") && !has("web-2")).then_some(())
    });

    k.apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: count}}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: main, image: {IMAGE}, command: [sh, -c, 'echo done']}}\n"
    ));
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "--timeout=120s",
    ]);
    assert_eq!(
        get(
            &k,
            &["get", "job", "count", "-o", "jsonpath={.status.succeeded}"]
        ),
        "3"
    );
    let cols = k.ok(&["get", "job", "count"]);
    assert!(
        cols.contains("COMPLETIONS") && cols.contains("3/3"),
        "{cols}"
    );

    // A Job whose pods fail stops at its backoff limit.
    k.apply(&format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: fails}}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: main, image: {IMAGE}, command: [sh, -c, 'exit 3']}}\n"
    ));
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fails",
        "--timeout=120s",
    ]);
    let reason = "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason} {.status.failed}";
    assert_eq!(
        get(&k, &["get", "job", "fails", "-o", reason]),
        "BackoffLimitExceeded 2"
    );
}

#[test]
fn an_edge_that_goes_away_keeps_its_pods_and_comes_back_to_them() {
    let (c1, c2) = (Containerd::start_with_cni(), Containerd::start_with_cni());
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let e1 = c1.endpoint();
    let k = Kedge::up_with(d1.path(), 0, &["--cri-endpoint", &e1]);
    let mut e2 = edge(&k, &c2, d2.path(), "edge-2");
    k.ok(&[
        "create",
        "deployment",
        "app",
        &format!("--image={IMAGE}"),
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    rollout(&k, "deployment/app");
    let names = || {
        get(
            &k,
            &[
                "get",
                "pods",
                "-l",
                "app=app",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        )
    };
    let before = names();
    assert_eq!(running(&k, "app", 2, IMAGE).len(), 2, "one on each edge");
    // This one opted in to eviction after 3 s of its node not Ready.
    k.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: mobile}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: mobile}}}}\n  template:\n    metadata:\n      labels: {{app: mobile}}\n      annotations: {{kedge.io/evict-after-seconds: '3'}}\n    spec:\n      containers:\n      - {{name: main, image: {IMAGE}, command: [sleep, '3600']}}\n"
    ));
    assert_eq!(running(&k, "mobile", 2, IMAGE).len(), 2, "one on each edge");

    e2.kill9();
    wait_until(Duration::from_secs(30), "edge-2 NotReady", || {
        (k.node_ready("edge-2") != "True").then_some(())
    });
    // Nothing is evicted or recreated elsewhere: a negative, so it is watched for a while
    // (10 s, twice the controllers' reaction time in these tests) rather than waited for.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        assert_eq!(
            names(),
            before,
            "the pods of a NotReady edge stay as they are"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let moved = running(&k, "mobile", 2, IMAGE);
    assert_eq!(
        moved,
        BTreeSet::from(["kube-edge-1".to_string()]),
        "evicted and placed on the Ready edge"
    );
    let _e2 = edge(&k, &c2, d2.path(), "edge-2");
    rollout(&k, "deployment/app");
    running(&k, "app", 2, IMAGE);
    assert_eq!(names(), before, "nothing duplicated");

    // Foreground: kubectl waits while the ReplicaSet and pods go first.
    k.ok(&[
        "delete",
        "deployment",
        "app",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    wait_until(
        Duration::from_secs(60),
        "the app's ReplicaSet and pods gone",
        || {
            let left = get(
                &k,
                &["get", "replicasets,pods", "-l", "app=app", "-o", "name"],
            );
            left.is_empty().then_some(())
        },
    );
}

#[test]
fn an_edge_application_runs_each_node_groups_image_and_keeps_its_deployments() {
    let [c1, c2]: [Containerd; 2] = runtimes();
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let e1 = c1.endpoint();
    let k = Kedge::up_with(d1.path(), 0, &["--cri-endpoint", &e1]);
    let _e2 = edge(&k, &c2, d2.path(), "edge-2");
    k.ok(&["label", "node", "edge-2", "site=b"]);
    k.apply(
        "apiVersion: apps.kubeedge.io/v1alpha1\nkind: NodeGroup\nmetadata: {name: plant-a}\nspec: {nodes: [kube-edge-1]}\n---\napiVersion: apps.kubeedge.io/v1alpha1\nkind: NodeGroup\nmetadata: {name: plant-b}\nspec: {matchLabels: {site: b}}\n",
    );
    k.apply(&format!(
        "apiVersion: apps.kubeedge.io/v1alpha1\nkind: EdgeApplication\nmetadata: {{name: shop}}\nspec:\n  workloadTemplate:\n    manifests:\n    - apiVersion: apps/v1\n      kind: Deployment\n      metadata: {{name: web, labels: {{app: web}}}}\n      spec:\n        replicas: 1\n        selector: {{matchLabels: {{app: web}}}}\n        template:\n          metadata: {{labels: {{app: web}}}}\n          spec:\n            containers:\n            - {{name: main, image: {IMAGE}, command: [sleep, '3600']}}\n  workloadScope:\n    targetNodeGroups:\n    - name: plant-a\n    - name: plant-b\n      overriders:\n        imageOverriders: [{{component: Tag, operator: replace, value: '2'}}]\n"
    ));
    let by_node = || {
        let path = "{range .items[*]}{.spec.nodeName}={.spec.containers[0].image}={.status.phase}{\"\\n\"}{end}";
        let mut v: Vec<String> = get(
            &k,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
        .lines()
        .map(String::from)
        .collect();
        v.sort();
        v
    };
    let want = vec![
        format!("edge-2={IMAGE2}=Running"),
        format!("kube-edge-1={IMAGE}=Running"),
    ];
    wait_until(
        Duration::from_secs(120),
        "each group's image on its node",
        || (by_node() == want).then_some(()),
    );
    let groups = get(
        &k,
        &[
            "get",
            "nodegroup",
            "plant-b",
            "-o",
            "jsonpath={.status.nodeStatuses[0].nodeName} {.status.nodeStatuses[0].selectionStatus}",
        ],
    );
    assert_eq!(groups, "edge-2 Succeeded");

    // Kept as rendered: a scaled copy is put back, a deleted one comes back.
    k.ok(&["scale", "deployment", "web-plant-a", "--replicas=3"]);
    wait_until(Duration::from_secs(60), "web-plant-a back to 1", || {
        (get(
            &k,
            &[
                "get",
                "deployment",
                "web-plant-a",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        ) == "1")
            .then_some(())
    });
    k.ok(&["delete", "deployment", "web-plant-b"]);
    wait_until(
        Duration::from_secs(60),
        "web-plant-b recreated and running",
        || {
            let ready = get(
                &k,
                &[
                    "get",
                    "deployment",
                    "web-plant-b",
                    "-o",
                    "jsonpath={.status.availableReplicas}",
                ],
            );
            (ready == "1").then_some(())
        },
    );
    wait_until(Duration::from_secs(60), "both workloads Available", || {
        let s = get(
            &k,
            &[
                "get",
                "edgeapplication",
                "shop",
                "-o",
                "jsonpath={.status.workloadStatus[*].conditions}",
            ],
        );
        (s == "Available Available").then_some(())
    });
    // The application goes with what it made.
    k.ok(&["delete", "edgeapplication", "shop"]);
    wait_until(
        Duration::from_secs(60),
        "its Deployments and pods gone",
        || {
            get(
                &k,
                &["get", "deployments,pods", "-l", "app=web", "-o", "name"],
            )
            .is_empty()
            .then_some(())
        },
    );
}
