//! `kedge-bench dmi`: DMI mappers end to end through a real `kedge up`, with a mapper in this
//! process (`DeviceMapperService` on its own unix socket, registered on the edge's DMI socket)
//! and kube-rs on the cloud's API:
//! - report: `ReportDeviceStatus` → the DeviceStatus's `status.twins[].reported`, seen by a watch;
//! - desired: a JSON patch of the Device's `spec.properties[0].desired` → the mapper's
//!   `UpdateDevice`;
//! - throughput: `ReportDeviceStatus` flat out, several in flight on each of several connections,
//!   across all devices (reports/s the edge took, and each call's time), then until every
//!   device's last value is in its DeviceStatus.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use kedge_proto::dmi;
use kedge_proto::dmi::device_manager_service_client::DeviceManagerServiceClient;
use kedge_proto::dmi::device_mapper_service_server::{
    DeviceMapperService, DeviceMapperServiceServer,
};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::api::{print_summary, progress, rss_kib, start_server};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    /// Devices on the edge node, all served by the one mapper.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Desired changes and reports timed one at a time.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Reports sent flat out for the throughput run.
    #[arg(long, default_value_t = 50_000)]
    reports: usize,
    /// Connections the throughput run sends over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Reports in flight on each connection (a mapper reports each device on its own timer, so
    /// calls overlap: KubeEdge's mapper framework even dials a connection per report).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const NODE: &str = "kube-edge-1";
const PROTOCOL: &str = "bench-dmi";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("devices.kubeedge.io", "v1beta1", kind),
        plural,
    )
}

fn name(i: usize) -> String {
    format!("dmi-{i:05}")
}

async fn create_devices(client: &kube::Client, n: usize) -> anyhow::Result<Api<DynamicObject>> {
    let models: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &resource("DeviceModel", "devicemodels"),
    );
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "dmi-model"},
        "spec": {"protocol": PROTOCOL, "properties": [{"name": "value", "type": "STRING", "accessMode": "ReadWrite"}]}}))?;
    models.create(&PostParams::default(), &model).await?;
    let devices: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource("Device", "devices"));
    stream::iter(0..n)
        .map(|i| {
            let devices = devices.clone();
            async move {
                let d: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                    "metadata": {"name": name(i)},
                    "spec": {"deviceModelRef": {"name": "dmi-model"}, "nodeName": NODE,
                        "protocol": {"protocolName": PROTOCOL},
                        "properties": [{"name": "value", "reportToCloud": true,
                            "desired": {"value": "init"},
                            "visitors": {"protocolName": PROTOCOL, "configData": {"register": i}}}]}}))?;
                devices.create(&PostParams::default(), &d).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(devices)
}

/// The mapper: every UpdateDevice's (device, desired value) goes to a channel.
struct Mapper(mpsc::UnboundedSender<(String, String)>);

#[tonic::async_trait]
impl DeviceMapperService for Mapper {
    async fn register_device(
        &self,
        _: Request<dmi::RegisterDeviceRequest>,
    ) -> Result<Response<dmi::RegisterDeviceResponse>, Status> {
        Ok(Response::new(dmi::RegisterDeviceResponse::default()))
    }
    async fn remove_device(
        &self,
        _: Request<dmi::RemoveDeviceRequest>,
    ) -> Result<Response<dmi::RemoveDeviceResponse>, Status> {
        Ok(Response::new(dmi::RemoveDeviceResponse {}))
    }
    async fn update_device(
        &self,
        r: Request<dmi::UpdateDeviceRequest>,
    ) -> Result<Response<dmi::UpdateDeviceResponse>, Status> {
        let d = r.into_inner().device.unwrap_or_default();
        let desired = d
            .spec
            .as_ref()
            .and_then(|s| s.properties.first())
            .and_then(|p| p.desired.as_ref())
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let _ = self.0.send((d.name, desired));
        Ok(Response::new(dmi::UpdateDeviceResponse {}))
    }
    async fn create_device_model(
        &self,
        _: Request<dmi::CreateDeviceModelRequest>,
    ) -> Result<Response<dmi::CreateDeviceModelResponse>, Status> {
        Ok(Response::new(dmi::CreateDeviceModelResponse::default()))
    }
    async fn remove_device_model(
        &self,
        _: Request<dmi::RemoveDeviceModelRequest>,
    ) -> Result<Response<dmi::RemoveDeviceModelResponse>, Status> {
        Ok(Response::new(dmi::RemoveDeviceModelResponse {}))
    }
    async fn update_device_model(
        &self,
        _: Request<dmi::UpdateDeviceModelRequest>,
    ) -> Result<Response<dmi::UpdateDeviceModelResponse>, Status> {
        Ok(Response::new(dmi::UpdateDeviceModelResponse {}))
    }
    async fn get_device(
        &self,
        _: Request<dmi::GetDeviceRequest>,
    ) -> Result<Response<dmi::GetDeviceResponse>, Status> {
        Err(Status::unimplemented("unused"))
    }
}

async fn edge(path: &Path) -> anyhow::Result<DeviceManagerServiceClient<Channel>> {
    let channel = kedge_edge::devicetwin::dmi::client::channel(path).await?;
    Ok(DeviceManagerServiceClient::new(channel))
}

fn report(i: usize, value: &str) -> dmi::ReportDeviceStatusRequest {
    dmi::ReportDeviceStatusRequest {
        device_name: name(i),
        device_namespace: "default".into(),
        reported_device: Some(dmi::DeviceStatus {
            twins: vec![dmi::Twin {
                property_name: "value".into(),
                reported: Some(dmi::TwinProperty {
                    value: value.into(),
                    metadata: Default::default(),
                }),
                observed_desired: None,
            }],
            report_to_cloud: true,
            report_cycle: 0,
        }),
    }
}

/// Registers until the edge's answer holds all `n` devices.
async fn register(dmi_path: &Path, socket: &Path, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let info = dmi::MapperInfo {
            name: "bench-mapper".into(),
            protocol: PROTOCOL.into(),
            address: socket.to_string_lossy().as_bytes().to_vec(),
            state: "ok".into(),
            ..Default::default()
        };
        let req = dmi::MapperRegisterRequest {
            with_data: true,
            mapper: Some(info),
        };
        let answer = edge(dmi_path)
            .await?
            .mapper_register(req)
            .await?
            .into_inner();
        if answer.device_list.len() >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the edge did not get the {n} devices within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reported_of(o: &DynamicObject) -> Option<&str> {
    o.data
        .pointer("/status/twins/0/reported/value")
        .and_then(Value::as_str)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server(a.kedge.clone())?;
    let pid = server.child.id();
    let dmi_path = PathBuf::from(
        server
            .endpoints
            .get("DMI socket")
            .context("kedge up printed no DMI socket")?,
    );
    let client = server.client().await?;
    let devices = create_devices(&client, a.devices).await?;
    let statuses: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &resource("DeviceStatus", "devicestatuses"),
    );
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("bench-mapper.sock");
    let (tx, mut updates) = mpsc::unbounded_channel();
    let listener = tokio::net::UnixListener::bind(&socket)?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DeviceMapperServiceServer::new(Mapper(tx)))
            .serve_with_incoming(kedge_edge::devicetwin::dmi::incoming::incoming(listener)),
    );
    let sync = register(&dmi_path, &socket, a.devices).await?;
    eprintln!(
        "{} devices in the mapper's registration after {:.1} s",
        a.devices,
        sync.as_secs_f64()
    );
    let (rss_ready, _) = rss_kib(pid);

    // Desired → UpdateDevice, one change at a time.
    let mut desired = Latencies::default();
    for i in 0..a.samples {
        let (device, value) = (name(i % a.devices), format!("d{i}"));
        let ops =
            json!([{"op": "replace", "path": "/spec/properties/0/desired/value", "value": value}]);
        let t = Instant::now();
        devices
            .patch(
                &device,
                &PatchParams::default(),
                &Patch::Json::<Value>(serde_json::from_value(ops)?),
            )
            .await?;
        loop {
            let (d, v) = tokio::time::timeout(Duration::from_secs(10), updates.recv())
                .await
                .context("an UpdateDevice within 10 s")?
                .context("mapper")?;
            if d == device && v == value {
                desired.push(t.elapsed());
                break;
            }
        }
        progress("desired → UpdateDevice", i + 1, a.samples);
    }
    eprintln!();

    // Report → DeviceStatus, one at a time, seen through a watch.
    let rv = statuses
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = statuses
        .watch(&WatchParams::default().timeout(290), &rv)
        .await?
        .boxed();
    let mut mapper = edge(&dmi_path).await?;
    let mut reported = Latencies::default();
    for i in 0..a.samples {
        let (device, value) = (name(i % a.devices), format!("r{i}"));
        let t = Instant::now();
        mapper
            .report_device_status(report(i % a.devices, &value))
            .await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
                .await
                .context("a DeviceStatus change within 10 s")??;
            if let Some(WatchEvent::Modified(o)) = ev
                && o.metadata.name.as_deref() == Some(device.as_str())
                && reported_of(&o) == Some(value.as_str())
            {
                reported.push(t.elapsed());
                break;
            }
        }
        progress("report → DeviceStatus", i + 1, a.samples);
    }
    eprintln!();
    drop(watch);

    // Throughput: reports flat out over several connections.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..a.connections.max(1) {
        let c = edge(&dmi_path).await?;
        for _ in 0..a.in_flight.max(1) {
            let (next, n, total, mut c) = (next.clone(), a.devices, a.reports, c.clone());
            senders.push(tokio::spawn(async move {
                let mut calls = Latencies::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        return anyhow::Ok(calls);
                    }
                    let t = Instant::now();
                    c.report_device_status(report(k % n, &format!("t{k}")))
                        .await?;
                    calls.push(t.elapsed());
                }
            }));
        }
    }
    let mut calls = Latencies::default();
    for s in senders {
        calls.extend(s.await??);
    }
    let edge_secs = started.elapsed().as_secs_f64();
    // The last value each device was sent.
    let last = |i: usize| {
        let rounds = (a.reports - 1 - i) / a.devices;
        format!("t{}", i + rounds * a.devices)
    };
    let touched = a.devices.min(a.reports);
    loop {
        let list = statuses.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|o| {
                let i = o
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix("dmi-"))
                    .and_then(|n| n.parse::<usize>().ok());
                i.is_some_and(|i| i < touched && reported_of(o) == Some(last(i).as_str()))
            })
            .count();
        if done == touched {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the cloud did not converge: {done} of {touched} devices");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cloud_secs = started.elapsed().as_secs_f64();
    let (rss_end, hwm) = rss_kib(pid);
    let summary = json!({
        "devices": a.devices,
        "registration_with_all_devices_s": sync.as_secs_f64(),
        "desired_to_update_device_p50_ms": desired.quantile_ms(0.5),
        "desired_to_update_device_p99_ms": desired.quantile_ms(0.99),
        "desired_to_update_device_max_ms": desired.quantile_ms(1.0),
        "report_to_device_status_p50_ms": reported.quantile_ms(0.5),
        "report_to_device_status_p99_ms": reported.quantile_ms(0.99),
        "report_to_device_status_max_ms": reported.quantile_ms(1.0),
        "reports": a.reports,
        "connections": a.connections,
        "in_flight_per_connection": a.in_flight,
        "reports_per_sec_through_edge": (a.reports as f64 / edge_secs).round(),
        "report_call_under_load_p50_ms": calls.quantile_ms(0.5),
        "report_call_under_load_p99_ms": calls.quantile_ms(0.99),
        "all_latest_in_cloud_after_s": cloud_secs,
        "kedge_up_rss_ready_mib": rss_ready as f64 / 1024.0,
        "kedge_up_rss_end_mib": rss_end as f64 / 1024.0,
        "kedge_up_rss_peak_mib": hwm as f64 / 1024.0,
    });
    print_summary(&summary, a.json)
}
