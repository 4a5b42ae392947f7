//! The REST listener: `/{node}/{namespace}/{path}` with any method, plain HTTP (as KubeEdge's),
//! optionally behind a bearer token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kedge_core::dialect::Dialect;
use kedge_core::envelope::{Message, group, op};
use kedge_core::rule::{OP_PUBLISH, RestTarget, body_to_content};
use kedge_core::servicebus::{EDGE_ERROR, HOP_BY_HOP, HttpRequest, HttpResponse, canonical};

use super::Rules;
use crate::cloudhub::hub::{Hub, RequestError};
use crate::replicas::{self, Replicas, Route, peer};

/// How much longer a replica waits for the holder it forwarded a call to than the holder waits
/// for the edge: the holder's own timeout answer comes back first.
const FORWARD_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Where the REST listener listens (loopback unless opened: without a token anyone who
    /// reaches it can publish to edges).
    pub addr: SocketAddr,
    /// When set, requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The largest request body (KubeEdge: 12 MiB).
    pub max_body: usize,
    /// How long the edge has to answer.
    pub timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9443)),
            token: None,
            max_body: 12 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the router answers calls with: the public listener's, and the replicas' peer
/// listener's for calls forwarded from another replica.
pub struct Ctx {
    cfg: RouterConfig,
    rules: Arc<Rules>,
    hub: Arc<Hub>,
    /// The other replicas (a real cluster): a call for a node held elsewhere goes there.
    replicas: Option<Arc<Replicas>>,
}

/// A running REST listener.
pub struct Listener {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    /// What answers its calls (the peer listener answers forwarded ones with it too).
    pub ctx: Arc<Ctx>,
}

impl Listener {
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the REST listener.
pub async fn start(
    cfg: RouterConfig,
    rules: Arc<Rules>,
    hub: Arc<Hub>,
    replicas: Option<Arc<Replicas>>,
) -> Result<Listener, crate::CloudError> {
    let bind = cfg.addr;
    let err = |cause| crate::CloudError::Bind(kedge_http::BindError { addr: bind, cause });
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let max = cfg.max_body;
    let ctx = Arc::new(Ctx {
        cfg,
        rules,
        hub,
        replicas,
    });
    let app = axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(max))
        .with_state(ctx.clone());
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "router REST listener stopped");
        }
    });
    tracing::info!(%addr, "router REST listener");
    Ok(Listener { addr, stop, ctx })
}

fn text(code: StatusCode, body: String) -> Response {
    (code, body + "\n").into_response()
}

/// `/{node}/{namespace}/{rest}` → (node, namespace, rest).
fn split(path: &str) -> Option<(&str, &str, &str)> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let node = parts.next().filter(|s| !s.is_empty())?;
    let ns = parts.next().filter(|s| !s.is_empty())?;
    Some((node, ns, parts.next().unwrap_or("")))
}

fn authorized(cfg: &RouterConfig, headers: &HeaderMap) -> bool {
    let Some(token) = &cfg.token else { return true };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time: the comparison must not tell how much of the token was right.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A call to the public listener.
async fn handle(
    State(ctx): State<Arc<Ctx>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&ctx.cfg, &headers) {
        return text(
            StatusCode::UNAUTHORIZED,
            "the router needs Authorization: Bearer <token>".into(),
        );
    }
    answer(
        &ctx,
        Call {
            method,
            uri,
            headers,
            body,
        },
        false,
    )
    .await
}

/// A router call as it arrived.
pub struct Call {
    pub method: axum::http::Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Answers a call (`passed_on`: another replica forwarded it, and it stops here).
pub async fn answer(ctx: &Ctx, call: Call, passed_on: bool) -> Response {
    // A copy of the path: the call may move on to another replica whole.
    let path = call.uri.path().to_string();
    let Some((node, ns, rest)) = split(&path) else {
        return text(
            StatusCode::NOT_FOUND,
            "the URL is /{node}/{namespace}/{path}".into(),
        );
    };
    if !ctx.rules.loaded(Duration::from_secs(5)).await {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the router is starting: rules are not loaded yet".into(),
        );
    }
    let table = ctx.rules.table();
    let Some((route, suffix)) = table.rest(ns, rest) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no rule in namespace {ns} has a rest source matching /{rest}"),
        );
    };
    if let Some(r) = &ctx.replicas {
        let held = ctx.hub.is_connected(node);
        let owner = r.owner(node);
        match replicas::route(node, held, passed_on, owner.as_ref(), &r.me.id) {
            Route::Here => {}
            Route::Forward { replica, peer } => {
                let limit = ctx.cfg.timeout + FORWARD_MARGIN;
                return match peer::forward(r, node, (&replica, &peer), call, limit).await {
                    Ok(resp) => resp,
                    Err((code, why)) => {
                        ctx.rules.stats.failure(&route.rule, &why);
                        text(code, why)
                    }
                };
            }
            Route::Unreachable(why) => {
                ctx.rules.stats.failure(&route.rule, &why);
                return text(StatusCode::SERVICE_UNAVAILABLE, why);
            }
        }
    }
    let Call {
        method,
        uri,
        headers,
        body,
    } = call;
    let result = match &route.target {
        RestTarget::EventBus { topic } => {
            let topic = format!("{topic}{suffix}");
            let content = body_to_content(&body);
            let m = Message::new("router_eventbus", group::USER, OP_PUBLISH, &topic, content);
            publish(ctx, node, m).await
        }
        RestTarget::ServiceBus { port, path } => {
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            let resource = format!("{port}:{path}{suffix}{query}");
            let req = HttpRequest {
                method: method.to_string(),
                url: String::new(),
                header: forwarded(&headers),
                body: body.to_vec(),
                // The edge gives up first, so the caller gets the edge's precise 504.
                timeout_ms: Some(app_timeout(ctx.cfg.timeout).as_millis() as u64),
            };
            let content = serde_json::to_value(&req).unwrap_or_default();
            let m = Message::new(
                "router_servicebus",
                group::USER,
                method.as_str(),
                &resource,
                content,
            );
            match ctx.hub.request(node, m, ctx.cfg.timeout).await {
                Ok(answer) => app_response(node, &answer),
                Err(e) => Err(unavailable(e)),
            }
        }
    };
    match result {
        Ok(r) => {
            ctx.rules.stats.success(&route.rule);
            r
        }
        Err((code, why)) => {
            ctx.rules.stats.failure(&route.rule, &why);
            text(code, why)
        }
    }
}

/// Why a request failed, and the status the caller gets.
pub type Failure = (StatusCode, String);

/// How long the edge app may take: the router's timeout less a margin for the way back.
fn app_timeout(router: Duration) -> Duration {
    router.saturating_sub((router / 10).min(Duration::from_secs(2)))
}

/// The caller's headers that go on to the edge app.
fn forwarded(headers: &HeaderMap) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HOP_BY_HOP.contains(&name) || name == "authorization" {
            continue;
        }
        out.entry(canonical(name))
            .or_default()
            .push(value.to_str().unwrap_or_default().to_string());
    }
    out
}

/// The edge app's answer as the caller's response; what the edge says itself (app unreachable,
/// no answer) is a failure.
fn app_response(node: &str, answer: &Message) -> Result<Response, Failure> {
    let bad = || {
        (
            StatusCode::BAD_GATEWAY,
            format!("node {node} answered with something that is not an HTTP response"),
        )
    };
    let resp = serde_json::from_value::<HttpResponse>(answer.content.clone()).map_err(|_| bad())?;
    let status = StatusCode::from_u16(resp.status_code).map_err(|_| bad())?;
    if resp.header.contains_key(EDGE_ERROR) {
        return Err((
            status,
            String::from_utf8_lossy(&resp.body).trim().to_string(),
        ));
    }
    let mut builder = axum::http::Response::builder().status(status);
    for (name, values) in &resp.header {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        for v in values {
            builder = builder.header(name.as_str(), v.as_str());
        }
    }
    builder
        .body(axum::body::Body::from(resp.body))
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("the app's answer from node {node}: {e}"),
            )
        })
}

/// No answer from the edge: 503 when it is not (or no longer) connected, 504 when it is late.
fn unavailable(e: RequestError) -> Failure {
    match e {
        RequestError::NotConnected(_) | RequestError::Disconnected(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        RequestError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
    }
}

/// What the `kedge-delivery` header of a rest→eventbus answer says.
const DELIVERY: &str = "kedge-delivery";

/// Sends a rest→eventbus message to `node`: delivered once kedge's edge has published it. A
/// stock KubeEdge edge never confirms a publish, so for it the answer is KubeEdge's — 200 once
/// the message is on its way to the node — with `kedge-delivery: sent` saying no more is known.
async fn publish(ctx: &Ctx, node: &str, m: Message) -> Result<Response, Failure> {
    if ctx.hub.dialect(node) == Some(Dialect::KubeEdge) {
        return match ctx.hub.send(node, m).await {
            Ok(()) => Ok(delivered("sent")),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        };
    }
    match ctx.hub.request(node, m, ctx.cfg.timeout).await {
        Ok(answer) if answer.route.operation == op::ERROR => Err((
            StatusCode::BAD_GATEWAY,
            format!(
                "node {node} could not deliver the message: {}",
                answer.content.as_str().unwrap_or_default()
            ),
        )),
        Ok(_) => Ok(delivered("confirmed")),
        Err(e) => Err(unavailable(e)),
    }
}

/// KubeEdge's answer to a rest→eventbus call, `200 message delivered`, with how far kedge knows
/// it went: `sent` (to a stock edge, which confirms nothing) or `confirmed` (published).
fn delivered(how: &'static str) -> Response {
    let mut r = text(StatusCode::OK, "message delivered".into());
    r.headers_mut()
        .insert(DELIVERY, axum::http::HeaderValue::from_static(how));
    r
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_publish_to_a_stock_edge_is_answered_as_kubeedge_does_and_says_sent() {
        let r = delivered("sent");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[DELIVERY], "sent");
        let body = axum::body::to_bytes(r.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"message delivered\n");
    }

    use super::*;

    #[test]
    fn urls_split_into_node_namespace_and_path() {
        assert_eq!(
            split("/kube-edge-1/default/a"),
            Some(("kube-edge-1", "default", "a"))
        );
        assert_eq!(split("/n/ns/source/x/y"), Some(("n", "ns", "source/x/y")));
        assert_eq!(split("/n/ns"), Some(("n", "ns", "")));
        assert_eq!(split("/n"), None);
        assert_eq!(split("/"), None);
    }

    #[test]
    fn the_edge_app_gets_less_time_than_the_router() {
        assert_eq!(
            app_timeout(Duration::from_secs(30)),
            Duration::from_secs(28)
        );
        assert_eq!(
            app_timeout(Duration::from_secs(2)),
            Duration::from_millis(1800)
        );
    }

    #[test]
    fn the_token_is_checked_when_set() {
        let mut cfg = RouterConfig::default();
        let mut h = HeaderMap::new();
        assert!(authorized(&cfg, &h), "off by default, as in the seed");
        cfg.token = Some("t0ken".into());
        assert!(!authorized(&cfg, &h));
        h.insert("authorization", "Bearer t0ken".parse().expect("header"));
        assert!(authorized(&cfg, &h));
        h.insert("authorization", "Bearer t0kem".parse().expect("header"));
        assert!(!authorized(&cfg, &h));
    }
}
