//! `DeviceManagerService` on the edge's unix socket: mappers register and report here. The
//! socket is bound under a temporary name, made owner- and group-only (0660; its directory
//! 0750 when created), then renamed into place, so no other user can pose as a mapper and be
//! handed the devices' settings. Every answer is a gRPC status with the reason; a malformed or
//! oversized message is refused by the gRPC layer (4 MiB), never a crash.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kedge_core::throttle::TokenBucket;
use kedge_core::twin::TwinError;
use kedge_proto::dmi;
use kedge_proto::dmi::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use tonic::{Request, Response, Status};

use super::records::Mapper;
use super::{Dmi, client};
use crate::devicetwin::DeviceTwin;

/// Largest message a mapper may send.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Calls per second across all mappers (KubeEdge: 1 per second, burst 100, which two properties
/// reporting each second exhaust).
pub const RATE: u32 = 20_000;

struct Service {
    dmi: Arc<Dmi>,
    twin: Arc<DeviceTwin>,
    limiter: Mutex<TokenBucket>,
}

impl Service {
    fn admit(&self, what: &str) -> Result<(), Status> {
        let now = std::time::Duration::from_millis(kedge_core::clock::monotonic_ms());
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if l.try_take(now) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "too many DMI calls (over {RATE} a second): {what} not taken, try again"
            )))
        }
    }
}

fn device_id(namespace: &str, name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("deviceName is empty"));
    }
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    Ok(format!("{ns}/{name}"))
}

fn twin_status(e: TwinError) -> Status {
    match e {
        TwinError::UnknownDevice(id) => Status::not_found(format!(
            "device {id} is not bound to this node (or does not exist)"
        )),
        TwinError::BadRequest(why) => Status::invalid_argument(why),
        TwinError::TooLarge(why) => Status::invalid_argument(why),
        e @ TwinError::NotStored(_) => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl DeviceManagerService for Service {
    async fn mapper_register(
        &self,
        req: Request<dmi::MapperRegisterRequest>,
    ) -> Result<Response<dmi::MapperRegisterResponse>, Status> {
        let req = req.into_inner();
        let info = req
            .mapper
            .ok_or_else(|| Status::invalid_argument("MapperRegisterRequest has no mapper"))?;
        self.admit(&format!("registration of mapper {}", info.name))?;
        if info.protocol.is_empty() {
            return Err(Status::invalid_argument(format!(
                "mapper {} names no protocol",
                info.name
            )));
        }
        let address = client::socket_path(&info.address).ok_or_else(|| {
            Status::invalid_argument(format!(
                "mapper {} gives no socket path (MapperInfo.address)",
                info.name
            ))
        })?;
        let record = serde_json::json!({"name": info.name, "version": info.version,
            "api_version": info.api_version, "protocol": info.protocol,
            "address": address, "state": info.state});
        let m = Mapper {
            protocol: info.protocol.clone(),
            name: info.name.clone(),
            address,
            info: record.to_string(),
        };
        let answer = self
            .dmi
            .register(m, req.with_data)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(answer))
    }

    async fn report_device_status(
        &self,
        req: Request<dmi::ReportDeviceStatusRequest>,
    ) -> Result<Response<dmi::ReportDeviceStatusResponse>, Status> {
        let req = req.into_inner();
        let id = device_id(&req.device_namespace, &req.device_name)?;
        self.admit(&format!("report of device {id}"))?;
        let twins = req.reported_device.map(|d| d.twins).unwrap_or_default();
        if twins.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the report of device {id} has no twins"
            )));
        }
        let reported: Vec<(String, String)> = twins
            .into_iter()
            .map(|t| {
                let value = t.reported.map(|r| r.value).unwrap_or_default();
                (t.property_name, value)
            })
            .collect();
        self.twin
            .report_from_mapper(&id, reported)
            .await
            .map_err(twin_status)?;
        Ok(Response::new(dmi::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        req: Request<dmi::ReportDeviceStatesRequest>,
    ) -> Result<Response<dmi::ReportDeviceStatesResponse>, Status> {
        let req = req.into_inner();
        let id = device_id(&req.device_namespace, &req.device_name)?;
        self.admit(&format!("state of device {id}"))?;
        if req.state.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the state report of device {id} has no state"
            )));
        }
        self.twin
            .state_from_mapper(&id, &req.state)
            .await
            .map_err(twin_status)?;
        Ok(Response::new(dmi::ReportDeviceStatesResponse {}))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("DMI socket {path}: {cause}")]
pub struct SocketError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// Binds `path` (replacing a stale socket), owner and group only.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    let err = |cause| SocketError {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)?;
    }
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(listener)
}

/// Serves `DeviceManagerService` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::UnixListener,
    dmi: Arc<Dmi>,
    twin: Arc<DeviceTwin>,
    stop: impl std::future::Future<Output = ()>,
) {
    let now = std::time::Duration::from_millis(kedge_core::clock::monotonic_ms());
    let svc = Service {
        dmi,
        twin,
        limiter: Mutex::new(TokenBucket::new(RATE, RATE, now)),
    };
    let server = DeviceManagerServiceServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(64 << 20);
    let incoming = super::incoming::incoming(listener);
    let result = tonic::transport::Server::builder()
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "DMI server stopped");
    }
}
