//! `pods/log`: the node's answer as a chunked body. An error before the first byte is the
//! answer's status (kubectl prints it); a stream cut later ends the body with a line that says
//! why, then aborts it, so kubectl exits with an error rather than as if the log had ended.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kedge_stream::{StreamError, StreamRequest};

use super::Target;
use crate::error::ApiError;

pub(super) async fn serve(
    target: Target,
    container: String,
    query: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let request = StreamRequest::Logs {
        pod: target.pod.clone(),
        container,
        query,
    };
    let mut stream = target.open(&request)?;
    let first = match stream.reader.recv().await {
        Ok(Some(d)) => d,
        Ok(None) => Vec::new(),
        Err(StreamError::Reset(why)) => return Err(ApiError::bad_request(why)),
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let body = futures::stream::unfold(Part::First(first, stream, target.node), next);
    Ok((
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Where the body is.
enum Part {
    First(Vec<u8>, kedge_stream::Stream, String),
    Open(kedge_stream::Stream, String),
    Cut(String),
    Done,
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

async fn next(state: Part) -> Option<(Chunk, Part)> {
    match state {
        Part::First(f, s, node) => Some((Ok(f.into()), Part::Open(s, node))),
        Part::Open(mut s, node) => match s.reader.recv().await {
            Ok(Some(d)) => Some((Ok(d.into()), Part::Open(s, node))),
            Ok(None) => None,
            Err(e) => {
                let line = format!("\nkedge: the log stream from node {node} was cut: {e}\n");
                Some((Ok(line.into()), Part::Cut(e.to_string())))
            }
        },
        Part::Cut(why) => {
            // Aborting the body resets the HTTP/2 stream, and a reset discards the data still
            // queued for it: the line goes out first (it is small, and sent at once).
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            Some((Err(std::io::Error::other(why)), Part::Done))
        }
        Part::Done => None,
    }
}
