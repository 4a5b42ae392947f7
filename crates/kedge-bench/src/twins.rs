//! `kedge-bench twins`: device twins end to end through a real `kedge up`, with a real MQTT
//! client on the edge's broker and kube-rs on the cloud's API:
//! - desired: `kubectl patch`-equivalent JSON patch → the device's `twin/update/delta`;
//! - reported: an MQTT `twin/update` → the Device's `status.twins[].reported` seen by a watch;
//! - throughput: reports published flat out, answered by the edge (`.../result`), until every
//!   device's last value is in the cloud.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{print_summary, progress, rss_kib, start_server};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    /// Devices on the edge node.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Desired changes and reports timed one at a time.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Reports published flat out for the throughput run.
    #[arg(long, default_value_t = 20_000)]
    reports: usize,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) const NODE: &str = "kube-edge-1";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("devices.kubeedge.io", "v1alpha2", kind),
        plural,
    )
}

fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn topic(i: usize, suffix: &str) -> String {
    format!("$hw/events/device/default/{}/{suffix}", name(i))
}

/// A one-property model and `n` Devices (`bench-00000`, …) bound to `node`, 16 creates in flight.
pub(crate) async fn create_devices(
    client: &kube::Client,
    n: usize,
    node: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let models: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &resource("DeviceModel", "devicemodels"),
    );
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "DeviceModel",
        "metadata": {"name": "bench-model"},
        "spec": {"properties": [{"name": "value", "type": {"string": {"accessMode": "ReadWrite"}}}]}}))?;
    models.create(&PostParams::default(), &model).await?;
    let devices: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource("Device", "devices"));
    stream::iter(0..n)
        .map(|i| {
            let devices = devices.clone();
            async move {
                let d: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
                    "metadata": {"name": name(i)},
                    "spec": {"deviceModelRef": {"name": "bench-model"}, "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
                    "status": {"twins": [{"propertyName": "value",
                        "desired": {"value": "init", "metadata": {"type": "string"}},
                        "reported": {"value": "", "metadata": {"type": "string"}}}]}}))?;
                devices.create(&PostParams::default(), &d).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(devices)
}

/// An MQTT client whose incoming publishes arrive on a channel as (topic, JSON).
pub(crate) async fn mqtt(
    port: u16,
    id: &str,
    subs: &[&str],
) -> anyhow::Result<(AsyncClient, mpsc::UnboundedReceiver<(String, Value)>)> {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(16 << 20, 16 << 20)
        .set_inflight(1000)
        .set_request_channel_capacity(100_000);
    let (client, mut eventloop) = AsyncClient::new(opts, 100_000);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::channel(1);
    let wait = !subs.is_empty();
    let subs: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
    let sub_client = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for s in &subs {
                        let _ = sub_client.subscribe(s.clone(), QoS::AtLeastOnce).await;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // JSON payloads parsed; anything else as a string.
                    let v = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&p.payload).into_owned())
                    });
                    let _ = tx.send((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    if wait {
        tokio::time::timeout(Duration::from_secs(30), ready.recv())
            .await
            .context("MQTT subscribe")?;
    }
    Ok((client, rx))
}

/// Waits until the edge knows all `n` devices (membership/get).
pub(crate) async fn wait_for_devices(
    client: &AsyncClient,
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        client
            .publish(
                format!("$hw/events/node/{NODE}/membership/get"),
                QoS::AtLeastOnce,
                false,
                r#"{"event_id":"b"}"#,
            )
            .await?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(Some((t, v))) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            if t.ends_with("membership/get/result")
                && v["devices"].as_array().map_or(0, Vec::len) >= n
            {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the edge did not get the {n} devices within 5 minutes");
        }
    }
}

/// Report → Device status, `samples` times one at a time over `n` devices, each timed from the
/// MQTT publish until a watch sees the value (`prefix` keeps runs' values apart), a new one
/// starting `every` after the last began (none: at once).
pub(crate) async fn reported(
    devices: &Api<DynamicObject>,
    mq: &AsyncClient,
    n: usize,
    samples: usize,
    prefix: &str,
    every: Option<Duration>,
) -> anyhow::Result<Latencies> {
    let rv = devices
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = devices
        .watch(&WatchParams::default().timeout(290), &rv)
        .await?
        .boxed();
    let mut reported = Latencies::default();
    for i in 0..samples {
        let value = format!("{prefix}{i}");
        let payload =
            json!({"event_id": value, "twin": {"value": {"actual": {"value": value}}}}).to_string();
        let t = Instant::now();
        mq.publish(
            topic(i % n, "twin/update"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
                .await
                .context("a Device change within 10 s")??;
            if let Some(WatchEvent::Modified(o)) = ev
                && o.data
                    .pointer("/status/twins/0/reported/value")
                    .and_then(Value::as_str)
                    == Some(value.as_str())
            {
                reported.push(t.elapsed());
                break;
            }
        }
        if (i + 1) % 50 == 0 {
            progress("report → status", i + 1, samples);
        }
        if let Some(every) = every {
            tokio::time::sleep_until((t + every).into()).await;
        }
    }
    eprintln!();
    Ok(reported)
}

/// What `kubectl patch device --type=json` sends to change the desired value.
fn desired_patch(value: &str) -> anyhow::Result<Patch<Value>> {
    let ops = json!([{"op": "replace", "path": "/status/twins/0/desired/value", "value": value}]);
    Ok(Patch::Json(serde_json::from_value(ops)?))
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server(a.kedge.clone())?;
    let pid = server.child.id();
    let port = server.port("MQTT broker")?;
    let client = server.client().await?;
    let devices = create_devices(&client, a.devices, NODE).await?;
    let (mq, mut rx) = mqtt(
        port,
        "bench-device",
        &[
            "$hw/events/device/+/+/twin/update/delta",
            "$hw/events/device/+/+/twin/update/result",
            "$hw/events/node/+/membership/get/result",
        ],
    )
    .await?;
    let sync = wait_for_devices(&mq, &mut rx, a.devices).await?;
    eprintln!(
        "{} devices on the edge after {:.1} s",
        a.devices,
        sync.as_secs_f64()
    );
    let (rss_ready, _) = rss_kib(pid);

    // Desired → delta, one change at a time.
    let mut desired = Latencies::default();
    for i in 0..a.samples {
        let value = format!("d{i}");
        let t = Instant::now();
        devices
            .patch(
                &name(i % a.devices),
                &PatchParams::default(),
                &desired_patch(&value)?,
            )
            .await?;
        loop {
            let (_, v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("a delta within 10 s")?
                .context("MQTT")?;
            if v.pointer("/delta/value").and_then(Value::as_str) == Some(value.as_str()) {
                desired.push(t.elapsed());
                break;
            }
        }
        progress("desired → delta", i + 1, a.samples);
    }
    eprintln!();

    // Report → Device status, one at a time, seen through a watch.
    let mut reported = reported(&devices, &mq, a.devices, a.samples, "r", None).await?;

    // Throughput: reports flat out; the edge answers each one on .../result.
    while rx.try_recv().is_ok() {}
    let last: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let started = Instant::now();
    let publisher = {
        let (mq, last, n, devices) = (mq.clone(), last.clone(), a.reports, a.devices);
        tokio::spawn(async move {
            for i in 0..n {
                let value = format!("t{i}");
                let payload = json!({"event_id": format!("t{i}"), "twin": {"value": {"actual": {"value": value}}}}).to_string();
                mq.publish(
                    topic(i % devices, "twin/update"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await?;
                if let Ok(mut l) = last.lock() {
                    l.insert(i % devices, value);
                }
            }
            anyhow::Ok(())
        })
    };
    let mut answered = 0;
    while answered < a.reports {
        let (t, v) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .context("edge answers within 30 s")?
            .context("MQTT")?;
        if t.ends_with("twin/update/result")
            && v["event_id"].as_str().is_some_and(|e| e.starts_with('t'))
        {
            answered += 1;
            if answered % 1000 == 0 {
                progress("reports answered by the edge", answered, a.reports);
            }
        }
    }
    let edge_secs = started.elapsed().as_secs_f64();
    eprintln!();
    publisher.await??;
    let want = last.lock().map(|l| l.clone()).unwrap_or_default();
    loop {
        let list = devices.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|d| {
                let i: usize = d
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix("bench-"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                want.get(&i).map(String::as_str)
                    == d.data
                        .pointer("/status/twins/0/reported/value")
                        .and_then(Value::as_str)
            })
            .count();
        if done == want.len() {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the cloud did not converge: {done} of {} devices",
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cloud_secs = started.elapsed().as_secs_f64();
    let (rss_end, hwm) = rss_kib(pid);
    let summary = json!({
        "devices": a.devices,
        "edge_synced_s": sync.as_secs_f64(),
        "desired_to_delta_p50_ms": desired.quantile_ms(0.5),
        "desired_to_delta_p99_ms": desired.quantile_ms(0.99),
        "desired_to_delta_max_ms": desired.quantile_ms(1.0),
        "report_to_status_p50_ms": reported.quantile_ms(0.5),
        "report_to_status_p99_ms": reported.quantile_ms(0.99),
        "report_to_status_max_ms": reported.quantile_ms(1.0),
        "reports": a.reports,
        "reports_per_sec_through_edge": (a.reports as f64 / edge_secs).round(),
        "all_latest_in_cloud_after_s": cloud_secs,
        "kedge_up_rss_ready_mib": rss_ready as f64 / 1024.0,
        "kedge_up_rss_end_mib": rss_end as f64 / 1024.0,
        "kedge_up_rss_peak_mib": hwm as f64 / 1024.0,
    });
    print_summary(&summary, a.json)
}
