//! Upgrades: WebSocket subprotocol choice, SPDY/3.1 answers, and a WebSocket carrying a byte
//! stream (kubectl's port-forward tunnels SPDY in binary messages).

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ApiError;

/// How the client asked to upgrade.
pub(super) enum Upgrade {
    WebSocket(WebSocketUpgrade),
    /// SPDY/3.1 with this protocol (`X-Stream-Protocol-Version`), and the request to upgrade.
    Spdy(String, Request),
}

fn offered(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Reads the upgrade `req` asks for: a WebSocket with one of `ws_protocols`, or SPDY/3.1 with
/// one of `spdy_protocols` (each list in the server's order of preference).
pub(super) async fn upgrade(
    req: Request,
    ws_protocols: &[&'static str],
    spdy_protocols: &[&str],
) -> Result<Upgrade, ApiError> {
    let h = req.headers();
    let wanted = h
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let pick = |offer: Vec<String>, ours: &[&str]| {
        ours.iter()
            .find(|p| offer.iter().any(|o| o == *p))
            .map(|p| p.to_string())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offer:?}, server supports {ours:?}"
                ))
            })
    };
    if wanted == "websocket" {
        pick(offered(h, "sec-websocket-protocol"), ws_protocols)?;
        let (mut parts, _) = req.into_parts();
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        return Ok(Upgrade::WebSocket(
            ws.protocols(ws_protocols.iter().copied()),
        ));
    }
    if wanted.starts_with("spdy/3.1") {
        let p = pick(offered(h, "x-stream-protocol-version"), spdy_protocols)?;
        return Ok(Upgrade::Spdy(p, req));
    }
    Err(ApiError::bad_request(
        "this request needs a WebSocket or SPDY/3.1 upgrade",
    ))
}

/// Answers a SPDY/3.1 upgrade with `protocol`; `then` runs on the upgraded connection.
pub(super) fn spdy<F, Fut>(protocol: String, mut req: Request, then: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => then(TokioIo::new(up)).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", protocol.as_str()),
        ],
    )
        .into_response()
}

/// A WebSocket close with status 1000: Go's clients take anything else (even no status) as an
/// error.
pub(super) fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// A byte stream over `socket`'s binary messages.
pub(super) fn websocket_io(socket: WebSocket) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut tx, mut rx) = socket.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(m)) = rx.next().await {
                match m {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                if tx
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(normal_close()).await;
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    theirs
}
