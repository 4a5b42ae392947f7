//! A test mapper written against kedge's DMI proto: it serves `DeviceMapperService` on its own
//! unix socket and records every call the edge makes; helpers call the edge's
//! `DeviceManagerService` as a mapper does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kedge_proto::dmi;
use kedge_proto::dmi::device_manager_service_client::DeviceManagerServiceClient;
use kedge_proto::dmi::device_mapper_service_server::{
    DeviceMapperService, DeviceMapperServiceServer,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A call the edge made.
#[derive(Debug, Clone)]
pub enum Seen {
    Register(dmi::Device),
    Update(dmi::Device),
    Remove(String),
    CreateModel(String),
    UpdateModel(String),
    RemoveModel(String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

struct Recorder(Log);

impl Recorder {
    fn push(&self, s: Seen) {
        self.0.lock().expect("log").push(s);
    }
}

#[tonic::async_trait]
impl DeviceMapperService for Recorder {
    async fn register_device(
        &self,
        r: Request<dmi::RegisterDeviceRequest>,
    ) -> Result<Response<dmi::RegisterDeviceResponse>, Status> {
        let d = r.into_inner().device.unwrap_or_default();
        let resp = dmi::RegisterDeviceResponse {
            device_name: d.name.clone(),
            device_namespace: d.namespace.clone(),
        };
        self.push(Seen::Register(d));
        Ok(Response::new(resp))
    }
    async fn remove_device(
        &self,
        r: Request<dmi::RemoveDeviceRequest>,
    ) -> Result<Response<dmi::RemoveDeviceResponse>, Status> {
        let r = r.into_inner();
        self.push(Seen::Remove(format!(
            "{}/{}",
            r.device_namespace, r.device_name
        )));
        Ok(Response::new(dmi::RemoveDeviceResponse {}))
    }
    async fn update_device(
        &self,
        r: Request<dmi::UpdateDeviceRequest>,
    ) -> Result<Response<dmi::UpdateDeviceResponse>, Status> {
        self.push(Seen::Update(r.into_inner().device.unwrap_or_default()));
        Ok(Response::new(dmi::UpdateDeviceResponse {}))
    }
    async fn create_device_model(
        &self,
        r: Request<dmi::CreateDeviceModelRequest>,
    ) -> Result<Response<dmi::CreateDeviceModelResponse>, Status> {
        let m = r.into_inner().model.unwrap_or_default();
        self.push(Seen::CreateModel(format!("{}/{}", m.namespace, m.name)));
        Ok(Response::new(dmi::CreateDeviceModelResponse {
            device_model_name: m.name,
            device_model_namespace: m.namespace,
        }))
    }
    async fn remove_device_model(
        &self,
        r: Request<dmi::RemoveDeviceModelRequest>,
    ) -> Result<Response<dmi::RemoveDeviceModelResponse>, Status> {
        let r = r.into_inner();
        self.push(Seen::RemoveModel(format!(
            "{}/{}",
            r.model_namespace, r.model_name
        )));
        Ok(Response::new(dmi::RemoveDeviceModelResponse {}))
    }
    async fn update_device_model(
        &self,
        r: Request<dmi::UpdateDeviceModelRequest>,
    ) -> Result<Response<dmi::UpdateDeviceModelResponse>, Status> {
        let m = r.into_inner().model.unwrap_or_default();
        self.push(Seen::UpdateModel(format!("{}/{}", m.namespace, m.name)));
        Ok(Response::new(dmi::UpdateDeviceModelResponse {}))
    }
    async fn get_device(
        &self,
        _: Request<dmi::GetDeviceRequest>,
    ) -> Result<Response<dmi::GetDeviceResponse>, Status> {
        Err(Status::unimplemented("not used by the edge"))
    }
}

/// The test mapper, serving on `socket` until stopped.
pub struct TestMapper {
    pub socket: PathBuf,
    log: Log,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestMapper {
    pub fn serve(socket: &Path) -> TestMapper {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("mapper socket");
        let log: Log = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = DeviceMapperServiceServer::new(Recorder(log.clone()));
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestMapper {
            socket: socket.to_path_buf(),
            log,
            stop: Some(stop),
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }

    /// Stops serving (the socket goes, as when a mapper dies).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A channel to the unix socket at `path`.
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    kedge_edge::devicetwin::dmi::client::channel(path).await
}

/// A client of the edge's DMI server, once its socket answers.
pub async fn edge(dmi: &Path) -> DeviceManagerServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match channel(dmi).await {
            Ok(c) => return DeviceManagerServiceClient::new(c),
            Err(e) => assert!(Instant::now() < deadline, "edge DMI socket {dmi:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers a mapper of `protocol` whose socket is `socket`.
pub async fn register(
    dmi: &Path,
    socket: &Path,
    protocol: &str,
) -> Result<dmi::MapperRegisterResponse, Status> {
    let info = dmi::MapperInfo {
        name: format!("test-{protocol}"),
        version: "1".into(),
        api_version: "v1beta1".into(),
        protocol: protocol.into(),
        address: socket.to_string_lossy().as_bytes().to_vec(),
        state: "ok".into(),
    };
    let req = dmi::MapperRegisterRequest {
        with_data: true,
        mapper: Some(info),
    };
    edge(dmi)
        .await
        .mapper_register(req)
        .await
        .map(|r| r.into_inner())
}

/// Reports `values` (property → reported value) of device `ns/name`.
pub async fn report(
    dmi: &Path,
    ns: &str,
    name: &str,
    values: &[(&str, &str)],
) -> Result<(), Status> {
    let twins = values
        .iter()
        .map(|(p, v)| dmi::Twin {
            property_name: p.to_string(),
            reported: Some(dmi::TwinProperty {
                value: v.to_string(),
                metadata: Default::default(),
            }),
            observed_desired: None,
        })
        .collect();
    let req = dmi::ReportDeviceStatusRequest {
        device_name: name.into(),
        device_namespace: ns.into(),
        reported_device: Some(dmi::DeviceStatus {
            twins,
            report_to_cloud: true,
            report_cycle: 0,
        }),
    };
    edge(dmi).await.report_device_status(req).await.map(|_| ())
}

/// Polls `f` (async-friendly) until it returns `Some`, failing after `timeout`.
pub async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The desired value of `prop` in a DMI device.
pub fn desired(d: &dmi::Device, prop: &str) -> Option<String> {
    let props = &d.spec.as_ref()?.properties;
    let p = props.iter().find(|p| p.name == prop)?;
    Some(p.desired.as_ref()?.value.clone())
}
