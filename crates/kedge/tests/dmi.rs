//! v1beta1 devices and DMI mappers with real processes: `kedge cloud`, `kedge edge`, kubectl,
//! and a test mapper (written against kedge's DMI proto) on real unix sockets.

mod common;
#[path = "common/mapper.rs"]
mod mapper;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{EdgeProc, Kedge};
use mapper::{Seen, TestMapper, desired, register, report, wait_for};
use tonic::Code;

const NODE: &str = "kube-edge-1";
const LONG: Duration = Duration::from_secs(60);

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
}

/// `kubectl apply` of a model and a device from `examples/`.
fn apply_examples(cloud: &Kedge, model: &str, device: &str) {
    cloud.ok(&["apply", "-f", &example(model), "-f", &example(device)]);
}

fn apply_virtual(cloud: &Kedge) {
    apply_examples(
        cloud,
        "v1beta1/devicemodel-virtual.yaml",
        "v1beta1/device-virtual.yaml",
    );
}

fn apply_seed(cloud: &Kedge) {
    apply_examples(cloud, "devicemodel-counter.yaml", "device-counter.yaml");
}

/// Sets the virtual sensor's desired `level` through v1beta1, as a KubeEdge user would.
fn set_level(cloud: &Kedge, value: &str) {
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/properties/1/desired/value","value":"{value}"}}]"#
    );
    let beta = "devices.v1beta1.devices.kubeedge.io";
    cloud.ok(&["patch", beta, "virtual-sensor", "--type=json", "-p", &patch]);
}

/// `kubectl get <what> -o jsonpath=<path>`, or "" when it fails.
fn get(cloud: &Kedge, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what);
    let jp = format!("jsonpath={path}");
    args.extend(["-o", &jp]);
    let out = cloud.kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn reported(cloud: &Kedge, prop: &str) -> String {
    let path = format!("{{.status.twins[?(@.propertyName==\"{prop}\")].reported.value}}");
    get(cloud, &["devicestatus", "virtual-sensor"], &path)
}

/// Registers until the edge's answer holds `device` (it reaches the edge from the cloud).
async fn register_until(
    dmi: &Path,
    socket: &Path,
    device: &str,
) -> kedge_proto::dmi::MapperRegisterResponse {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let answer = register(dmi, socket, "kedge-virtual")
            .await
            .expect("registered");
        if answer.device_list.iter().any(|d| d.name == device) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{device} never in the answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn updated_to(m: &TestMapper, prop: &str, value: &str) -> Option<()> {
    m.seen()
        .iter()
        .any(|s| matches!(s, Seen::Update(d) if desired(d, prop).as_deref() == Some(value)))
        .then_some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapper_gets_its_devices_its_reports_reach_device_status_and_desired_reaches_it() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    apply_virtual(&cloud);
    let lonely = "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: lonely\n\
        spec:\n  deviceModelRef:\n    name: virtual-model\n  nodeName: kube-edge-1\n  protocol:\n    \
        protocolName: no-such-protocol\n";
    cloud.apply(lonely);
    apply_seed(&cloud);
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &cloud.token());
    let dmi = edge_dir.path().join("dmi.sock");
    let mode = wait_for(LONG, "the DMI socket", || std::fs::metadata(&dmi).ok()).await;
    assert_eq!(
        mode.permissions().mode() & 0o777,
        0o660,
        "owner and group only"
    );

    let m = TestMapper::serve(&edge_dir.path().join("test-mapper.sock"));
    let answer = register_until(&dmi, &m.socket, "virtual-sensor").await;
    assert_eq!(
        answer.device_list.len(),
        answer.model_list.len(),
        "parallel lists"
    );
    let d = &answer.device_list[0];
    assert_eq!(answer.model_list[0].name, "virtual-model");
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(
        spec.protocol.as_ref().map(|p| p.protocol_name.as_str()),
        Some("kedge-virtual")
    );
    let visitors = spec.properties[0].visitors.as_ref().expect("visitors");
    assert!(
        visitors
            .config_data
            .as_ref()
            .is_some_and(|c| c.data.contains_key("dataType"))
    );
    assert_eq!(desired(d, "level").as_deref(), Some("10"));

    report(&dmi, "default", "virtual-sensor", &[("temperature", "21")])
        .await
        .expect("report taken");
    wait_for(LONG, "the report in DeviceStatus", || {
        (reported(&cloud, "temperature") == "21").then_some(())
    })
    .await;

    set_level(&cloud, "50");
    wait_for(LONG, "UpdateDevice with the new desired value", || {
        updated_to(&m, "level", "50")
    })
    .await;

    let mapped = |name: &str, field: &str| {
        let path = format!("{{.status.conditions[?(@.type==\"Mapped\")].{field}}}");
        get(&cloud, &["device", name], &path)
    };
    wait_for(LONG, "Mapped=True", || {
        (mapped("virtual-sensor", "status") == "True").then_some(())
    })
    .await;
    wait_for(LONG, "the lonely device pending", || {
        mapped("lonely", "message")
            .contains("no mapper for protocol no-such-protocol")
            .then_some(())
    })
    .await;
    assert_eq!(mapped("lonely", "status"), "False");

    // Bad input: each refused with its reason, and the edge stays up.
    let unknown = report(&dmi, "default", "nope", &[("temperature", "1")])
        .await
        .expect_err("refused");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("not bound to this node"),
        "{}",
        unknown.message()
    );
    let empty = report(&dmi, "default", "virtual-sensor", &[])
        .await
        .expect_err("refused");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("no twins"), "{}", empty.message());
    let huge = "x".repeat(5 << 20);
    let big = report(&dmi, "default", "virtual-sensor", &[("temperature", &huge)])
        .await
        .expect_err("refused");
    assert!(big.message().contains("too large"), "{:?}", big);
    let malformed = malformed_register(&dmi).await.expect_err("refused");
    assert_ne!(malformed.code(), Code::Ok);
    let nameless = mapper::edge(&dmi)
        .await
        .mapper_register(kedge_proto::dmi::MapperRegisterRequest {
            with_data: true,
            mapper: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(nameless.code(), Code::InvalidArgument);
    assert!(edge.alive(), "the edge survived bad input");
    register(&dmi, &m.socket, "kedge-virtual")
        .await
        .expect("still serving");

    cloud.ok(&["delete", "device", "virtual-sensor"]);
    wait_for(LONG, "RemoveDevice", || {
        m.seen()
            .iter()
            .any(|s| matches!(s, Seen::Remove(k) if k == "default/virtual-sensor"))
            .then_some(())
    })
    .await;
    wait_for(LONG, "the DeviceStatus gone with its Device", || {
        let out = cloud.kubectl(&["get", "devicestatus", "virtual-sensor"]);
        (!out.status.success()).then_some(())
    })
    .await;
    m.stop().await;
}

/// KubeEdge's Go clients (edgecore calling a mapper, the mapper framework calling the edge) send
/// the socket path, percent-encoded, as `:authority`, which h2 refuses: the edge's DMI server
/// answers them. These bytes are what grpc-go 1.67 sent for two `MapperRegister` calls on one
/// connection (see kedge-edge's `devicetwin/dmi/authority.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn a_go_grpc_client_dialling_the_socket_path_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const GRPC_GO: &[u8] = include_bytes!("../../kedge-edge/src/devicetwin/dmi/grpc-go-client.bin");
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let _edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &cloud.token());
    let dmi = edge_dir.path().join("dmi.sock");
    wait_for(LONG, "the DMI socket", || std::fs::metadata(&dmi).ok()).await;
    let mut conn = tokio::net::UnixStream::connect(&dmi)
        .await
        .expect("connect");
    conn.write_all(GRPC_GO).await.expect("write");

    // Read the answer's frames until both streams have ended, decoding every header block in
    // order (h2 compresses against its table).
    let mut decoder = loona_hpack::Decoder::new();
    let mut trailers = std::collections::BTreeMap::new();
    let read = async {
        while trailers.len() < 2 {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head).await.expect("a frame");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
            let mut payload = vec![0; len];
            conn.read_exact(&mut payload).await.expect("its payload");
            assert!(kind != 0x3, "RST_STREAM on stream {stream}: {payload:?}");
            assert!(kind != 0x7, "GOAWAY: {payload:?}");
            if kind == 0x1 {
                let headers = decoder.decode(&payload).expect("h2's headers decode");
                if flags & 0x1 != 0 {
                    let status = headers.iter().find(|(n, _)| n == b"grpc-status");
                    let status = status.map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                    trailers.insert(stream, status);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("both calls answered within 20 s");
    let ok = Some("0".to_string());
    assert_eq!(trailers.get(&1), Some(&ok), "first call");
    assert_eq!(trailers.get(&3), Some(&ok), "second call");
}

/// A MapperRegister whose body is not a MapperRegisterRequest (field 2 as a number).
async fn malformed_register(dmi: &Path) -> Result<(), tonic::Status> {
    let channel = mapper::channel(dmi).await.expect("channel");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/v1beta1.DeviceManagerService/MapperRegister",
    );
    let body = kedge_proto::dmi::PushMethodHttp {
        port: 5,
        ..Default::default()
    };
    let codec = tonic_prost::ProstCodec::<_, kedge_proto::dmi::MapperRegisterResponse>::default();
    grpc.unary(tonic::Request::new(body), path, codec)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_mapper_missed_reaches_it_across_mapper_edge_and_cloud_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cloud = Kedge::cloud(dir.path());
    apply_virtual(&cloud);
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &cloud.token());
    let dmi = edge_dir.path().join("dmi.sock");
    let socket = edge_dir.path().join("test-mapper.sock");
    let m = TestMapper::serve(&socket);
    wait_for(LONG, "the DMI socket", || dmi.exists().then_some(())).await;
    register_until(&dmi, &socket, "virtual-sensor").await;

    // The mapper dies; a desired change made meanwhile reaches it when it is back (retried).
    m.stop().await;
    set_level(&cloud, "70");
    let m = TestMapper::serve(&socket);
    wait_for(LONG, "the missed UpdateDevice, retried", || {
        updated_to(&m, "level", "70")
    })
    .await;

    // The cloud goes down, the edge restarts without it: a restarted mapper gets its devices
    // from the edge store, and its reports wait for the cloud.
    let token = cloud.token();
    cloud.kill9();
    edge.kill9();
    m.stop().await;
    let _edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &token);
    let m = TestMapper::serve(&socket);
    let answer = register_until(&dmi, &socket, "virtual-sensor").await;
    assert_eq!(
        desired(&answer.device_list[0], "level").as_deref(),
        Some("70")
    );
    report(&dmi, "default", "virtual-sensor", &[("temperature", "33")])
        .await
        .expect("taken with the cloud down");
    let cloud = Kedge::cloud_on(dir.path(), cloud.port, cloud.hub_port, cloud.join_port);
    wait_for(LONG, "the offline report in DeviceStatus", || {
        (reported(&cloud, "temperature") == "33").then_some(())
    })
    .await;
    m.stop().await;
}

#[test]
fn a_device_reads_and_patches_in_either_version() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    apply_seed(&cloud);
    apply_virtual(&cloud);
    let beta = "devices.v1beta1.devices.kubeedge.io";
    // The seed's v1alpha2 device, as v1beta1.
    assert_eq!(get(&cloud, &[beta, "counter"], "{.spec.nodeName}"), NODE);
    assert_eq!(
        get(
            &cloud,
            &[beta, "counter"],
            "{.spec.properties[0].desired.value}"
        ),
        "OFF"
    );
    let on = r#"[{"op":"replace","path":"/spec/properties/0/desired/value","value":"ON"}]"#;
    cloud.ok(&["patch", beta, "counter", "--type=json", "-p", on]);
    assert_eq!(
        get(
            &cloud,
            &["device", "counter"],
            "{.status.twins[0].desired.value}"
        ),
        "ON"
    );
    assert_eq!(
        get(
            &cloud,
            &["device", "counter"],
            "{.spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].key}"
        ),
        "kubernetes.io/hostname",
        "the seed's selector comes back as written"
    );
    // The seed's command (no version: v1alpha2) on it.
    let off = r#"[{"op":"replace","path":"/status/twins/0/desired/value","value":"OFF"}]"#;
    cloud.ok(&["patch", "device", "counter", "--type=json", "-p", off]);
    assert_eq!(
        get(
            &cloud,
            &[beta, "counter"],
            "{.spec.properties[0].desired.value}"
        ),
        "OFF"
    );
    assert_eq!(
        get(&cloud, &["device", "counter"], "{.apiVersion}"),
        "devices.kubeedge.io/v1alpha2"
    );

    // A v1beta1 device, as v1alpha2, patched there: its v1beta1-only fields stay.
    assert_eq!(
        get(
            &cloud,
            &["device", "virtual-sensor"],
            "{.spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        NODE
    );
    let level = r#"[{"op":"replace","path":"/status/twins/0/desired/value","value":"42"}]"#;
    cloud.ok(&[
        "patch",
        "device",
        "virtual-sensor",
        "--type=json",
        "-p",
        level,
    ]);
    assert_eq!(
        get(
            &cloud,
            &[beta, "virtual-sensor"],
            "{.spec.properties[1].desired.value}"
        ),
        "42"
    );
    assert_eq!(
        get(
            &cloud,
            &[beta, "virtual-sensor"],
            "{.spec.properties[1].reportToCloud}"
        ),
        "true"
    );
    assert_eq!(
        get(
            &cloud,
            &[beta, "virtual-sensor"],
            "{.spec.stateReport.reportCycle}"
        ),
        "1000"
    );
    assert_eq!(
        get(
            &cloud,
            &["devicemodel", "virtual-model"],
            "{.spec.properties[0].type.int.accessMode}"
        ),
        "ReadOnly"
    );
    let cols = cloud.ok(&["get", beta]);
    assert!(
        cols.contains("PROTOCOL") && cols.contains("kedge-virtual"),
        "{cols}"
    );
    assert!(
        cloud
            .ok(&["get", "devicestatus"])
            .contains("virtual-sensor")
    );

    // v1beta1 preferred: commands that name no version get it.
    let dir2 = tempfile::tempdir().expect("dir");
    let beta_first = Kedge::cloud_with(dir2.path(), 0, 0, 0, &["--device-api-version", "v1beta1"]);
    apply_virtual(&beta_first);
    assert_eq!(
        get(&beta_first, &["device", "virtual-sensor"], "{.apiVersion}"),
        "devices.kubeedge.io/v1beta1"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["cloud", "--device-api-version", "v2", "--data-dir"])
        .arg(dir2.path().join("other"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        why.contains("deviceApiVersion") && why.contains("v2"),
        "{why}"
    );
}

/// Kills a child process when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_mapper_runs_as_its_own_process_and_follows_desired() {
    let dir = tempfile::tempdir().expect("dir");
    let cloud = Kedge::cloud(dir.path());
    apply_virtual(&cloud);
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let _edge = EdgeProc::start(&cloud, edge_dir.path(), NODE, &cloud.token());
    let dmi = edge_dir.path().join("dmi.sock");
    let _mapper = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
            .args(["demo", "mapper", "--dmi-socket"])
            .arg(&dmi)
            .arg("--socket")
            .arg(edge_dir.path().join("demo-mapper.sock"))
            .spawn()
            .expect("kedge demo mapper runs"),
    );
    let counted = || reported(&cloud, "temperature").parse::<u64>().unwrap_or(0);
    common::wait_until(LONG, "the mapper's reports", || {
        (counted() >= 2).then_some(())
    });
    common::wait_until(LONG, "the level at its desired 10", || {
        (reported(&cloud, "level") == "10").then_some(())
    });
    set_level(&cloud, "12");
    common::wait_until(LONG, "the level to follow to 12", || {
        (reported(&cloud, "level") == "12").then_some(())
    });
    assert_eq!(
        get(
            &cloud,
            &["devicestatus", "virtual-sensor"],
            "{.status.state}"
        ),
        "ok"
    );
}
