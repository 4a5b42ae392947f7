//! The replicas' own listener (`--peer-port`): mutual TLS, with certificates of the one CA the
//! replicas share whose common name is `kedge-cloud-replica` (an edge's certificate, of the same
//! CA, is refused). It takes router calls forwarded to the replica holding their node — answered
//! there and never passed on again — and the rule counters followers hand to the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use kedge_core::servicebus::HOP_BY_HOP;

use super::{PEER_CN, Replicas};
use crate::router::rest::{self, Call, Failure};
use crate::router::status::{Delta, RuleStats};

/// Where followers hand the leader their rule counters.
pub const RULE_COUNTS: &str = "/kedge/rule-counts";
/// Set on a forwarded call: the replica it came from.
const FORWARDED_BY: &str = "kedge-forwarded-by";

struct Peer {
    router: Arc<rest::Ctx>,
    stats: Arc<RuleStats>,
}

/// Serves the peer listener on `listener` (bound first, so that its port is known to the
/// records that name this replica).
pub fn start(
    listener: std::net::TcpListener,
    ca: &kedge_pki::Ca,
    names: &[String],
    router: Arc<rest::Ctx>,
    stats: Arc<RuleStats>,
    max_body: usize,
) -> Result<kedge_http::Listener, crate::CloudError> {
    let tls = ca.mtls_server_config(PEER_CN, names, true)?;
    let app = axum::Router::new()
        .route(RULE_COUNTS, axum::routing::post(counts))
        .fallback(forwarded)
        .layer(middleware::from_fn(only_replicas))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::new(Peer { router, stats }));
    let l = kedge_http::Listener::serve(listener, tls, app)?;
    tracing::info!(addr = %l.addr, "replica peer listener");
    Ok(l)
}

/// Lets through only the replicas' own certificate.
async fn only_replicas(req: Request, next: Next) -> Response {
    let cn = req
        .extensions()
        .get::<kedge_http::PeerCerts>()
        .and_then(|p| p.0.first())
        .and_then(|c| kedge_pki::node::cert_common_name(c));
    if cn.as_deref() != Some(PEER_CN) {
        tracing::warn!(?cn, "peer listener: a client that is not a replica refused");
        return (
            StatusCode::FORBIDDEN,
            format!("only kedge cloud replicas (CN {PEER_CN}) may call here\n"),
        )
            .into_response();
    }
    next.run(req).await
}

async fn forwarded(
    State(p): State<Arc<Peer>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method,
        uri,
        headers,
        body,
    };
    rest::answer(&p.router, call, true).await
}

async fn counts(
    State(p): State<Arc<Peer>>,
    body: Result<axum::Json<HashMap<String, Delta>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(batch)) => {
            for (rule, delta) in batch {
                p.stats.add(&rule, delta);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// The client replicas call each other with: it trusts only the shared CA and presents a
/// certificate named `kedge-cloud-replica`.
pub fn client(ca: &kedge_pki::Ca) -> Result<reqwest::Client, kedge_pki::PkiError> {
    let tls = ca.client_config_as(PEER_CN)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| kedge_pki::PkiError::Tls(rustls::Error::General(e.to_string())))
}

/// Passes `call` for `node` to `replica` at `peer` once, and returns its answer as it is. A
/// call that may have reached the holder is never sent again: a timeout is a 504, whatever the
/// edge did.
pub async fn forward(
    r: &Replicas,
    node: &str,
    (replica, peer): (&str, &str),
    call: Call,
    limit: Duration,
) -> Result<Response, Failure> {
    let path = call.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = r
        .peers
        .request(call.method, format!("https://{peer}{path}"))
        .header(FORWARDED_BY, &r.me.id)
        .timeout(limit)
        .body(call.body);
    for (name, value) in &call.headers {
        let n = name.as_str();
        if !HOP_BY_HOP.contains(&n) && n != "host" && n != "authorization" {
            req = req.header(name, value);
        }
    }
    let at = format!("node {node} is connected to replica {replica} ({peer})");
    let resp = req.send().await.map_err(|e| failure(&at, &e, limit))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| failure(&at, &e, limit))?;
    let mut out = Response::builder().status(status);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            out = out.header(name, value);
        }
    }
    out.body(axum::body::Body::from(body))
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{at}, whose answer: {e}")))
}

/// A forwarded call that got no answer: 504 when late, 503 when the holder could not be reached
/// (nothing was sent), 502 otherwise.
fn failure(at: &str, e: &reqwest::Error, limit: Duration) -> Failure {
    if e.is_timeout() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{at}, which did not answer within {limit:?}"),
        )
    } else if e.is_connect() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{at}, which cannot be reached: {e}"),
        )
    } else {
        (StatusCode::BAD_GATEWAY, format!("{at}, which failed: {e}"))
    }
}

/// Hands `batch` to the leader at `peer`.
pub async fn send_counts(
    r: &Replicas,
    peer: &str,
    batch: &HashMap<String, Delta>,
) -> Result<(), String> {
    let resp = r
        .peers
        .post(format!("https://{peer}{RULE_COUNTS}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(batch).map_err(|e| e.to_string())?)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().is_success() {
        true => Ok(()),
        false => Err(format!("the leader answered {}", resp.status())),
    }
}
