//! `/k8s/<path>` → the API's `/<path>`, as the signed-in user: GETs (lists, gets; watches
//! streamed, as server-sent events when the page asks for `text/event-stream`) and PATCHes
//! (only with the page's own header: a cross-site form cannot set it, so a cookie alone never
//! authorizes a write).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{Dash, sse};

/// The header the page's writes carry.
const WRITE_HEADER: &str = "x-kedge-dashboard";
/// The largest body the page sends (a patch).
const MAX_BODY: usize = 1 << 20;

/// A request to the API as `token`.
pub(super) fn request(method: Method, path: &str, token: &str) -> axum::http::request::Builder {
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer -"));
    auth.set_sensitive(true);
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, auth)
}

fn refuse(code: StatusCode, why: &'static str) -> Response {
    (code, why).into_response()
}

pub(super) async fn pass_through(State(d): State<Arc<Dash>>, req: Request) -> Response {
    // The body is read first, whatever the answer: over HTTP/2 an answer before the body is
    // taken resets the stream, and the client sees a framing error instead of the refusal.
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "a body over 1 MiB\n"),
    };
    let Some(token) = d.token(&parts.headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "sign in first\n");
    };
    let writes = parts.method == Method::PATCH;
    if !(parts.method == Method::GET || writes) {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard reads and patches\n",
        );
    }
    if writes && !parts.headers.contains_key(WRITE_HEADER) {
        return refuse(
            StatusCode::FORBIDDEN,
            "writes come from the dashboard's page\n",
        );
    }
    let Some(path) = api_path(&parts.uri) else {
        return refuse(StatusCode::NOT_FOUND, "only the API's own paths\n");
    };
    let mut up = request(parts.method, path, &token);
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        up = up.header(header::CONTENT_TYPE, ct);
    }
    let Ok(up) = up.body(kube::client::Body::from(body.to_vec())) else {
        return refuse(StatusCode::BAD_REQUEST, "not a request the API takes\n");
    };
    match d.api.send(up).await {
        Ok(resp) => answer(resp, wants_events(&parts.headers)),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the Kubernetes API: {e}\n"),
        )
            .into_response(),
    }
}

/// The API path a `/k8s/…` URI stands for: under `/api` or `/apis`, no `..`.
fn api_path(uri: &axum::http::Uri) -> Option<&str> {
    let path = uri
        .path_and_query()
        .map_or("", |p| p.as_str())
        .strip_prefix("/k8s")?;
    let (route, _) = path.split_once('?').unwrap_or((path, ""));
    let under = |root: &str| route == root || route.starts_with(&format!("{root}/"));
    let dots = route.split('/').any(|seg| seg == ".." || seg == ".");
    ((under("/api") || under("/apis")) && !dots).then_some(path)
}

fn wants_events(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// The API's answer, with only its status and type (no hop-by-hop headers); a successful watch
/// asked for as events is framed as events.
fn answer(resp: axum::http::Response<kube::client::Body>, events: bool) -> Response {
    let (parts, body) = resp.into_parts();
    let body = Body::new(body);
    let mut r = if events && parts.status.is_success() {
        let mut r = Response::new(framed(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r
    } else {
        let mut r = Response::new(body);
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        r
    };
    *r.status_mut() = parts.status;
    r
}

/// A watch's JSON lines as server-sent events.
fn framed(body: Body) -> Body {
    let start = (body.into_data_stream(), Some(sse::Framer::default()));
    let events = futures::stream::unfold(start, |(mut data, framer)| async move {
        let mut framer = framer?;
        let next = match data.next().await {
            Some(Ok(chunk)) => match framer.push(&chunk) {
                Ok(out) => return Some((Ok(bytes::Bytes::from(out)), (data, Some(framer)))),
                Err(e) => Err(std::io::Error::other(e)),
            },
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => Ok(bytes::Bytes::from(framer.finish())),
        };
        Some((next, (data, None)))
    });
    Body::from_stream(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_paths_pass() {
        let path = |u: &str| api_path(&u.parse().expect("a URI")).map(String::from);
        assert_eq!(
            path("/k8s/api/v1/nodes?limit=1").as_deref(),
            Some("/api/v1/nodes?limit=1")
        );
        assert_eq!(path("/k8s/apis").as_deref(), Some("/apis"));
        assert_eq!(path("/k8s/healthz"), None);
        assert_eq!(path("/k8s/apiserver"), None);
        assert_eq!(path("/k8s/api/../healthz"), None);
        assert_eq!(path("/k8s/api/./v1"), None);
    }
}
