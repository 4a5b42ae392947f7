//! What a stream asks the edge for, and how exec and attach frame their channels on it.
//!
//! Exec and attach carry Kubernetes' `v5.channel.k8s.io` messages as they are: each `Data` frame
//! is one message, its first byte the channel. The API server passes kubectl's WebSocket
//! messages through unchanged; the edge maps them onto the runtime's streaming server.

use serde::{Deserialize, Serialize};

/// The pod a stream is for, as the API server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum StreamRequest {
    /// `pods/log`: the query's parameters as kubectl sent them (the edge reads the options).
    #[serde(rename_all = "camelCase")]
    Logs {
        pod: PodRef,
        container: String,
        query: Vec<(String, String)>,
    },
    /// `pods/exec`.
    #[serde(rename_all = "camelCase")]
    Exec {
        pod: PodRef,
        container: String,
        command: Vec<String>,
        #[serde(flatten)]
        io: Io,
    },
    /// `pods/attach`.
    #[serde(rename_all = "camelCase")]
    Attach {
        pod: PodRef,
        container: String,
        #[serde(flatten)]
        io: Io,
    },
    /// One connection of `pods/portforward`: bytes both ways to `port` in the pod.
    #[serde(rename_all = "camelCase")]
    PortForward { pod: PodRef, port: u16 },
    /// The node's and its pods' CPU and memory now (`kubectl top`): one [`NodeStats`] (JSON).
    Stats,
}

/// What `kubectl top` shows of one node, measured over `window_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// When measured (RFC 3339).
    pub time: String,
    pub window_ms: u64,
    pub usage: Usage,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub usage: Usage,
}

/// CPU in nanocores, memory (working set) in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_nano_cores: u64,
    pub memory_bytes: u64,
}

impl Usage {
    /// As metrics.k8s.io writes it: `{"cpu": "1234n", "memory": "5678Ki"}`.
    pub fn quantities(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": format!("{}n", self.cpu_nano_cores),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
        })
    }
}

/// Which standard streams an exec or attach uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Io {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamRequest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<StreamRequest, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

/// Channels of `v5.channel.k8s.io` (and v4, which lacks [`CLOSE`]).
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The command's end: a `metav1.Status` (JSON), `Success` or `Failure` with the exit code.
    pub const ERROR: u8 = 3;
    /// Terminal size, JSON `{"Width":…,"Height":…}`.
    pub const RESIZE: u8 = 4;
    /// v5: the payload's one byte names a channel the sender is done with (stdin's end).
    pub const CLOSE: u8 = 255;

    /// The largest payload of one message (kubectl and runtimes copy in 32 KiB pieces).
    pub const MAX_PAYLOAD: usize = 32 * 1024;

    /// One message: the channel byte, then the payload.
    pub fn message(channel: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(1 + payload.len());
        m.push(channel);
        m.extend_from_slice(payload);
        m
    }

    /// `payload` on `channel` as messages of at most [`MAX_PAYLOAD`] bytes each.
    pub fn messages(channel: u8, payload: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        payload
            .chunks(MAX_PAYLOAD)
            .map(move |c| message(channel, c))
    }
}

/// The `metav1.Status` an exec ends with: success, a non-zero exit code, or another failure.
pub fn exit_status(code: Option<i32>, failure: Option<&str>) -> Vec<u8> {
    let v = match (code, failure) {
        (Some(0), _) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Some(c), _) => serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command in container: exit status {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        (None, why) => serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": why.unwrap_or("the stream ended without the command's exit status"),
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = StreamRequest::Exec {
            pod: PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            },
            container: "c".into(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            io: Io {
                stdin: true,
                stdout: true,
                ..Io::default()
            },
        };
        let b = r.encode();
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            (v["kind"].as_str(), v["stdin"].as_bool()),
            (Some("exec"), Some(true))
        );
        assert_eq!(StreamRequest::decode(&b).expect("decode"), r);
        assert!(StreamRequest::decode(b"{\"kind\":\"reboot\"}").is_err());
    }

    #[test]
    fn exit_codes_travel_in_the_status() {
        let code = |s: &[u8]| -> Option<String> {
            let v: serde_json::Value = serde_json::from_slice(s).ok()?;
            let cause = &v.pointer("/details/causes")?[0];
            (cause["reason"] == "ExitCode").then(|| cause["message"].as_str().map(String::from))?
        };
        assert_eq!(code(&exit_status(Some(3), None)).as_deref(), Some("3"));
        assert_eq!(code(&exit_status(Some(0), None)), None);
        let failed = exit_status(None, Some("container not running"));
        assert!(String::from_utf8_lossy(&failed).contains("container not running"));
    }
}
