//! The seed's device walkthrough with real binaries: `kedge cloud`, `kedge edge` (embedded
//! broker, or a real mosquitto), kubectl, mosquitto_pub and mosquitto_sub.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::time::{Duration, Instant};

use common::{EdgeProc, Kedge};
use mqtt::{Sub, ask, publish};
use serde_json::Value;

const NODE: &str = "kube-edge-1";
const DEVICE: &str = "$hw/events/device/default/counter";

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
}

/// A cloud with the seed's model and device, and its edge.
fn seed(extra: &[&str]) -> (tempfile::TempDir, Kedge, tempfile::TempDir, EdgeProc) {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    cloud.ok(&[
        "apply",
        "-f",
        &example("devicemodel-counter.yaml"),
        "-f",
        &example("device-counter.yaml"),
    ]);
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let edge = EdgeProc::start_with(&cloud, edge_dir.path(), NODE, &cloud.token(), extra);
    (dir, cloud, edge_dir, edge)
}

fn expected(v: &Value, prop: &str) -> Option<String> {
    v.pointer(&format!("/twin/{prop}/expected/value"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// `twin/get` until the edge answers with the device's twins.
fn twin_get(port: u16, want: impl Fn(&Value) -> bool) -> Value {
    let mut sub = Sub::start(port, &format!("{DEVICE}/twin/get/result"));
    ask(
        port,
        &mut sub,
        &format!("{DEVICE}/twin/get"),
        r#"{"event_id":"g"}"#,
        Duration::from_secs(30),
        want,
    )
}

fn reported(cloud: &Kedge) -> String {
    cloud.ok(&[
        "get",
        "device",
        "counter",
        "-o",
        "jsonpath={.status.twins[0].reported.value}",
    ])
}

fn desired(cloud: &Kedge) -> String {
    cloud.ok(&[
        "get",
        "device",
        "counter",
        "-o",
        "jsonpath={.status.twins[0].desired.value}",
    ])
}

fn set_desired(cloud: &Kedge, value: &str) {
    let patch =
        format!(r#"[{{"op":"replace","path":"/status/twins/0/desired/value","value":"{value}"}}]"#);
    cloud.ok(&["patch", "device", "counter", "--type=json", "-p", &patch]);
}

/// Polls kubectl until `f` holds, for up to `within`; returns how long it took.
fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The seed's flow: desired from the cloud reaches the device, the device's report reaches kubectl.
fn desired_down_reported_up(cloud: &Kedge, port: u16) {
    let got = twin_get(port, |v| expected(v, "status").is_some());
    assert_eq!(expected(&got, "status").as_deref(), Some("OFF"), "{got}");

    let mut delta = Sub::start(port, &format!("{DEVICE}/twin/update/delta"));
    set_desired(cloud, "ON");
    let t = Instant::now();
    let (_, d) = delta
        .next_json(Duration::from_secs(10), |_, v| {
            v.pointer("/delta/status") == Some(&Value::from("ON"))
        })
        .expect("a delta with ON");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "delta after {:?}",
        t.elapsed()
    );
    assert_eq!(expected(&d, "status").as_deref(), Some("ON"));

    publish(
        port,
        &format!("{DEVICE}/twin/update"),
        r#"{"event_id":"1","timestamp":0,"twin":{"status":{"actual":{"value":"5"}}}}"#,
    );
    let took = until(Duration::from_secs(10), "reported 5 in kubectl", || {
        reported(cloud) == "5"
    });
    assert!(took < Duration::from_secs(1), "reported after {took:?}");
    assert_eq!(desired(cloud), "ON", "desired unchanged by the report");
}

#[test]
fn the_seed_counter_with_the_embedded_broker() {
    let (_d, cloud, edge_dir, edge) = seed(&[]);
    desired_down_reported_up(&cloud, edge.mqtt_port);
    // The v1.14 device profile ConfigMap is kept for mappers, and reaches the edge's store.
    let profile = || {
        cloud
            .kubectl(&[
                "get",
                "configmap",
                "device-profile-config-kube-edge-1",
                "-o",
                r"jsonpath={.data.deviceProfile\.json}",
            ])
            .stdout
    };
    until(Duration::from_secs(10), "the device profile", || {
        serde_json::from_slice::<Value>(&profile())
            .is_ok_and(|p| p.pointer("/deviceInstances/0/id") == Some(&Value::from("counter")))
    });
    let store = kedge_edge::metamanager::MetaStore::open(&edge_dir.path().join("edge.db"))
        .expect("edge store");
    until(Duration::from_secs(10), "the profile at the edge", || {
        let cm = store
            .get("default/configmap/device-profile-config-kube-edge-1")
            .ok()
            .flatten();
        cm.and_then(|c| {
            c.pointer("/data/deviceProfile.json")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .is_some_and(|t| t.contains("counter-model"))
    });
}

#[test]
fn the_seed_counter_with_a_real_mosquitto_broker() {
    let broker = mqtt::Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let (_d, cloud, _e, _edge) = seed(&["--mqtt-url", &url]);
    desired_down_reported_up(&cloud, broker.port);
}

#[test]
fn every_message_is_answered_and_the_edge_keeps_running() {
    let (_d, cloud, _e, mut edge) = seed(&[]);
    let port = edge.mqtt_port;
    twin_get(port, |v| expected(v, "status").is_some());
    let mut results = Sub::start(port, "$hw/events/#");
    let update = format!("{DEVICE}/twin/update");
    let result_of = |sub: &mut Sub, event: &str| {
        sub.next_json(Duration::from_secs(10), |t, v| {
            t.ends_with("/result") && v["event_id"] == event
        })
        .unwrap_or_else(|| panic!("no result for event {event}"))
        .1
    };

    // A value with spaces is a fine string.
    publish(
        port,
        &update,
        r#"{"event_id":"sp","twin":{"status":{"actual":{"value":"a value with spaces"}}}}"#,
    );
    let r = result_of(&mut results, "sp");
    assert_eq!(
        r.pointer("/twin/status/actual/value"),
        Some(&Value::from("a value with spaces")),
        "{r}"
    );
    until(
        Duration::from_secs(10),
        "the spaced value in kubectl",
        || reported(&cloud) == "a value with spaces",
    );

    // Malformed JSON, a property the model lacks, an unknown device: each answered with a code.
    publish(port, &update, r#"{"event_id":"bad","twin":"#);
    assert_eq!(result_of(&mut results, "bad")["code"], 400);
    publish(
        port,
        &update,
        r#"{"event_id":"np","twin":{"volume":{"actual":{"value":"3"}}}}"#,
    );
    let r = result_of(&mut results, "np");
    assert_eq!(r["code"], 400);
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("volume"),
        "{r}"
    );
    publish(
        port,
        "$hw/events/device/default/nosuch/twin/update",
        r#"{"event_id":"nf","twin":{}}"#,
    );
    assert_eq!(result_of(&mut results, "nf")["code"], 404);

    // A wrong type: a model with an int property.
    cloud.with_stdin(&["apply", "-f", "-"], THERMO);
    let thermo = "$hw/events/device/default/thermo";
    let mut tget = Sub::start(port, &format!("{thermo}/twin/get/result"));
    ask(
        port,
        &mut tget,
        &format!("{thermo}/twin/get"),
        r#"{"event_id":"t"}"#,
        Duration::from_secs(30),
        |v| v.get("twin").is_some(),
    );
    publish(
        port,
        &format!("{thermo}/twin/update"),
        r#"{"event_id":"ty","twin":{"temperature":{"actual":{"value":"warm"}}}}"#,
    );
    let r = result_of(&mut results, "ty");
    assert_eq!(r["code"], 400);
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("int"),
        "{r}"
    );

    // Membership and state.
    publish(
        port,
        &format!("$hw/events/node/{NODE}/membership/get"),
        r#"{"event_id":"m"}"#,
    );
    let r = result_of(&mut results, "m");
    let ids: Vec<&str> = r["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["default/counter", "default/thermo"]);
    publish(
        port,
        &format!("{DEVICE}/state/update"),
        r#"{"event_id":"st","state":"online"}"#,
    );
    assert_eq!(
        result_of(&mut results, "st").pointer("/device/state"),
        Some(&Value::from("online"))
    );
    until(Duration::from_secs(10), "state online in kubectl", || {
        cloud.ok(&["get", "device", "counter", "-o", "jsonpath={.status.state}"]) == "online"
    });
    publish(
        port,
        &format!("{DEVICE}/state/update"),
        r#"{"event_id":"st2","state":"dancing"}"#,
    );
    assert_eq!(result_of(&mut results, "st2")["code"], 400);
    assert!(edge.alive(), "the edge survived every bad message");
}

const THERMO: &str = r#"
apiVersion: devices.kubeedge.io/v1alpha2
kind: DeviceModel
metadata: {name: thermo-model, namespace: default}
spec:
  properties:
  - name: temperature
    type: {int: {accessMode: ReadOnly}}
---
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata: {name: thermo, namespace: default}
spec:
  deviceModelRef: {name: thermo-model}
  nodeSelector:
    nodeSelectorTerms:
    - matchExpressions:
      - {key: kubernetes.io/hostname, operator: In, values: [kube-edge-1]}
"#;

#[test]
fn desired_values_survive_edge_restarts_and_cloud_outages() {
    let (dir, mut cloud, edge_dir, mut edge) = seed(&[]);
    twin_get(edge.mqtt_port, |v| {
        expected(v, "status").as_deref() == Some("OFF")
    });
    // Changed while the edge is down: it arrives when the edge starts.
    edge.kill9();
    set_desired(&cloud, "ON");
    let token = cloud.token();
    let edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &token);
    let mut delta = Sub::start(edge.mqtt_port, &format!("{DEVICE}/twin/update/delta"));
    delta
        .next_json(Duration::from_secs(30), |_, v| {
            v.pointer("/delta/status") == Some(&Value::from("ON"))
        })
        .expect("the delta reaches a device subscribing after the edge restarted");
    drop(delta);
    // Cloud down, edge restarted: its store answers, and the retained delta is back.
    cloud.kill9();
    drop(edge);
    let edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &token);
    let got = twin_get(edge.mqtt_port, |v| expected(v, "status").is_some());
    assert_eq!(expected(&got, "status").as_deref(), Some("ON"));
    let mut delta = Sub::start(edge.mqtt_port, &format!("{DEVICE}/twin/update/delta"));
    assert!(
        delta
            .next_json(Duration::from_secs(10), |_, v| v
                .pointer("/delta/status")
                .is_some())
            .is_some(),
        "a reconnecting device gets its delta without the cloud"
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_with_ten_twins_each_all_reach_the_edge() {
    use futures::{StreamExt, TryStreamExt, stream};
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::ApiResource;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    let client = cloud.client().await;
    let ar = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("devices.kubeedge.io", "v1alpha2", kind),
            plural,
        )
    };
    let props: Vec<Value> = (0..10)
        .map(|p| serde_json::json!({"name": format!("p{p}"), "type": {"string": {"accessMode": "ReadWrite"}}}))
        .collect();
    let model: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "DeviceModel",
        "metadata": {"name": "m", "namespace": "default"}, "spec": {"properties": props}}))
    .expect("model");
    let models: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar("DeviceModel", "devicemodels"),
    );
    models
        .create(&PostParams::default(), &model)
        .await
        .expect("model");
    let devices: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ar("Device", "devices"));
    stream::iter(0..1000)
        .map(|i| {
            let devices = devices.clone();
            async move {
                let twins: Vec<Value> = (0..10)
                    .map(|p| serde_json::json!({"propertyName": format!("p{p}"),
                        "desired": {"value": format!("d{i}-{p}"), "metadata": {"type": "string"}}}))
                    .collect();
                let d: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
                    "metadata": {"name": format!("d{i:04}"), "namespace": "default"},
                    "spec": {"deviceModelRef": {"name": "m"}, "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}]}]}},
                    "status": {"twins": twins}}))
                .expect("device");
                devices.create(&PostParams::default(), &d).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("1,000 devices created");
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let token = cloud.token();
    // Blocking calls (processes, mosquitto clients) are fine here: two worker threads.
    let edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &token);
    let port = edge.mqtt_port;
    let all = tokio::task::spawn_blocking(move || {
        let mut sub = Sub::start(
            port,
            &format!("$hw/events/node/{NODE}/membership/get/result"),
        );
        let complete = |v: &Value| {
            let devices = v["devices"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            devices.len() == 1000
                && devices.iter().all(|d| {
                    let twins = d["twin"].as_object();
                    twins.is_some_and(|t| {
                        t.len() == 10 && t.values().all(|t| t.pointer("/expected/value").is_some())
                    })
                })
        };
        ask(
            port,
            &mut sub,
            &format!("$hw/events/node/{NODE}/membership/get"),
            r#"{"event_id":"all"}"#,
            Duration::from_secs(120),
            complete,
        )
    })
    .await
    .expect("membership");
    let sample = all["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == "default/d0999"))
        .cloned()
        .expect("d0999");
    assert_eq!(
        sample.pointer("/twin/p9/expected/value"),
        Some(&Value::from("d999-9"))
    );
    drop(edge);
}

#[test]
fn kedge_up_demo_counts_while_desired_is_on() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up_with(dir.path(), 0, &["--demo"]);
    let count = || reported(&up).parse::<u64>().unwrap_or(0);
    // Desired OFF: the counter waits (the seed's reported value is "0").
    until(Duration::from_secs(30), "the demo device exists", || {
        up.kubectl(&["get", "device", "counter"]).status.success()
    });
    set_desired(&up, "ON");
    until(Duration::from_secs(20), "the counter to reach 2", || {
        count() >= 2
    });
    set_desired(&up, "OFF");
    // Once OFF has reached it, the count stays put (one report may still be in flight).
    let stopped = until(Duration::from_secs(20), "the counter to stop", || {
        let a = count();
        let deadline = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            if count() != a {
                return false;
            }
        }
        true
    });
    assert!(stopped < Duration::from_secs(20));
    // The DMI demo: the mapper's virtual sensor counts up in its DeviceStatus, and its level
    // follows the desired value (10).
    let status = |path: &str| {
        let jp = format!("jsonpath={path}");
        let out = up.kubectl(&["get", "devicestatus", "virtual-sensor", "-o", &jp]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let temperature = r#"{.status.twins[?(@.propertyName=="temperature")].reported.value}"#;
    let level = r#"{.status.twins[?(@.propertyName=="level")].reported.value}"#;
    until(Duration::from_secs(30), "the mapper's reports", || {
        status(temperature).parse::<u64>().unwrap_or(0) >= 2
    });
    until(
        Duration::from_secs(30),
        "the level to reach its desired 10",
        || status(level) == "10",
    );
    assert_eq!(status("{.status.state}"), "ok");
}

#[test]
fn an_external_broker_over_tls_with_a_password() {
    let (broker, secure) = mqtt::Mosquitto::start_secure();
    let ca = secure.ca.display().to_string();
    let url = format!(
        "mqtts://{}:{}@localhost:{}",
        secure.user, secure.password, broker.port
    );
    let (_d, cloud, _e, _edge) = seed(&["--mqtt-url", &url, "--mqtt-ca", &ca]);
    let conn = [
        "-h",
        "localhost",
        "--cafile",
        &ca,
        "-u",
        secure.user,
        "-P",
        secure.password,
    ];
    let mut sub = Sub::start_with(broker.port, &format!("{DEVICE}/twin/get/result"), &conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        mqtt::publish_with(
            broker.port,
            &format!("{DEVICE}/twin/get"),
            r#"{"event_id":"g"}"#,
            &conn,
        );
        if let Some((_, v)) = sub.next_json(Duration::from_millis(500), |_, v| {
            expected(v, "status").is_some()
        }) {
            break v;
        }
        assert!(Instant::now() < deadline, "the edge answers over TLS");
    };
    assert_eq!(expected(&got, "status").as_deref(), Some("OFF"));
    mqtt::publish_with(
        broker.port,
        &format!("{DEVICE}/twin/update"),
        r#"{"event_id":"1","twin":{"status":{"actual":{"value":"7"}}}}"#,
        &conn,
    );
    until(Duration::from_secs(10), "reported 7 in kubectl", || {
        reported(&cloud) == "7"
    });
    // Without the password the broker refuses: the edge's access was really checked.
    let out = std::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port.to_string(),
            "-h",
            "localhost",
            "--cafile",
            &ca,
        ])
        .args(["-t", "x", "-m", "y"])
        .output()
        .expect("mosquitto_pub");
    assert!(!out.status.success(), "anonymous clients are refused");
}

/// A Device applied before its DeviceModel is accepted, says in its status what it waits for,
/// and takes effect when the model appears.
#[test]
fn a_device_waits_for_its_model_and_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    up.ok(&["apply", "-f", &example("device-counter.yaml")]);
    let ready = |field: &str| {
        up.ok(&[
            "get",
            "device",
            "counter",
            "-o",
            &format!("jsonpath={{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
        ])
    };
    common::wait_until(
        Duration::from_secs(20),
        "the device to say it waits",
        || {
            (ready("status") == "False"
                && ready("reason") == "ModelMissing"
                && ready("message").contains("counter-model"))
            .then_some(())
        },
    );
    up.ok(&["apply", "-f", &example("devicemodel-counter.yaml")]);
    common::wait_until(Duration::from_secs(20), "the device to take effect", || {
        (ready("status") == "True").then_some(())
    });
    // And it works: the edge answers twin/get with the device's desired value.
    let v = twin_get(up.mqtt_port, |v| expected(v, "status").is_some());
    assert_eq!(expected(&v, "status").as_deref(), Some("OFF"));
}
