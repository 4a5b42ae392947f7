//! `pods/exec` and `pods/attach`: kubectl's WebSocket (`v5.channel.k8s.io`, or v4) messages pass
//! through to the node's stream unchanged; SPDY/3.1 clients get one SPDY stream per channel,
//! mapped onto the same messages.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use kedge_stream::request::{Io, channel, exit_status};
use kedge_stream::spdy::{Conn, Role, SpdyStream};
use kedge_stream::{Stream, StreamRequest};

use super::Target;
use super::tunnel::{self, Upgrade};
use crate::error::ApiError;

const WS_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const SPDY_PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];

/// How long a SPDY client has to open the streams it asked for.
const STREAMS_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn serve(
    req: Request,
    target: Target,
    request: StreamRequest,
    io: Io,
) -> Result<Response, ApiError> {
    let up = tunnel::upgrade(req, &WS_PROTOCOLS, &SPDY_PROTOCOLS).await?;
    // Opened before answering: an unreachable node is the request's error.
    let stream = target.open(&request)?;
    Ok(match up {
        Upgrade::WebSocket(ws) => ws.on_upgrade(move |socket| websocket(socket, stream)),
        Upgrade::Spdy(protocol, req) => {
            tunnel::spdy(protocol, req, move |conn| spdy(conn, stream, io))
        }
    })
}

/// The node's next message; a stream cut on the node's side ends with a status saying why.
async fn next(reader: &mut kedge_stream::Reader) -> Option<Vec<u8>> {
    match reader.recv().await {
        Ok(m) => m,
        Err(e) => Some(channel::message(
            channel::ERROR,
            &exit_status(None, Some(&e.to_string())),
        )),
    }
}

async fn websocket(socket: WebSocket, stream: Stream) {
    let (mut tx, mut rx) = socket.split();
    let Stream { mut reader, writer } = stream;
    let up = async {
        while let Some(Ok(m)) = rx.next().await {
            let Message::Binary(b) = m else {
                if matches!(m, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&ch, payload)) = b.split_first() else {
                continue;
            };
            for piece in channel::messages(ch, payload) {
                if writer.send_message(&piece).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = async {
        while let Some(m) = next(&mut reader).await {
            let last = m.first() == Some(&channel::ERROR);
            if tx.send(Message::Binary(m.into())).await.is_err() || last {
                break;
            }
        }
        // kubectl reads the error channel to its end: a normal closure is that end.
        let _ = tx.send(tunnel::normal_close()).await;
    };
    // Either side ending ends the session; dropping the stream resets the node's side.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// SPDY: the client opens one stream per channel (`streamType` header), then talks.
async fn spdy<IO>(io: IO, stream: Stream, want: Io)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (conn, mut incoming) = Conn::start(io, Vec::new(), Role::Server);
    let expected = 1
        + usize::from(want.stdin)
        + usize::from(want.stdout)
        + usize::from(want.stderr && !want.tty)
        + usize::from(want.tty);
    let mut by_type: HashMap<String, SpdyStream> = HashMap::new();
    let collect = async {
        while by_type.len() < expected {
            let Some(s) = incoming.recv().await else {
                break;
            };
            let t = s.header("streamtype").unwrap_or("").to_ascii_lowercase();
            by_type.insert(t, s);
        }
    };
    if tokio::time::timeout(STREAMS_WAIT, collect).await.is_err() {
        tracing::debug!("a SPDY exec client did not open its streams in time");
        return;
    }
    let Some(error) = by_type.remove("error") else {
        return;
    };
    let Stream { mut reader, writer } = stream;
    let w = writer.clone();
    let input = |s: Option<SpdyStream>, ch: u8| {
        let w = w.clone();
        async move {
            let Some(mut s) = s else { return };
            while let Ok(Some(d)) = s.recv().await {
                for m in channel::messages(ch, &d) {
                    if w.send_message(&m).await.is_err() {
                        return;
                    }
                }
            }
            if ch == channel::STDIN {
                let _ = w.send_message(&[channel::CLOSE, channel::STDIN]).await;
            }
        }
    };
    let stdin = input(by_type.remove("stdin"), channel::STDIN);
    let resize = input(by_type.remove("resize"), channel::RESIZE);
    let out = by_type.remove("stdout").map(|s| s.writer);
    let err = by_type.remove("stderr").map(|s| s.writer);
    let down = async {
        while let Some(m) = next(&mut reader).await {
            let Some((&ch, payload)) = m.split_first() else {
                continue;
            };
            let to = match ch {
                channel::STDOUT => out.as_ref(),
                channel::STDERR => err.as_ref(),
                channel::ERROR => {
                    let _ = error.writer.send(payload);
                    break;
                }
                _ => None,
            };
            if let Some(to) = to {
                let _ = to.send(payload);
            }
        }
        for s in [out.as_ref(), err.as_ref(), Some(&error.writer)]
            .into_iter()
            .flatten()
        {
            s.close();
        }
    };
    tokio::select! {
        () = down => {}
        () = async { tokio::join!(stdin, resize); std::future::pending::<()>().await } => {}
    }
    drop(writer);
    drop(conn);
}
