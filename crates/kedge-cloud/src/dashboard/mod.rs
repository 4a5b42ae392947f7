//! The dashboard (issue #21): an HTTPS listener with the cloud's certificate serving a page
//! (embedded in the binary), a pass-through to the Kubernetes API under `/k8s/` that carries
//! the signed-in user's own bearer token — so the API's authorization applies to everything
//! the page reads (lists, watches as server-sent events) and writes (a Device's desired value) —
//! and a stream of the cloud's own metrics for the chart (`/metrics/stream`).
//! Signing in: a form posts a token, which the API itself must accept; the browser then holds a
//! random session id in a Secure, HttpOnly, SameSite=Strict cookie. A request with
//! `Authorization: Bearer` is signed in as that token (scripts, tests).

pub mod history;
mod k8s;
mod metrics;
pub mod session;
pub mod sse;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

/// The dashboard's port unless told otherwise.
pub const DEFAULT_PORT: u16 = 9445;
/// The session cookie's name.
const COOKIE: &str = "kedge_session";

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    Pki(#[from] kedge_pki::PkiError),
    #[error(transparent)]
    Bind(#[from] kedge_http::BindError),
    #[error("the Kubernetes API client: {0}")]
    Client(#[from] kube::Error),
}

/// A running dashboard.
pub struct Dashboard {
    pub addr: SocketAddr,
    listener: kedge_http::Listener,
    sampler: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    pub async fn shutdown(self) {
        self.sampler.abort();
        self.listener.shutdown().await;
    }
}

struct Dash {
    /// The cloud's Kubernetes API (the embedded one or a cluster's) without credentials: each
    /// request carries its user's token.
    api: kube::Client,
    sessions: Mutex<session::Sessions>,
    started: std::time::Instant,
    metrics: metrics::Chart,
}

/// Starts the dashboard on `addr`, reaching the API as `api` says (its credentials are dropped)
/// and charting `source`.
pub async fn start(
    addr: SocketAddr,
    ca: &kedge_pki::Ca,
    names: &[String],
    mut api: kube::Config,
    source: kedge_http::metrics::Source,
) -> Result<Dashboard, DashboardError> {
    // Loopback names too: a browser on the cloud's machine (or through a tunnel) that trusts
    // the cloud's CA then trusts the page.
    let mut names = names.to_vec();
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    let tls = ca.server_config("kedge-dashboard", &names)?;
    api.auth_info = Default::default();
    let (chart, sampler) = metrics::Chart::start(source);
    let dash = Arc::new(Dash {
        api: kube::Client::try_from(api)?,
        sessions: Mutex::default(),
        started: std::time::Instant::now(),
        metrics: chart,
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(home))
        .route("/app.js", axum::routing::get(asset))
        .route("/app.css", axum::routing::get(asset))
        .route("/signin", axum::routing::post(sign_in))
        .route("/signout", axum::routing::post(sign_out))
        .route("/metrics/stream", axum::routing::get(metrics::stream))
        .route("/k8s/{*path}", axum::routing::any(k8s::pass_through))
        .layer(axum::middleware::map_response(protect))
        .with_state(dash);
    let listener = kedge_http::Listener::bind(addr, tls, app).await?;
    tracing::info!(addr = %listener.addr, "dashboard listening");
    Ok(Dashboard {
        addr: listener.addr,
        listener,
        sampler,
    })
}

/// Every answer: no script or style from elsewhere, no framing, nothing cached.
async fn protect(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

impl Dash {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, session::Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token a request is signed in with: its bearer header, or its session cookie's.
    fn token(&self, headers: &HeaderMap) -> Option<String> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if let Some(t) = text(header::AUTHORIZATION).and_then(|a| a.strip_prefix("Bearer ")) {
            return Some(t.trim().to_string());
        }
        let id = session::cookie(text(header::COOKIE)?, COOKIE)?;
        self.sessions().token(id, self.now_ms()).map(String::from)
    }

    /// The signed-in token, checked: a session's was checked at sign-in, a bearer header's is
    /// checked now.
    async fn signed_in(&self, headers: &HeaderMap) -> Option<String> {
        let token = self.token(headers)?;
        if headers.contains_key(header::AUTHORIZATION) && !self.accepts(&token).await {
            return None;
        }
        Some(token)
    }

    /// Whether the API accepts `token` (it may list nodes: what the fleet page needs).
    async fn accepts(&self, token: &str) -> bool {
        let req = k8s::request(axum::http::Method::GET, "/api/v1/nodes?limit=1", token);
        let Ok(req) = req.body(Vec::new()) else {
            return false;
        };
        self.api.request_text(req).await.is_ok()
    }
}

async fn home(State(d): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    match d.signed_in(&headers).await {
        Some(_) => Html(include_str!("assets/index.html")).into_response(),
        None if headers.contains_key(header::AUTHORIZATION) => sign_in_page(Some(REFUSED)),
        None => sign_in_page(None),
    }
}

/// What the sign-in page says to a token the API refused.
const REFUSED: &str = "The Kubernetes API did not accept that token.";

async fn asset(uri: axum::http::Uri) -> Response {
    let (body, kind) = match uri.path() {
        "/app.js" => (include_str!("assets/app.js"), "text/javascript"),
        _ => (include_str!("assets/app.css"), "text/css"),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn sign_in_page(error: Option<&'static str>) -> Response {
    let page = include_str!("assets/signin.html").replace(
        "<!--error-->",
        error
            .map_or(String::new(), |e| {
                format!("<p class=\"error\" id=\"error\">{e}</p>")
            })
            .as_str(),
    );
    let code = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (code, Html(page)).into_response()
}

async fn sign_in(
    State(d): State<Arc<Dash>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&headers, &uri) {
        return (StatusCode::FORBIDDEN, "a form from another site\n").into_response();
    }
    let token = url_form_value(&body, "token").unwrap_or_default();
    if token.is_empty() || !d.accepts(&token).await {
        return sign_in_page(Some(REFUSED));
    }
    let id = d
        .sessions()
        .create(&token, rand::random::<[u8; 32]>(), d.now_ms());
    let cookie = format!(
        "{COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        session::LIFETIME.as_secs()
    );
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn sign_out(
    State(d): State<Arc<Dash>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers, &uri) {
        return (StatusCode::FORBIDDEN, "a form from another site\n").into_response();
    }
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if let Some(id) = cookie.and_then(|c| session::cookie(c, COOKIE)) {
        d.sessions().end(id);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "kedge_session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    r
}

/// Whether a form post comes from the dashboard's own page: a browser names the page's origin
/// (`Origin`), which must be this host; a client that sends none (curl, a script) is no
/// browser to be tricked. Stops another site from signing a browser in as someone else.
/// The host is the `Host` header (HTTP/1.1) or the request's authority (HTTP/2).
fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(origin) = text(header::ORIGIN) else {
        return true;
    };
    let host = text(header::HOST).or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin.strip_prefix("https://");
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// One value of an `application/x-www-form-urlencoded` body.
fn url_form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_taken_from_this_origin_only() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let path: axum::http::Uri = "/signin".parse().expect("uri");
        let host = ("host", "127.0.0.1:9445");
        assert!(
            same_origin(&headers(&[host]), &path),
            "no Origin: no browser"
        );
        let mine = [host, ("origin", "https://127.0.0.1:9445")];
        assert!(same_origin(&headers(&mine), &path));
        let theirs = [host, ("origin", "https://evil.example")];
        assert!(!same_origin(&headers(&theirs), &path));
        let plain = [host, ("origin", "http://127.0.0.1:9445")];
        assert!(!same_origin(&headers(&plain), &path));
        // HTTP/2: no Host header, the authority is in the request's URI.
        let h2: axum::http::Uri = "https://127.0.0.1:9445/signin".parse().expect("uri");
        let origin = [("origin", "https://127.0.0.1:9445")];
        assert!(same_origin(&headers(&origin), &h2));
        let origin = [("origin", "https://evil.example")];
        assert!(!same_origin(&headers(&origin), &h2));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            url_form_value(b"a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(url_form_value(b"a=1", "token"), None);
    }
}
