//! The dashboard (issue #21, in progress on this branch): an HTTPS listener with the cloud's
//! certificate serving a page, and a pass-through to the Kubernetes API under `/k8s/` that
//! carries the signed-in user's own bearer token, so the API's authorization applies to
//! everything the page reads (lists, watches) and writes (a Device's desired value).
//! Signing in: a form posts a token, which is checked by the API itself; the browser then holds
//! a random session id in a Secure, HttpOnly, SameSite=Strict cookie. A request with
//! `Authorization: Bearer` is signed in as that token (scripts, tests).

pub mod session;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

/// The session cookie's name.
const COOKIE: &str = "kedge_session";
/// The header a page's writes carry: a cross-site form cannot set it, so a cookie alone never
/// authorizes a write.
const WRITE_HEADER: &str = "x-kedge-dashboard";

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub addr: SocketAddr,
}

struct Dash {
    /// How the cloud reaches its Kubernetes API (the embedded one or a cluster's); its own
    /// credentials are dropped and each user's token used instead.
    api: kube::Config,
    sessions: Mutex<session::Sessions>,
    started: std::time::Instant,
}

/// Starts the dashboard on `cfg.addr`.
pub async fn start(
    cfg: &DashboardConfig,
    ca: &kedge_pki::Ca,
    names: &[String],
    api: kube::Config,
) -> Result<kedge_http::Listener, crate::CloudError> {
    let tls = ca.server_config("kedge-dashboard", names)?;
    let dash = Arc::new(Dash {
        api,
        sessions: Mutex::default(),
        started: std::time::Instant::now(),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(home))
        .route("/signin", axum::routing::post(sign_in))
        .route("/signout", axum::routing::post(sign_out))
        .route("/k8s/{*path}", axum::routing::any(pass_through))
        .with_state(dash);
    let l = kedge_http::Listener::bind(cfg.addr, tls, app).await?;
    tracing::info!(addr = %l.addr, "dashboard listening");
    Ok(l)
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

    /// A client of the API acting as `token`.
    fn client(&self, token: &str) -> Result<kube::Client, (StatusCode, String)> {
        let mut cfg = self.api.clone();
        cfg.auth_info = Default::default();
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "a token is printable text".to_string(),
            )
        })?;
        auth.set_sensitive(true);
        cfg.headers = vec![(header::AUTHORIZATION, auth)];
        kube::Client::try_from(cfg).map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the API client: {e}"),
            )
        })
    }
}

async fn home(State(d): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    match d.token(&headers) {
        Some(_) => Html(include_str!("page.html")).into_response(),
        None => sign_in_page(None),
    }
}

fn sign_in_page(error: Option<&'static str>) -> Response {
    let page = include_str!("signin.html").replace("<!--error-->", error.unwrap_or(""));
    let code = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (code, Html(page)).into_response()
}

/// Whether the API accepts `token` (it may list nodes: what the fleet page needs).
async fn accepted(d: &Dash, token: &str) -> bool {
    let Ok(client) = d.client(token) else {
        return false;
    };
    let req = axum::http::Request::get("/api/v1/nodes?limit=1").body(Vec::new());
    let Ok(req) = req else { return false };
    client.request_text(req).await.is_ok()
}

async fn sign_in(State(d): State<Arc<Dash>>, body: axum::body::Bytes) -> Response {
    let token = url_form_value(&body, "token").unwrap_or_default();
    if token.is_empty() || !accepted(&d, &token).await {
        return sign_in_page(Some(
            "<p class=\"error\">The API did not accept that token.</p>",
        ));
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

async fn sign_out(State(d): State<Arc<Dash>>, headers: HeaderMap) -> Response {
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

/// `/k8s/<path>` → the API's `/<path>`, as the signed-in user: GET (lists, gets, watches,
/// streamed) and PATCH (with the page's header).
async fn pass_through(State(d): State<Arc<Dash>>, req: Request) -> Response {
    let Some(token) = d.token(req.headers()) else {
        return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
    };
    let method = req.method().clone();
    let writes = method == Method::PATCH;
    if !(method == Method::GET || writes) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard reads and patches\n",
        )
            .into_response();
    }
    if writes && !req.headers().contains_key(WRITE_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            "writes come from the dashboard's page\n",
        )
            .into_response();
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("", |p| p.as_str())
        .trim_start_matches("/k8s");
    let client = match d.client(&token) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let mut up = axum::http::Request::builder()
        .method(method)
        .uri(path.to_string());
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        up = up.header(header::CONTENT_TYPE, ct);
    }
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "a body over 1 MiB\n").into_response(),
    };
    let Ok(up) = up.body(kube::client::Body::from(body.to_vec())) else {
        return (StatusCode::BAD_REQUEST, "not a request the API takes\n").into_response();
    };
    match client.send(up).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the Kubernetes API: {e}\n"),
        )
            .into_response(),
    }
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
    fn form_values_are_decoded() {
        assert_eq!(
            url_form_value(b"a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(url_form_value(b"a=1", "token"), None);
    }
}
