//! `pods/portforward`: kubectl speaks SPDY (tunnelled in a WebSocket by current kubectls,
//! upgraded to by older ones) and opens a pair of streams (`error`, `data`) per connection it
//! forwards; each pair becomes one stream to the node.

use std::collections::HashMap;

use axum::extract::Request;
use axum::response::Response;
use kedge_stream::spdy::{Conn, Role, SpdyStream};
use kedge_stream::{Stream, StreamRequest};

use super::Target;
use super::tunnel::{self, Upgrade};
use crate::error::ApiError;

const WS_PROTOCOLS: [&str; 1] = ["SPDY/3.1+portforward.k8s.io"];
const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

pub(super) async fn serve(req: Request, target: Target) -> Result<Response, ApiError> {
    Ok(
        match tunnel::upgrade(req, &WS_PROTOCOLS, &SPDY_PROTOCOLS).await? {
            Upgrade::WebSocket(ws) => {
                ws.on_upgrade(move |socket| session(tunnel::websocket_io(socket), target))
            }
            Upgrade::Spdy(protocol, req) => {
                tunnel::spdy(protocol, req, move |conn| session(conn, target))
            }
        },
    )
}

#[derive(Default)]
struct Pair {
    error: Option<SpdyStream>,
    data: Option<SpdyStream>,
}

async fn session<IO>(io: IO, target: Target)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (_conn, mut incoming) = Conn::start(io, Vec::new(), Role::Server);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = incoming.recv().await {
        let id = s.header("requestid").unwrap_or("").to_string();
        let pair = pairs.entry(id.clone()).or_default();
        match s
            .header("streamtype")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("error") => pair.error = Some(s),
            Some("data") => pair.data = Some(s),
            _ => s.writer.reset(),
        }
        if pair.error.is_some()
            && pair.data.is_some()
            && let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&id)
        {
            tokio::spawn(forward(target.clone(), error, data));
        }
    }
}

/// One forwarded connection.
async fn forward(target: Target, error: SpdyStream, mut data: SpdyStream) {
    let (error, data_w) = (error.writer, data.writer.clone());
    let fail = |why: &str| {
        let _ = error.send(why.as_bytes());
        error.close();
        data_w.close();
    };
    let port = match data.header("port").map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => p,
        _ => {
            fail("a port-forward stream needs a port header of 1-65535");
            return;
        }
    };
    let request = StreamRequest::PortForward {
        pod: target.pod.clone(),
        port,
    };
    let Stream { mut reader, writer } = match target.open(&request) {
        Ok(s) => s,
        Err(e) => {
            fail(&e.message);
            return;
        }
    };
    let up = async {
        loop {
            match data.recv().await {
                Ok(Some(d)) => {
                    if writer.send(&d).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    writer.close();
                    // The pod may still answer: the down side ends the connection.
                    std::future::pending::<()>().await;
                }
                Err(_) => {
                    writer.reset("kubectl closed the connection");
                    break;
                }
            }
        }
    };
    let down = async {
        loop {
            match reader.recv().await {
                Ok(Some(d)) => {
                    if data_w.send(&d).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    data_w.close();
                    error.close();
                    break;
                }
                Err(e) => {
                    fail(&e.to_string());
                    break;
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
