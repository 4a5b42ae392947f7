//! servicebus → rest: edge apps call cloud apps through the edge, as with KubeEdge. An app POSTs
//! `{"method":"POST","targetURL":"<a rule's target_url>","payload":…}` to `127.0.0.1:9060`
//! (any path); ServiceBus uploads it to the cloud (source `servicebus`, op `upload`, group
//! `user`, resource the `target_url`), waits for the answer, and gives the app KubeEdge's
//! `{"code","msg","body"}` — with `code` the cloud app's status, also the HTTP status here
//! (KubeEdge always answers 200). A `target_url` no rule allows is refused before anything is
//! sent (404); so is a request while the cloud is unreachable (503: nothing is queued, the app
//! is waiting); no answer in time is a 504.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kedge_core::envelope::{Message, group, op};
use kedge_core::servicebus::{ServiceAnswer, ServiceRequest};

use crate::edgehub::client::EdgeHub;
use crate::metamanager::MetaStore;

/// The largest request an app may send (KubeEdge's limit).
pub const MAX_BODY: usize = 5_000_000;
/// How long an app waits for the cloud's answer (the cloud gives up on its target at 30 s).
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// The record type of a `target_url` a stock cloudcore started, beside the rules kedge's
/// cloud sends.
pub const TARGETURL: &str = "targeturl";

#[derive(Clone)]
pub struct ServiceBus {
    pub meta: Arc<MetaStore>,
    pub hub: EdgeHub,
}

#[derive(Debug, thiserror::Error)]
#[error("ServiceBus cannot listen on {addr}: {cause}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// Binds the listener (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| BindError { addr, cause })
}

/// Serves apps' requests on `listener` until the task is stopped.
pub async fn serve(listener: tokio::net::TcpListener, bus: ServiceBus) {
    let app = axum::Router::new().fallback(handle).with_state(bus);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "ServiceBus listener ended");
    }
}

async fn handle(State(bus): State<ServiceBus>, body: Body) -> Response {
    let answer = match bus.call(body).await {
        Ok(a) | Err(a) => a,
    };
    let status = StatusCode::from_u16(answer.code).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, axum::Json(answer)).into_response()
}

impl ServiceBus {
    async fn call(&self, body: Body) -> Result<ServiceAnswer, ServiceAnswer> {
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            ServiceAnswer::error(413, format!("the request is over {MAX_BODY} bytes"))
        })?;
        let req: ServiceRequest = serde_json::from_slice(&bytes).map_err(|e| {
            ServiceAnswer::error(
                400,
                format!("invalid params: want {{\"method\",\"targetURL\",\"payload\"}}: {e}"),
            )
        })?;
        if !self.allowed(&req.target_url).await {
            return Err(ServiceAnswer::error(
                404,
                format!(
                    "url {} is not allowed and please make a rule for this url in the cloud",
                    req.target_url
                ),
            ));
        }
        if !*self.hub.connected().borrow() {
            return Err(ServiceAnswer::error(
                503,
                "the cloud is not reachable now; nothing was sent, try again",
            ));
        }
        let content = serde_json::to_value(&req).unwrap_or_default();
        let m = Message::new(
            "servicebus",
            group::USER,
            op::UPLOAD,
            &req.target_url,
            content,
        );
        match self.hub.request(m, TIMEOUT).await {
            None => Err(ServiceAnswer::error(
                504,
                format!("no answer from the cloud within {} s", TIMEOUT.as_secs()),
            )),
            Some(a) if a.route.operation == op::ERROR => Err(ServiceAnswer::error(
                502,
                format!("the cloud refused the request: {}", text(&a.content)),
            )),
            Some(a) => Ok(ServiceAnswer::from_cloud(&a.content)),
        }
    }

    async fn allowed(&self, url: &str) -> bool {
        let (meta, url) = (self.meta.clone(), url.to_string());
        tokio::task::spawn_blocking(move || target_urls(&meta).contains(&comparable(&url)))
            .await
            .unwrap_or(false)
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

/// The `target_url`s apps may ask for: those of the servicebus-source rules kedge's cloud sent
/// (it sends a node only its own), and those a stock cloudcore started.
pub fn target_urls(meta: &MetaStore) -> std::collections::BTreeSet<String> {
    let at = |key: &String, path: &str| {
        let v = meta.get(key).ok().flatten()?;
        Some(comparable(v.pointer(path)?.as_str()?))
    };
    let rules = meta.keys("rule").unwrap_or_default();
    let started = meta.keys(TARGETURL).unwrap_or_default();
    rules
        .iter()
        .filter_map(|k| at(k, "/spec/sourceResource/target_url"))
        .chain(started.iter().filter_map(|k| at(k, "/url")))
        .collect()
}

/// A URL as compared: cloudcore's `stop` joins its resource with `path.Join`, which turns
/// `http://` into `http:/`, so repeated slashes count as one.
pub fn comparable(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// The record a stock cloudcore's `start`/`stop` of a `target_url` keeps
/// (`null/targeturl/<hash>`, as KubeEdge's `target_urls` table).
pub fn record_of(url: &str) -> (String, serde_json::Value) {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(comparable(url).as_bytes()));
    let resource = kedge_core::resource::object("", TARGETURL, &hash[..32]);
    (resource, serde_json::json!({"url": url}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudcore_stop_matches_its_start() {
        assert_eq!(
            comparable("http:/127.0.0.1:9000/echo"),
            comparable("http://127.0.0.1:9000/echo")
        );
        assert_eq!(
            record_of("http:/127.0.0.1:9000/echo").0,
            record_of("http://127.0.0.1:9000/echo").0
        );
        assert_ne!(record_of("http://a/x").0, record_of("http://a/y").0);
        assert!(record_of("http://a/x").0.starts_with("null/targeturl/"));
    }
}
