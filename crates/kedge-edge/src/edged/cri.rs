//! The CRI v1 client Edged drives the container runtime with: gRPC over the runtime's unix
//! socket (containerd's by default). Only the calls Edged makes, with errors that say which
//! call failed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kedge_proto::cri;
use kedge_proto::cri::image_service_client::ImageServiceClient;
use kedge_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The default runtime endpoint (containerd's).
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// Every call is bounded, so a hung runtime shows as errors (and a NotReady node), not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI endpoint {0:?}: only unix:// endpoints are supported")]
    Endpoint(String),
    #[error("container runtime {call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

impl CriError {
    /// The runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// What the runtime said, without the call's name (for pod status messages).
    pub fn message(&self) -> String {
        match self {
            CriError::Call { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Call {
        call,
        status: Box::new(status),
    }
}

/// A connection to the runtime; cheap to clone. It connects lazily and reconnects by itself,
/// so a runtime that starts after the edge (or restarts) is picked up.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// `unix:///path` (or a bare path) → the socket path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(CriError::Endpoint(endpoint.into()))
    }
}

impl Cri {
    pub fn new(endpoint: &str) -> Result<Cri, CriError> {
        let path = socket_path(endpoint)?;
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub async fn version(&self) -> Result<cri::VersionResponse, CriError> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        let r = self.runtime.clone().version(req).await;
        Ok(r.map_err(call("Version"))?.into_inner())
    }

    pub async fn sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        let filter = cri::PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        };
        let req = cri::ListPodSandboxRequest {
            filter: Some(filter),
        };
        let r = self.runtime.clone().list_pod_sandbox(req).await;
        Ok(r.map_err(call("ListPodSandbox"))?.into_inner().items)
    }

    pub async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, CriError> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let r = self.runtime.clone().pod_sandbox_status(req).await;
        let status = r.map_err(call("PodSandboxStatus"))?.into_inner().status;
        Ok(status.unwrap_or_default())
    }

    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, CriError> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let r = self.runtime.clone().run_pod_sandbox(req).await;
        Ok(r.map_err(call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Stops and removes a sandbox and its containers; a missing one is not an error.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let r = self.runtime.clone().stop_pod_sandbox(stop).await;
        ignore_not_found(r.map(drop).map_err(call("StopPodSandbox")))?;
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let r = self.runtime.clone().remove_pod_sandbox(remove).await;
        ignore_not_found(r.map(drop).map_err(call("RemovePodSandbox")))
    }

    pub async fn containers(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<cri::Container>, CriError> {
        let filter = cri::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        };
        let req = cri::ListContainersRequest {
            filter: Some(filter),
        };
        let r = self.runtime.clone().list_containers(req).await;
        Ok(r.map_err(call("ListContainers"))?.into_inner().containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, CriError> {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let r = self.runtime.clone().container_status(req).await;
        let status = r.map_err(call("ContainerStatus"))?.into_inner().status;
        Ok(status.unwrap_or_default())
    }

    /// Creates and starts a container; one that fails to start is removed again.
    pub async fn start_container(
        &self,
        sandbox: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let r = self.runtime.clone().create_container(req).await;
        let id = r
            .map_err(call("CreateContainer"))?
            .into_inner()
            .container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        let r = self.runtime.clone().start_container(start).await;
        if let Err(e) = r.map_err(call("StartContainer")) {
            let _ = self.remove_container(&id, 0).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace_s`).
    pub async fn stop_container(&self, id: &str, grace_s: i64) -> Result<(), CriError> {
        let req = cri::StopContainerRequest {
            container_id: id.into(),
            timeout: grace_s,
        };
        let r = self.runtime.clone().stop_container(req).await;
        ignore_not_found(r.map(drop).map_err(call("StopContainer")))
    }

    /// Stops (within `grace_s`) and removes a container; a missing one is not an error.
    pub async fn remove_container(&self, id: &str, grace_s: i64) -> Result<(), CriError> {
        self.stop_container(id, grace_s).await?;
        let req = cri::RemoveContainerRequest {
            container_id: id.into(),
        };
        let r = self.runtime.clone().remove_container(req).await;
        ignore_not_found(r.map(drop).map_err(call("RemoveContainer")))
    }

    /// Runs `cmd` in a container; the exit code and the output.
    pub async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout_s,
        };
        let r = self.runtime.clone().exec_sync(req).await;
        Ok(r.map_err(call("ExecSync"))?.into_inner())
    }

    /// The streaming server's URL for an exec in container `id` (kubectl exec).
    pub async fn exec_url(
        &self,
        id: &str,
        cmd: Vec<String>,
        io: kedge_stream::request::Io,
    ) -> Result<String, CriError> {
        let req = cri::ExecRequest {
            container_id: id.into(),
            cmd,
            tty: io.tty,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr && !io.tty,
        };
        let r = self.runtime.clone().exec(req).await;
        Ok(r.map_err(call("Exec"))?.into_inner().url)
    }

    /// The streaming server's URL to attach to container `id`.
    pub async fn attach_url(
        &self,
        id: &str,
        io: kedge_stream::request::Io,
    ) -> Result<String, CriError> {
        let req = cri::AttachRequest {
            container_id: id.into(),
            stdin: io.stdin,
            tty: io.tty,
            stdout: io.stdout,
            stderr: io.stderr && !io.tty,
        };
        let r = self.runtime.clone().attach(req).await;
        Ok(r.map_err(call("Attach"))?.into_inner().url)
    }

    /// The streaming server's URL to forward `port` of sandbox `id`.
    pub async fn port_forward_url(&self, id: &str, port: u16) -> Result<String, CriError> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: id.into(),
            port: vec![i32::from(port)],
        };
        let r = self.runtime.clone().port_forward(req).await;
        Ok(r.map_err(call("PortForward"))?.into_inner().url)
    }

    /// CPU and memory of every container.
    pub async fn container_stats(&self) -> Result<Vec<cri::ContainerStats>, CriError> {
        let req = cri::ListContainerStatsRequest { filter: None };
        let r = self.runtime.clone().list_container_stats(req).await;
        Ok(r.map_err(call("ListContainerStats"))?.into_inner().stats)
    }

    /// Whether the runtime has `image`.
    pub async fn has_image(&self, image: &str) -> Result<bool, CriError> {
        let req = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let r = self.images.clone().image_status(req).await;
        Ok(r.map_err(call("ImageStatus"))?.into_inner().image.is_some())
    }

    pub async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let req = cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config: None,
        };
        let r = self.images.clone().pull_image(req).await;
        Ok(r.map_err(call("PullImage"))?.into_inner().image_ref)
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

fn ignore_not_found(r: Result<(), CriError>) -> Result<(), CriError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            socket_path(DEFAULT_ENDPOINT).expect("ok"),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/tmp/c.sock").expect("ok"),
            PathBuf::from("/tmp/c.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }
}
