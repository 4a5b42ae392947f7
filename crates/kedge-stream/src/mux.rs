//! Many byte streams in one hub session. The session hands every binary frame it reads to
//! [`Mux::receive`] and writes every frame [`Mux::new`]'s receiver yields; everything else
//! (credit, closing, the per-node bound) is here, on `kedge_core::stream`'s pure pieces.
//!
//! A frame read from the socket is only ever queued (at most a window per stream), never waited
//! on: a reader that stops reading stops its peer's writer through credit, and nothing else.
//! Dropping both halves of a stream before it ended resets it, so kubectl going away ends the
//! container side, and the session ending resets every stream with the reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kedge_core::stream::{self as frame, Credit, Ids, Kind, Receipt};
use kedge_core::throttle::TokenBucket;
use tokio::sync::{Notify, mpsc};

/// Largest payload of one `Data` frame, and of a message sent whole.
pub const CHUNK: usize = 64 * 1024;

/// Streams open on one node at once (both directions of the session together).
pub const DEFAULT_MAX_STREAMS: usize = 128;

/// Stream bytes one side of a session sends per second, all streams together (KiB/s): far
/// above what a cloud–edge link carries, low enough that a `kubectl cp` over loopback leaves
/// the node's twins and control messages their share of the CPU.
pub const DEFAULT_RATE_KIB: u32 = 32 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// The peer (or the session) ended the stream with this reason.
    #[error("{0}")]
    Reset(String),
    #[error(transparent)]
    Frame(#[from] frame::StreamError),
}

/// A stream the peer opened: its request (JSON) and the stream.
#[derive(Debug)]
pub struct Incoming {
    pub request: Vec<u8>,
    pub stream: Stream,
}

enum Event {
    Data(Vec<u8>),
    Close,
    Reset(String),
}

/// The sending side's state, shared by the stream's writer and the mux (grants arrive there).
#[derive(Default)]
struct Send {
    credit: Mutex<Credit>,
    granted: Notify,
    /// Set when the stream ended (reset, or the session ended): a waiting writer gives up.
    ended: Mutex<Option<String>>,
}

struct Slot {
    events: mpsc::UnboundedSender<Event>,
    receipt: Receipt,
    send: Arc<Send>,
    local_closed: bool,
    remote_closed: bool,
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, Slot>,
    /// Why the session ended; no stream opens after.
    ended: Option<String>,
}

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
    state: Mutex<State>,
    ids: Mutex<Ids>,
    max: usize,
    accept: Option<mpsc::Sender<Incoming>>,
    /// Paces `Data` frames (KiB), shared by the session's streams; `None`: unpaced.
    pace: Option<Mutex<TokenBucket>>,
    started: tokio::time::Instant,
}

/// One session's streams.
#[derive(Clone)]
pub struct Mux(Arc<Inner>);

impl Mux {
    /// The streams of a new session: `cloud` picks the id space, `max` bounds open streams,
    /// `rate_kib` paces what this side sends (KiB/s, 0: unpaced), `accept` takes streams the
    /// peer opens (none: each is refused). The receiver yields the binary frames for the
    /// session to write.
    pub fn new(
        cloud: bool,
        max: usize,
        rate_kib: u32,
        accept: Option<mpsc::Sender<Incoming>>,
    ) -> (Mux, mpsc::UnboundedReceiver<Vec<u8>>) {
        let started = tokio::time::Instant::now();
        // A quarter second's worth may go at once, and at least two frames.
        let burst = (rate_kib / 4).max(2 * (CHUNK as u32 / 1024));
        let pace =
            (rate_kib > 0).then(|| Mutex::new(TokenBucket::new(rate_kib, burst, Duration::ZERO)));
        let (out, frames) = mpsc::unbounded_channel();
        let inner = Inner {
            out,
            state: Mutex::default(),
            ids: Mutex::new(Ids::new(cloud, max)),
            max,
            accept,
            pace,
            started,
        };
        (Mux(Arc::new(inner)), frames)
    }

    /// Opens a stream with `request` (JSON the peer reads).
    pub fn open(&self, request: &[u8]) -> Result<Stream, StreamError> {
        let id = self.0.ids().open()?;
        let mut state = self.0.state();
        if let Some(why) = state.ended.clone() {
            drop(state);
            self.0.ids().closed();
            return Err(StreamError::Reset(why));
        }
        let stream = self.0.slot(&mut state, id);
        drop(state);
        self.0.write(id, Kind::Open, request);
        Ok(stream)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.0.state().streams.len()
    }

    /// Takes one binary frame from the session. An error is the peer's protocol fault; the
    /// session logs it and goes on (the stream concerned is reset).
    pub fn receive(&self, buf: &[u8]) -> Result<(), StreamError> {
        let f = frame::decode(buf)?;
        match f.kind {
            Kind::Open => self.0.accept(f.stream, f.payload),
            Kind::Data => self.0.data(f.stream, f.payload),
            Kind::Window => {
                let n = frame::window_grant(&f)?;
                if let Some(slot) = self.0.state().streams.get(&f.stream) {
                    slot.send.credit().grant(n);
                    slot.send.granted.notify_waiters();
                }
                Ok(())
            }
            Kind::Close => {
                self.0.remote_close(f.stream);
                Ok(())
            }
            Kind::Reset => {
                let why = String::from_utf8_lossy(f.payload).into_owned();
                self.0.finish(f.stream, Some(why), false);
                Ok(())
            }
        }
    }

    /// The session ended: every stream is reset with `why`, and none opens after.
    pub fn end(&self, why: &str) {
        let slots: Vec<Slot> = {
            let mut state = self.0.state();
            state.ended = Some(why.to_string());
            state.streams.drain().map(|(_, s)| s).collect()
        };
        for slot in slots {
            self.0.ids().closed();
            end_slot(&slot, why);
        }
    }
}

fn end_slot(slot: &Slot, why: &str) {
    *slot.send.ended() = Some(why.to_string());
    slot.send.granted.notify_waiters();
    let _ = slot.events.send(Event::Reset(why.to_string()));
}

impl Send {
    fn credit(&self) -> std::sync::MutexGuard<'_, Credit> {
        self.credit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `bytes` more may be sent.
    async fn pace(&self, bytes: usize) {
        let Some(bucket) = &self.pace else { return };
        let kib = bytes.div_ceil(1024) as u32;
        let wait = bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_n(kib, self.started.elapsed());
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }

    fn write(&self, id: u32, kind: Kind, payload: &[u8]) {
        let _ = self.out.send(frame::encode(id, kind, payload));
    }

    /// A new slot and its stream handle.
    fn slot(self: &Arc<Self>, state: &mut State, id: u32) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let send = Arc::new(Send::default());
        state.streams.insert(
            id,
            Slot {
                events: tx,
                receipt: Receipt::default(),
                send: send.clone(),
                local_closed: false,
                remote_closed: false,
            },
        );
        let guard = Arc::new(Guard {
            id,
            inner: self.clone(),
        });
        Stream {
            reader: Reader {
                id,
                ended: false,
                events: rx,
                inner: self.clone(),
                _guard: guard.clone(),
            },
            writer: Writer {
                id,
                send,
                inner: self.clone(),
                _guard: guard,
            },
        }
    }

    fn accept(self: &Arc<Self>, id: u32, request: &[u8]) -> Result<(), StreamError> {
        let refuse = |why: String| {
            self.write(id, Kind::Reset, why.as_bytes());
            Ok(())
        };
        let Some(accept) = &self.accept else {
            return refuse("this side accepts no streams".into());
        };
        let mut state = self.state();
        if state.streams.contains_key(&id) {
            drop(state);
            return refuse(format!("stream {id} is already open"));
        }
        if state.streams.len() >= self.max {
            drop(state);
            return refuse(frame::StreamError::TooMany(self.max).to_string());
        }
        let stream = self.slot(&mut state, id);
        drop(state);
        let incoming = Incoming {
            request: request.to_vec(),
            stream,
        };
        if let Err(e) = accept.try_send(incoming) {
            // Dropping the stream resets it with the reason below's cause.
            tracing::warn!(stream = id, error = %e, "no room to accept a stream");
        }
        Ok(())
    }

    fn data(&self, id: u32, payload: &[u8]) -> Result<(), StreamError> {
        let mut state = self.state();
        let Some(slot) = state.streams.get_mut(&id) else {
            // The stream ended here before the peer heard: nothing to do.
            return Ok(());
        };
        if let Err(e) = slot.receipt.arrived(id, payload.len()) {
            drop(state);
            self.finish(id, Some(e.to_string()), true);
            return Err(e.into());
        }
        let _ = slot.events.send(Event::Data(payload.to_vec()));
        Ok(())
    }

    fn remote_close(&self, id: u32) {
        let mut state = self.state();
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        slot.remote_closed = true;
        let _ = slot.events.send(Event::Close);
        if slot.local_closed {
            state.streams.remove(&id);
            drop(state);
            self.ids().closed();
        }
    }

    fn local_close(&self, id: u32) {
        let mut state = self.state();
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        if slot.local_closed {
            return;
        }
        slot.local_closed = true;
        let done = slot.remote_closed;
        if done {
            state.streams.remove(&id);
        }
        drop(state);
        self.write(id, Kind::Close, &[]);
        if done {
            self.ids().closed();
        }
    }

    /// Ends stream `id` with `why` (None: quietly); `tell` sends the peer a `Reset`.
    fn finish(&self, id: u32, why: Option<String>, tell: bool) {
        let slot = self.state().streams.remove(&id);
        let Some(slot) = slot else { return };
        self.ids().closed();
        let why = why.unwrap_or_else(|| "the stream was closed".into());
        if tell {
            self.write(id, Kind::Reset, why.as_bytes());
        }
        end_slot(&slot, &why);
    }

    fn consumed(&self, id: u32, n: usize) {
        let grant = self
            .state()
            .streams
            .get_mut(&id)
            .and_then(|s| s.receipt.consumed(n));
        if let Some(g) = grant {
            self.write(id, Kind::Window, &g.to_be_bytes());
        }
    }
}

/// Resets the stream when both halves are dropped before it ended both ways.
struct Guard {
    id: u32,
    inner: Arc<Inner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let open = self.inner.state().streams.contains_key(&self.id);
        if open {
            self.inner
                .finish(self.id, Some("the other end went away".into()), true);
        }
    }
}

/// Both halves of one stream.
#[derive(Debug)]
pub struct Stream {
    pub reader: Reader,
    pub writer: Writer,
}

/// The receiving half.
pub struct Reader {
    id: u32,
    /// The peer closed its side: nothing more comes (a later reset changes nothing here).
    ended: bool,
    events: mpsc::UnboundedReceiver<Event>,
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader({})", self.id)
    }
}

impl Reader {
    /// The next chunk; `Ok(None)` once the peer closed its side.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        if self.ended {
            return Ok(None);
        }
        match self.events.recv().await {
            Some(Event::Data(d)) => {
                self.inner.consumed(self.id, d.len());
                Ok(Some(d))
            }
            Some(Event::Close) => {
                self.ended = true;
                Ok(None)
            }
            Some(Event::Reset(why)) => Err(StreamError::Reset(why)),
            None => Err(StreamError::Reset("the stream was closed".into())),
        }
    }
}

/// The sending half; clones send on the same stream.
#[derive(Clone)]
pub struct Writer {
    id: u32,
    send: Arc<Send>,
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Writer({})", self.id)
    }
}

impl Writer {
    /// Sends `data`, waiting for credit as the peer reads.
    pub async fn send(&self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let want = data.len().min(CHUNK);
            let n = self.credit(|c| c.take(want)).await?;
            self.write(&data[..n]).await;
            data = &data[n..];
        }
        Ok(())
    }

    /// Sends `msg` as one frame (the peer receives it whole): an exec's channel message. At
    /// most [`CHUNK`] bytes.
    pub async fn send_message(&self, msg: &[u8]) -> Result<(), StreamError> {
        if msg.len() > CHUNK {
            return Err(StreamError::Reset(format!(
                "a {}-byte message is over the {CHUNK}-byte frame limit",
                msg.len()
            )));
        }
        if !msg.is_empty() {
            self.credit(|c| if c.take_all(msg.len()) { msg.len() } else { 0 })
                .await?;
            self.write(msg).await;
        }
        Ok(())
    }

    /// Waits until `take` gets some credit (what it returns), or the stream ends.
    async fn credit(
        &self,
        mut take: impl FnMut(&mut Credit) -> usize,
    ) -> Result<usize, StreamError> {
        loop {
            let granted = self.send.granted.notified();
            tokio::pin!(granted);
            granted.as_mut().enable();
            if let Some(why) = self.send.ended().clone() {
                return Err(StreamError::Reset(why));
            }
            let n = take(&mut self.send.credit());
            if n > 0 {
                return Ok(n);
            }
            granted.await;
        }
    }

    /// One `Data` frame, paced.
    async fn write(&self, data: &[u8]) {
        self.inner.pace(data.len()).await;
        self.inner.write(self.id, Kind::Data, data);
    }

    /// Ends this direction; the peer reads the end after everything sent.
    pub fn close(&self) {
        self.inner.local_close(self.id);
    }

    /// Ends the stream both ways with `why`, which the peer reads as its error.
    pub fn reset(&self, why: &str) {
        self.inner.finish(self.id, Some(why.to_string()), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two muxes wired back to back through their frame queues.
    fn pair() -> (Mux, mpsc::Receiver<Incoming>) {
        let (accept_tx, accept_rx) = mpsc::channel(8);
        let (cloud, mut cloud_frames) = Mux::new(true, 4, 0, None);
        let (edge, mut edge_frames) = Mux::new(false, 4, 0, Some(accept_tx));
        let (c, e) = (cloud.clone(), edge.clone());
        tokio::spawn(async move {
            while let Some(f) = cloud_frames.recv().await {
                let _ = e.receive(&f);
            }
        });
        tokio::spawn(async move {
            while let Some(f) = edge_frames.recv().await {
                let _ = c.receive(&f);
            }
        });
        (cloud, accept_rx)
    }

    #[tokio::test]
    async fn a_stream_carries_bytes_both_ways_and_closes() {
        let (cloud, mut accept) = pair();
        let mut s = cloud.open(b"{\"hello\":1}").expect("open");
        let mut theirs = accept.recv().await.expect("accepted");
        assert_eq!(theirs.request, b"{\"hello\":1}");
        s.writer.send(b"ping").await.expect("send");
        s.writer.close();
        assert_eq!(
            theirs.stream.reader.recv().await,
            Ok(Some(b"ping".to_vec()))
        );
        assert_eq!(theirs.stream.reader.recv().await, Ok(None));
        theirs.stream.writer.send(b"pong").await.expect("send");
        theirs.stream.writer.close();
        assert_eq!(s.reader.recv().await, Ok(Some(b"pong".to_vec())));
        assert_eq!(s.reader.recv().await, Ok(None));
        drop(theirs);
        assert_eq!(s.reader.recv().await, Ok(None), "ended stays ended");
        drop(s);
        assert_eq!(cloud.open_streams(), 0, "ended both ways: forgotten");
    }

    #[tokio::test]
    async fn a_reader_that_stops_stalls_its_writer_only() {
        let (cloud, mut accept) = pair();
        let slow = cloud.open(b"{}").expect("open");
        let fast = cloud.open(b"{}").expect("open");
        let mut slow_edge = accept.recv().await.expect("accepted").stream;
        let mut fast_edge = accept.recv().await.expect("accepted").stream;
        // Fills the slow stream's window: the next send waits.
        let big = vec![7u8; frame::INITIAL_WINDOW as usize];
        slow.writer.send(&big).await.expect("a window's worth");
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            slow.writer.send(b"x"),
        )
        .await;
        assert!(blocked.is_err(), "no credit left: the writer waits");
        fast.writer.send(b"still flows").await.expect("send");
        assert_eq!(
            fast_edge.reader.recv().await,
            Ok(Some(b"still flows".to_vec()))
        );
        // Reading frees credit: the slow writer goes on.
        let mut read = 0;
        while read < big.len() {
            read += slow_edge
                .reader
                .recv()
                .await
                .expect("data")
                .map_or(0, |d| d.len());
        }
        slow.writer.send(b"x").await.expect("credit granted");
    }

    #[tokio::test]
    async fn dropping_one_end_resets_the_other_and_the_session_end_resets_all() {
        let (cloud, mut accept) = pair();
        let s = cloud.open(b"{}").expect("open");
        let mut edge = accept.recv().await.expect("accepted").stream;
        drop(s);
        assert_eq!(
            edge.reader.recv().await,
            Err(StreamError::Reset("the other end went away".into()))
        );
        let mut s2 = cloud.open(b"{}").expect("open");
        let _edge2 = accept.recv().await.expect("accepted");
        cloud.end("node n1's session ended: link lost");
        assert_eq!(
            s2.reader.recv().await,
            Err(StreamError::Reset(
                "node n1's session ended: link lost".into()
            ))
        );
        assert!(cloud.open(b"{}").is_err(), "nothing opens after the end");
    }

    #[tokio::test]
    async fn streams_past_the_bound_are_refused_with_the_reason() {
        let (cloud, _accept) = pair();
        let open: Vec<Stream> = (0..4).map(|_| cloud.open(b"{}").expect("open")).collect();
        let err = cloud.open(b"{}").expect_err("fifth");
        assert_eq!(
            err.to_string(),
            "at most 4 streams may be open on a node at once"
        );
        drop(open);
    }
}
