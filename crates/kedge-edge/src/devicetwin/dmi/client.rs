//! Calls to a mapper's `DeviceMapperService` on its unix socket: a connection per call, each
//! bounded to 10 s (as edgecore), so a hung mapper holds nothing up for long.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kedge_proto::dmi;
use kedge_proto::dmi::device_mapper_service_client::DeviceMapperServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long one call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the mapper at {path}: {cause}")]
    Connect {
        path: String,
        cause: tonic::transport::Error,
    },
    #[error("the mapper at {path} refused {call}: {status}")]
    Refused {
        path: String,
        call: &'static str,
        status: tonic::Status,
    },
    #[error("the mapper at {0} did not answer within 10 s")]
    Timeout(String),
}

/// A mapper's socket path from what it announced (raw bytes; `unix://` accepted too).
pub fn socket_path(address: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(address).ok()?.trim();
    let s = s.strip_prefix("unix://").unwrap_or(s);
    (!s.is_empty()).then(|| s.to_string())
}

/// A gRPC channel to the unix socket at `path` (the URI tonic requires is unused). Mappers use
/// the same to reach the edge (`kedge demo mapper`, the load tool, the tests).
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let p = path.to_path_buf();
    Endpoint::from_static("http://unix.invalid")
        .connect_timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

async fn connect(path: &str) -> Result<DeviceMapperServiceClient<Channel>, CallError> {
    let channel = channel(Path::new(path))
        .await
        .map_err(|cause| CallError::Connect {
            path: path.to_string(),
            cause,
        })?;
    Ok(DeviceMapperServiceClient::new(channel))
}

/// One call to the mapper at `path`.
pub enum Call {
    Register(dmi::Device),
    Update(dmi::Device),
    RemoveDevice { name: String, namespace: String },
    CreateModel(dmi::DeviceModel),
    UpdateModel(dmi::DeviceModel),
    RemoveModel { name: String, namespace: String },
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Register(_) => "RegisterDevice",
            Call::Update(_) => "UpdateDevice",
            Call::RemoveDevice { .. } => "RemoveDevice",
            Call::CreateModel(_) => "CreateDeviceModel",
            Call::UpdateModel(_) => "UpdateDeviceModel",
            Call::RemoveModel { .. } => "RemoveDeviceModel",
        }
    }
}

pub async fn call(path: &str, c: Call) -> Result<(), CallError> {
    let name = c.name();
    let work = async {
        let mut m = connect(path).await?;
        let r = match c {
            Call::Register(d) => m
                .register_device(dmi::RegisterDeviceRequest { device: Some(d) })
                .await
                .map(|_| ()),
            Call::Update(d) => m
                .update_device(dmi::UpdateDeviceRequest { device: Some(d) })
                .await
                .map(|_| ()),
            Call::RemoveDevice { name, namespace } => m
                .remove_device(dmi::RemoveDeviceRequest {
                    device_name: name,
                    device_namespace: namespace,
                })
                .await
                .map(|_| ()),
            Call::CreateModel(model) => m
                .create_device_model(dmi::CreateDeviceModelRequest { model: Some(model) })
                .await
                .map(|_| ()),
            Call::UpdateModel(model) => m
                .update_device_model(dmi::UpdateDeviceModelRequest { model: Some(model) })
                .await
                .map(|_| ()),
            Call::RemoveModel { name, namespace } => m
                .remove_device_model(dmi::RemoveDeviceModelRequest {
                    model_name: name,
                    model_namespace: namespace,
                })
                .await
                .map(|_| ()),
        };
        r.map_err(|status| CallError::Refused {
            path: path.to_string(),
            call: name,
            status,
        })
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .map_err(|_| CallError::Timeout(path.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_come_raw_or_as_unix_urls() {
        assert_eq!(
            socket_path(b"/etc/kubeedge/v.sock").as_deref(),
            Some("/etc/kubeedge/v.sock")
        );
        assert_eq!(
            socket_path(b"unix:///tmp/m.sock").as_deref(),
            Some("/tmp/m.sock")
        );
        assert_eq!(socket_path(b""), None);
        assert_eq!(socket_path(&[0xff, 0xfe]), None);
    }
}
