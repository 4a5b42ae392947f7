//! A SPDY/3.1 connection over any byte stream: a reader task and a writer task, streams as
//! channels. Streams the peer opens are answered (`SYN_REPLY`) at once and handed out;
//! streams this side opens get odd ids as a client, even ones as a server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{CANCEL, Codec, Frame, Headers, SpdyError};

/// Largest data frame sent.
const CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Event {
    Data(Vec<u8>),
    Fin,
    Reset(String),
}

struct Inner {
    out: mpsc::UnboundedSender<Frame>,
    streams: Mutex<HashMap<u32, mpsc::Sender<Event>>>,
    next: AtomicU32,
}

impl Inner {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Event>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stream(self: &Arc<Self>, id: u32, headers: Headers) -> SpdyStream {
        // A few chunks per stream: a reader that stops pauses the connection (TCP then
        // pauses the peer), and the memory held stays small.
        let (tx, rx) = mpsc::channel(8);
        self.streams().insert(id, tx);
        SpdyStream {
            headers,
            rx,
            writer: SpdyWriter {
                id,
                inner: self.clone(),
            },
        }
    }
}

/// One SPDY connection. Dropping it sends `GOAWAY` and ends the connection once the streams'
/// last frames are written.
pub struct Conn {
    inner: Arc<Inner>,
}

impl Conn {
    /// Runs SPDY over `io` (`early`: bytes already read past the HTTP upgrade). Streams the
    /// peer opens arrive on the receiver.
    pub fn start<IO>(io: IO, early: Vec<u8>, role: Role) -> (Conn, mpsc::Receiver<SpdyStream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out, frames) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            out,
            streams: Mutex::default(),
            next: AtomicU32::new(if role == Role::Client { 1 } else { 2 }),
        });
        let (incoming_tx, incoming) = mpsc::channel(16);
        let (r, w) = tokio::io::split(io);
        tokio::spawn(write_loop(w, frames));
        tokio::spawn(read_loop(r, early, inner.clone(), incoming_tx));
        (Conn { inner }, incoming)
    }

    /// Opens a stream with `headers`.
    pub fn open(&self, headers: Headers) -> SpdyStream {
        let id = self.inner.next.fetch_add(2, Ordering::Relaxed);
        let s = self.inner.stream(id, headers.clone());
        let _ = self.inner.out.send(Frame::SynStream {
            id,
            fin: false,
            headers,
        });
        s
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.inner.out.send(Frame::GoAway { last: 0, status: 0 });
    }
}

/// One stream: its opening headers, what arrives, and a writer.
pub struct SpdyStream {
    pub headers: Headers,
    rx: mpsc::Receiver<Event>,
    pub writer: SpdyWriter,
}

impl SpdyStream {
    /// The next chunk; `Ok(None)` once the peer finished its side; `Err` if it was reset.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.rx.recv().await {
            Some(Event::Data(d)) => Ok(Some(d)),
            Some(Event::Fin) => Ok(None),
            Some(Event::Reset(why)) => Err(why),
            None => Err("the SPDY connection ended".into()),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        super::frame::header(&self.headers, name)
    }
}

/// Sends on one stream; clones share it.
#[derive(Clone)]
pub struct SpdyWriter {
    id: u32,
    inner: Arc<Inner>,
}

impl SpdyWriter {
    pub fn send(&self, data: &[u8]) -> Result<(), SpdyError> {
        for chunk in data.chunks(CHUNK) {
            self.inner
                .out
                .send(Frame::Data {
                    id: self.id,
                    fin: false,
                    data: chunk.to_vec(),
                })
                .map_err(|_| SpdyError::Io(std::io::ErrorKind::BrokenPipe.into()))?;
        }
        Ok(())
    }

    /// Finishes this side of the stream.
    pub fn close(&self) {
        let _ = self.inner.out.send(Frame::Data {
            id: self.id,
            fin: true,
            data: Vec::new(),
        });
    }

    /// Cancels the stream both ways.
    pub fn reset(&self) {
        self.inner.streams().remove(&self.id);
        let _ = self.inner.out.send(Frame::RstStream {
            id: self.id,
            status: CANCEL,
        });
    }
}

async fn write_loop<W: AsyncWrite>(w: W, mut frames: mpsc::UnboundedReceiver<Frame>) {
    tokio::pin!(w);
    let mut codec = Codec::new();
    while let Some(f) = frames.recv().await {
        let last = matches!(f, Frame::GoAway { .. });
        let mut bytes = codec.encode(&f);
        // Everything queued goes out in one write.
        while let Ok(more) = frames.try_recv() {
            bytes.extend(codec.encode(&more));
        }
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if last {
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    r: R,
    mut buf: Vec<u8>,
    inner: Arc<Inner>,
    incoming: mpsc::Sender<SpdyStream>,
) {
    tokio::pin!(r);
    let mut codec = Codec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let why = 'conn: loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Some(why) = handle(&inner, &incoming, f).await {
                        break 'conn why;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn format!("SPDY: {e}"),
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) => break "the peer closed the connection".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("read failed: {e}"),
        }
    };
    let streams: Vec<_> = inner.streams().drain().map(|(_, s)| s).collect();
    for s in streams {
        let _ = s.try_send(Event::Reset(why.clone()));
    }
}

/// Acts on one frame; `Some(why)` ends the connection.
async fn handle(
    inner: &Arc<Inner>,
    incoming: &mpsc::Sender<SpdyStream>,
    f: Frame,
) -> Option<String> {
    match f {
        Frame::SynStream { id, fin, headers } => {
            let s = inner.stream(id, headers);
            let _ = inner.out.send(Frame::SynReply {
                id,
                fin: false,
                headers: Vec::new(),
            });
            if fin {
                deliver(inner, id, Event::Fin).await;
            }
            if incoming.send(s).await.is_err() {
                inner.streams().remove(&id);
            }
        }
        Frame::Data { id, fin, data } => {
            if !data.is_empty() {
                deliver(inner, id, Event::Data(data)).await;
            }
            if fin {
                deliver(inner, id, Event::Fin).await;
                inner.streams().remove(&id);
            }
        }
        Frame::RstStream { id, status } => {
            let s = inner.streams().remove(&id);
            if let Some(s) = s {
                let _ = s
                    .send(Event::Reset(format!("reset by the peer ({status})")))
                    .await;
            }
        }
        Frame::Ping(id) => {
            let _ = inner.out.send(Frame::Ping(id));
        }
        Frame::GoAway { .. } => return Some("the peer ended the connection".into()),
        Frame::SynReply { .. }
        | Frame::Headers { .. }
        | Frame::WindowUpdate { .. }
        | Frame::Settings => {}
    }
    None
}

async fn deliver(inner: &Inner, id: u32, e: Event) {
    let tx = inner.streams().get(&id).cloned();
    if let Some(tx) = tx {
        let _ = tx.send(e).await;
    }
}

/// Dials `url` (`http://host:port/path`, as CRI's streaming URLs are) and upgrades to SPDY/3.1
/// offering `protocols`; the connection, the streams the server opens, and the protocol chosen.
pub async fn dial(
    url: &str,
    protocols: &[&str],
) -> Result<(Conn, mpsc::Receiver<SpdyStream>, String), SpdyError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| SpdyError::Upgrade(format!("{url}: only http:// URLs are dialled")))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let _ = tcp.set_nodelay(true);
    upgrade(tcp, host, &format!("/{path}"), protocols).await
}

/// Asks for an upgrade to SPDY/3.1 at `path` (with its query) on a connection already made
/// (plain, or TLS with a client certificate), as [`dial`] does.
pub async fn upgrade<IO>(
    mut io: IO,
    host: &str,
    path: &str,
    protocols: &[&str],
) -> Result<(Conn, mpsc::Receiver<SpdyStream>, String), SpdyError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    io.write_all(req.as_bytes()).await?;
    let (head, early) = read_head(&mut io).await?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 101 ") {
        return Err(SpdyError::Upgrade(format!("{host}{path}: {status}")));
    }
    let chosen = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-stream-protocol-version"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let (conn, incoming) = Conn::start(io, early, Role::Client);
    Ok((conn, incoming, chosen))
}

/// Reads an HTTP response head; it and the bytes read past it.
async fn read_head<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<(String, Vec<u8>), SpdyError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Err(SpdyError::Upgrade("the response head is too long".into()));
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(SpdyError::Upgrade("closed before the response".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_and_a_server_exchange_streams() {
        let (a, b) = tokio::io::duplex(1024);
        let (client, _) = Conn::start(a, Vec::new(), Role::Client);
        let (_server, mut incoming) = Conn::start(b, Vec::new(), Role::Server);
        let mut mine = client.open(vec![("streamtype".into(), "data".into())]);
        mine.writer.send(&vec![1u8; 100_000]).expect("send");
        mine.writer.close();
        let mut theirs = incoming.recv().await.expect("a stream");
        assert_eq!(theirs.header("streamtype"), Some("data"));
        let mut got = 0;
        while let Some(d) = theirs.recv().await.expect("data") {
            got += d.len();
        }
        assert_eq!(got, 100_000);
        theirs.writer.send(b"bye").expect("send");
        theirs.writer.reset();
        assert_eq!(mine.recv().await, Ok(Some(b"bye".to_vec())));
        assert!(mine.recv().await.is_err(), "reset reaches the client");
    }
}
