//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API finds the pod's node
//! and container, then opens a stream to the node through [`NodeStreams`] (the cloud's hub
//! session with the node; this crate does not know it) and speaks kubectl's protocol on this
//! side — a chunked body for logs, WebSocket (`v5.channel.k8s.io`) or SPDY/3.1 for exec and
//! attach, SPDY (tunnelled in a WebSocket, or upgraded to) for port-forward. Only callers the
//! API authenticated get here.

mod logs;
mod portforward;
mod remote;
mod tunnel;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use kedge_stream::request::{Io, PodRef};
use kedge_stream::{NodeStreams, OpenFailed, Stream, StreamRequest};
use serde_json::Value;

use crate::api::Api;
use crate::error::ApiError;
use crate::request::ResourcePath;

/// The pod subresources served here.
pub(crate) const SUBRESOURCES: [&str; 4] = ["log", "exec", "attach", "portforward"];

/// The query as pairs, repeated keys kept (`command=sh&command=-c`).
pub fn pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(pairs: &[(String, String)], key: &str) -> bool {
    matches!(first(pairs, key), Some("true" | "1"))
}

/// What a stream needs to know about its pod.
#[derive(Clone)]
struct Target {
    streams: Arc<dyn NodeStreams>,
    node: String,
    pod: PodRef,
}

impl Target {
    fn open(&self, req: &StreamRequest) -> Result<Stream, ApiError> {
        self.streams.open(&self.node, req).map_err(open_failed)
    }
}

fn open_failed(e: OpenFailed) -> ApiError {
    let reason = match e.code {
        429 => "TooManyRequests",
        501 => "NotImplemented",
        _ => "ServiceUnavailable",
    };
    ApiError {
        code: e.code,
        reason,
        message: e.message,
        details: None,
    }
}

pub(crate) async fn serve(
    api: Arc<Api>,
    req: Request,
    path: ResourcePath,
) -> Result<Response, ApiError> {
    let sub = path.subresource.clone().unwrap_or_default();
    let ns = path.namespace.clone().unwrap_or_default();
    let name = path.name.clone().unwrap_or_default();
    let pod = api
        .store
        .get("pods", &ns, &name)
        .ok_or_else(|| ApiError::not_found("pods", &name))?
        .value();
    let streams = api.streams().ok_or_else(|| {
        ApiError::unavailable("no cloud serves this API: nodes cannot be reached")
    })?;
    let query = pairs(req.uri().query());
    serve_pod(req, streams, &pod, &sub, query).await
}

/// Serves subresource `sub` (`log`, `exec`, `attach` or `portforward`) of `pod` (the object as
/// stored) with the API's query parameters: the embedded API's `pods/{sub}` and the cloud's
/// kubelet API for edge nodes both end here.
pub async fn serve_pod(
    req: Request,
    streams: Arc<dyn NodeStreams>,
    pod: &Value,
    sub: &str,
    q: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("");
    let name = text("/metadata/name");
    let node = text("/spec/nodeName");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let target = Target {
        streams,
        node: node.to_string(),
        pod: PodRef {
            namespace: text("/metadata/namespace").to_string(),
            name: name.to_string(),
            uid: text("/metadata/uid").to_string(),
        },
    };
    if sub == "portforward" {
        return portforward::serve(req, target).await;
    }
    let container = container(pod, first(&q, "container"))?;
    if sub == "log" {
        return logs::serve(target, container, q).await;
    }
    if let p @ ("Succeeded" | "Failed") = text("/status/phase") {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {p}"
        )));
    }
    let io = Io {
        stdin: flag(&q, "stdin"),
        stdout: flag(&q, "stdout"),
        stderr: flag(&q, "stderr"),
        tty: flag(&q, "tty"),
    };
    let request = match sub {
        "exec" => {
            let command: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if command.is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            StreamRequest::Exec {
                pod: target.pod.clone(),
                container,
                command,
                io,
            }
        }
        "attach" => StreamRequest::Attach {
            pod: target.pod.clone(),
            container,
            io,
        },
        other => {
            return Err(ApiError::not_found("pods", &format!("{name}/{other}")));
        }
    };
    remote::serve(req, target, request, io).await
}

/// The container a request names, or the pod's only one; Kubernetes' errors otherwise.
fn container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let (main, init) = (names("containers"), names("initContainers"));
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if main.iter().chain(&init).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, None).expect("only one"), "a");
        let err = container(&one, Some("b")).expect_err("unknown");
        assert_eq!(err.message, "container b is not valid for pod p");
        let two = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container(&two, Some("i")).expect("init"), "i");
        let err = container(&two, None).expect_err("which one");
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
    }

    #[test]
    fn repeated_query_keys_are_kept_in_order() {
        let q = pairs(Some("command=sh&command=-c&command=echo+a%26b&stdin=true"));
        let cmd: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmd, ["sh", "-c", "echo a&b"]);
        assert!(flag(&q, "stdin") && !flag(&q, "tty"));
    }
}
