//! Real `kubectl` against the real `kedge up`: every verb on every kind, the seed's manifests,
//! `get -w`, and bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{Kedge, examples};

fn up() -> (tempfile::TempDir, Kedge) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::up(dir.path(), 0);
    (dir, k)
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.to_string_lossy().into_owned()
}

/// One manifest per kind kedge serves, with a field to change on apply.
const KINDS: &[(&str, &str)] = &[
    (
        "namespace",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels: {v: '1'}\n",
    ),
    (
        "configmap",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  labels: {v: '1'}\ndata:\n  a: '1'\n",
    ),
    (
        "secret",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sec\n  labels: {v: '1'}\nstringData:\n  pw: hunter2\n",
    ),
    (
        "node",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-x\n  labels: {v: '1', node-role.kubernetes.io/edge: ''}\n",
    ),
    (
        "pod",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {v: '1'}\nspec:\n  nodeName: edge-x\n  containers:\n  - name: c\n    image: busybox:1\n    command: [sleep, '3600']\n",
    ),
    (
        "event",
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: ev1\n  labels: {v: '1'}\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: default\nreason: Testing\nmessage: hello\ntype: Normal\n",
    ),
    (
        "lease",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: edge-x\n  namespace: kube-node-lease\n  labels: {v: '1'}\nspec:\n  holderIdentity: edge-x\n  leaseDurationSeconds: 40\n",
    ),
    (
        "objectsync",
        "apiVersion: reliablesyncs.kubeedge.io/v1alpha1\nkind: ObjectSync\nmetadata:\n  name: edge-x.uid1\n  labels: {v: '1'}\nspec:\n  objectAPIVersion: v1\n  objectKind: ConfigMap\n  objectName: cfg\n",
    ),
    (
        "clusterobjectsync",
        "apiVersion: reliablesyncs.kubeedge.io/v1alpha1\nkind: ClusterObjectSync\nmetadata:\n  name: edge-x.uid2\n  labels: {v: '1'}\nspec:\n  objectAPIVersion: v1\n  objectKind: Node\n  objectName: edge-x\n",
    ),
    (
        "customresourcedefinition",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gizmos.example.com\n  labels: {v: '1'}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: gizmos, singular: gizmo, kind: Gizmo}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    ),
];

#[test]
fn every_verb_on_every_kind() {
    let (dir, k) = up();
    for (kind, yaml) in KINDS {
        let f = write(dir.path(), &format!("{kind}.yaml"), yaml);
        assert!(k.ok(&["create", "-f", &f]).contains("created"), "{kind}");
        let json = k.ok(&["get", "-f", &f, "-o", "json"]);
        let obj: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert!(obj["metadata"]["uid"].is_string(), "{kind}: {json}");
        assert!(
            k.ok(&["get", "-f", &f]).lines().count() >= 2,
            "{kind}: table"
        );
        k.ok(&["describe", "-f", &f]);
        k.ok(&["label", "-f", &f, "tier=gold"]);
        let labelled = k.ok(&["get", kind, "-A", "-l", "tier=gold", "-o", "name"]);
        assert_eq!(labelled.lines().count(), 1, "{kind}: {labelled}");
        k.ok(&[
            "patch",
            "-f",
            &f,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"annotations":{"note":"x"}}}"#,
        ]);
        let changed = write(
            dir.path(),
            &format!("{kind}-2.yaml"),
            &yaml.replace("v: '1'", "v: '2'"),
        );
        k.ok(&["apply", "-f", &changed]);
        let v = k.ok(&["get", "-f", &f, "-o", "jsonpath={.metadata.labels.v}"]);
        assert_eq!(v, "2", "{kind}: apply changed the label");
        let current = k.ok(&["get", "-f", &f, "-o", "yaml"]);
        let current_file = write(dir.path(), &format!("{kind}-current.yaml"), &current);
        k.ok(&["replace", "-f", &current_file]);
        let stale = k.fails(&["replace", "-f", &current_file]);
        assert!(
            stale.contains("the object has been modified"),
            "{kind}: {stale}"
        );
        assert!(k.ok(&["delete", "-f", &f]).contains("deleted"), "{kind}");
        let gone = k.fails(&["get", "-f", &f]);
        assert!(
            gone.contains("NotFound") || gone.contains("not found"),
            "{kind}: {gone}"
        );
    }
}

fn desired(k: &Kedge) -> String {
    k.ok(&[
        "get",
        "device",
        "counter",
        "-o",
        "jsonpath={.status.twins[0].desired.value}",
    ])
}

#[test]
fn the_seed_manifests_work_as_written() {
    let (dir, k) = up();
    let ex = examples();
    let ex = |f: &str| ex.join(f).to_string_lossy().into_owned();
    k.ok(&[
        "apply",
        "-f",
        &ex("devicemodel-counter.yaml"),
        "-f",
        &ex("device-counter.yaml"),
    ]);
    for f in [
        "ruleEndpoint-rest.yaml",
        "ruleEndpoint-eventbus.yaml",
        "ruleEndpoint-servicebus.yaml",
    ] {
        k.ok(&["create", "-f", &ex(f)]);
    }
    for f in [
        "rule-rest-eventbus.yaml",
        "rule-eventbus-rest.yaml",
        "rule-rest-servicebus.yaml",
    ] {
        k.ok(&["apply", "-f", &ex(f)]);
    }
    assert_eq!(k.ok(&["get", "re", "-o", "name"]).lines().count(), 3);
    assert_eq!(k.ok(&["get", "rules", "-o", "name"]).lines().count(), 3);
    assert_eq!(desired(&k), "OFF");

    // The seed sets desired values from the cloud: patch, edit and apply all reach status.
    let patch = r#"{"status":{"twins":[{"propertyName":"status","desired":{"metadata":{"type":"string"},"value":"ON"}}]}}"#;
    k.ok(&["patch", "device", "counter", "--type=merge", "-p", patch]);
    assert_eq!(desired(&k), "ON");
    let editor = write(
        dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/value: \"ON\"/value: \"OFF\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = k
        .kubectl_cmd(&["edit", "device", "counter"])
        .env("EDITOR", &editor)
        .output()
        .expect("edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(desired(&k), "OFF");
    let device = std::fs::read_to_string(ex("device-counter.yaml")).expect("read");
    let on = write(
        dir.path(),
        "device-on.yaml",
        &device.replace("value: 'OFF'", "value: 'ON'"),
    );
    k.ok(&["apply", "-f", &on]);
    assert_eq!(desired(&k), "ON");
    let reported = k.ok(&[
        "get",
        "device",
        "counter",
        "-o",
        "jsonpath={.status.twins[0].reported.value}",
    ]);
    assert_eq!(reported, "0");

    k.ok(&["label", "device", "counter", "env=test"]);
    assert_eq!(
        k.ok(&["get", "devices", "-l", "env=test", "-o", "name"])
            .trim(),
        "device.devices.kubeedge.io/counter"
    );
    assert!(
        k.ok(&["describe", "device", "counter"])
            .contains("Property Name:  status")
    );

    k.ok(&["delete", "-f", &ex("device-counter.yaml")]);
    assert!(k.fails(&["get", "device", "counter"]).contains("not found"));
}

#[test]
fn get_watch_streams_changes() {
    let (_dir, k) = up();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: '1'\n";
    assert!(k.with_stdin(&["create", "-f", "-"], cm).status.success());
    let mut child = k
        .kubectl_cmd(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(15))
            .expect("a line from kubectl get -w")
    };
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("watched"));
    k.ok(&["label", "configmap", "watched", "x=y"]);
    assert!(next().starts_with("watched"), "the change is streamed");
    let late = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n";
    assert!(k.with_stdin(&["create", "-f", "-"], late).status.success());
    assert!(next().starts_with("late"), "new objects are streamed");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_input_gets_clear_errors_and_the_server_survives() {
    let (dir, k) = up();
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: rules.kubeedge.io/v1\nkind: RuleEndpoint\nmetadata:\n  name: x1\nspec:\n  ruleEndpointType: bogus\n",
            r#"spec.ruleEndpointType: Unsupported value: "bogus": supported values: "rest", "eventbus", "servicebus""#,
        ),
        (
            "apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\nmetadata:\n  name: d1\nspec:\n  deviceModelRef: 5\n",
            "spec.deviceModelRef in body must be of type object",
        ),
        (
            "apiVersion: rules.kubeedge.io/v1\nkind: RuleEndpoint\nmetadata:\n  name: x2\nspec:\n  ruleEndpointType: rest\n  extra: 1\n",
            r#"strict decoding error: unknown field "spec.extra""#,
        ),
        (
            "apiVersion: rules.kubeedge.io/v1\nkind: Gizmo\nmetadata:\n  name: g\n",
            r#"no matches for kind "Gizmo""#,
        ),
        (
            "apiVersion: rules.kubeedge.io/v9\nkind: Rule\nmetadata:\n  name: r\n",
            r#"no matches for kind "Rule" in version "rules.kubeedge.io/v9""#,
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n",
            "error converting YAML to JSON",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
            "a lowercase RFC 1123 subdomain",
        ),
    ];
    for (yaml, want) in cases {
        let out = k.with_stdin(&["create", "-f", "-"], yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "want {want:?} in {err}"
        );
    }
    // Malformed JSON straight to the server.
    let bad = write(dir.path(), "bad.json", "{\"apiVersion\": \"v1\", ");
    let err = k.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &bad,
    ]);
    assert!(err.contains("not valid JSON"), "{err}");
    // An oversized body: 413, and nothing stored.
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  x: {}\n",
        "a".repeat(4 * 1024 * 1024)
    );
    let big = write(dir.path(), "big.yaml", &big);
    let err = k.fails(&["create", "-f", &big]);
    assert!(err.contains("Request entity too large"), "{err}");
    assert!(k.fails(&["get", "configmap", "big"]).contains("not found"));
    // Still serving.
    assert!(k.ok(&["get", "namespaces"]).contains("default"));
}

#[test]
fn unauthenticated_requests_get_401() {
    let (dir, k) = up();
    let kc = std::fs::read_to_string(k.kubeconfig()).expect("kubeconfig");
    let token_line = kc
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("token line");
    let anon = write(
        dir.path(),
        "anon.kubeconfig",
        &kc.replace(token_line, "    token: wrong"),
    );
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig", &anon, "get", "--raw", "/api/v1/namespaces"])
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));
    assert!(
        k.ok(&["get", "ns", "default", "-o", "name"])
            .contains("default")
    );
}

#[test]
fn imperative_generators_work() {
    // client-go sends these as protobuf.
    let (_dir, k) = up();
    k.ok(&["create", "namespace", "demo"]);
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "--from-literal=a=b",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        "demo",
        "--from-literal=pw=hunter2",
    ]);
    k.ok(&[
        "run",
        "web",
        "-n",
        "demo",
        "--image=busybox:1",
        "--labels=app=web",
    ]);
    assert_eq!(
        k.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    let pw = k.ok(&[
        "get",
        "secret",
        "sec",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.pw}",
    ]);
    assert_eq!(pw, "aHVudGVyMg==");
    assert_eq!(
        k.ok(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "name"])
            .trim(),
        "pod/web"
    );
    k.ok(&["delete", "namespace", "demo"]);
    assert!(k.fails(&["get", "namespace", "demo"]).contains("not found"));
}
