//! Streams inside a hub session (pure; groundwork for issue #19's `kubectl logs/exec/attach/
//! port-forward`): many byte streams multiplexed in one WebSocket as binary frames, beside the
//! session's JSON messages (text frames), each stream flow-controlled by credit so that a slow
//! reader stalls its own stream and nothing else.
//!
//! A frame is `[stream id: u32 big-endian][kind: u8][payload]`. `Open` carries the request (JSON),
//! `Data` bytes, `Window` a credit grant (u32 big-endian: bytes the sender may send more),
//! `Close` the end of one direction, `Reset` an error (UTF-8 text) ending both.

/// Bytes each side may send on a new stream before the first grant.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Open = 1,
    Data = 2,
    Window = 3,
    Close = 4,
    Reset = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Open,
            2 => Kind::Data,
            3 => Kind::Window,
            4 => Kind::Close,
            5 => Kind::Reset,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub stream: u32,
    pub kind: Kind,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("a stream frame needs 5 bytes of header, got {0}")]
    Short(usize),
    #[error("unknown stream frame kind {0}")]
    Kind(u8),
    #[error("a Window frame carries 4 bytes, got {0}")]
    Window(usize),
    #[error("stream {0} sent {1} bytes past its window")]
    Overrun(u32, usize),
    #[error("at most {0} streams may be open on a node at once")]
    TooMany(usize),
}

pub fn encode(stream: u32, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    out
}

pub fn decode(buf: &[u8]) -> Result<Frame<'_>, StreamError> {
    if buf.len() < 5 {
        return Err(StreamError::Short(buf.len()));
    }
    let stream = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let kind = Kind::from_u8(buf[4]).ok_or(StreamError::Kind(buf[4]))?;
    Ok(Frame {
        stream,
        kind,
        payload: &buf[5..],
    })
}

/// A `Window` frame's grant.
pub fn window_grant(f: &Frame) -> Result<u32, StreamError> {
    <[u8; 4]>::try_from(f.payload)
        .map(u32::from_be_bytes)
        .map_err(|_| StreamError::Window(f.payload.len()))
}

/// The sending side of one stream: how much may still be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit(u64);

impl Default for Credit {
    fn default() -> Self {
        Credit(u64::from(INITIAL_WINDOW))
    }
}

impl Credit {
    /// Takes up to `want` bytes of credit; what may be sent now (0: wait for a grant).
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.0);
        self.0 -= n;
        n as usize
    }

    /// Takes `want` bytes of credit only if all of it is there (a message sent whole).
    pub fn take_all(&mut self, want: usize) -> bool {
        let ok = want as u64 <= self.0;
        if ok {
            self.0 -= want as u64;
        }
        ok
    }

    pub fn grant(&mut self, n: u32) {
        self.0 = self.0.saturating_add(u64::from(n));
    }
}

/// The receiving side of one stream: checks the peer keeps to its window and says when to grant
/// more — once the reader has consumed half a window, so the sender rarely waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes the peer may still send.
    allowed: u64,
    /// Bytes the reader consumed and not yet granted back.
    consumed: u64,
}

impl Default for Receipt {
    fn default() -> Self {
        Receipt {
            allowed: u64::from(INITIAL_WINDOW),
            consumed: 0,
        }
    }
}

impl Receipt {
    /// `n` bytes arrived on `stream`; an error if the peer overran its window.
    pub fn arrived(&mut self, stream: u32, n: usize) -> Result<(), StreamError> {
        if n as u64 > self.allowed {
            return Err(StreamError::Overrun(stream, n));
        }
        self.allowed -= n as u64;
        Ok(())
    }

    /// The reader took `n` bytes; `Some(grant)` to send in a `Window` frame.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.consumed += n as u64;
        if self.consumed < u64::from(INITIAL_WINDOW / 2) {
            return None;
        }
        let grant = u32::try_from(self.consumed).unwrap_or(u32::MAX);
        self.consumed -= u64::from(grant);
        self.allowed += u64::from(grant);
        Some(grant)
    }
}

/// Stream ids of one session: odd from the cloud, even from the edge (no clash without asking),
/// and a bound on how many are open at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    next: u32,
    open: usize,
    max: usize,
}

impl Ids {
    /// The cloud's side (`true`) or the edge's, with at most `max` streams open.
    pub fn new(cloud: bool, max: usize) -> Ids {
        Ids {
            next: if cloud { 1 } else { 2 },
            open: 0,
            max,
        }
    }

    /// A new stream's id, or why not.
    pub fn open(&mut self) -> Result<u32, StreamError> {
        if self.open >= self.max {
            return Err(StreamError::TooMany(self.max));
        }
        let id = self.next;
        self.next = self.next.wrapping_add(2);
        self.open += 1;
        Ok(id)
    }

    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let b = encode(7, Kind::Data, b"hello");
        let f = decode(&b).expect("frame");
        assert_eq!(
            (f.stream, f.kind, f.payload),
            (7, Kind::Data, b"hello".as_slice())
        );
        assert_eq!(decode(&[0, 0, 0]), Err(StreamError::Short(3)));
        assert_eq!(decode(&[0, 0, 0, 1, 9]), Err(StreamError::Kind(9)));
        let w = encode(7, Kind::Window, &1000u32.to_be_bytes());
        assert_eq!(window_grant(&decode(&w).expect("frame")), Ok(1000));
        let short = encode(7, Kind::Window, &[1]);
        assert!(window_grant(&decode(&short).expect("frame")).is_err());
    }

    #[test]
    fn a_sender_stops_at_its_window_and_goes_on_when_granted() {
        let mut c = Credit::default();
        assert_eq!(
            c.take(INITIAL_WINDOW as usize + 10),
            INITIAL_WINDOW as usize
        );
        assert_eq!(c.take(1), 0, "wait for a grant");
        c.grant(100);
        assert!(!c.take_all(101), "a message waits for room for all of it");
        assert_eq!(c.take(1000), 100);
    }

    #[test]
    fn a_receiver_grants_after_half_a_window_and_refuses_overruns() {
        let mut r = Receipt::default();
        r.arrived(1, INITIAL_WINDOW as usize)
            .expect("within the window");
        assert_eq!(r.arrived(1, 1), Err(StreamError::Overrun(1, 1)));
        assert_eq!(r.consumed(1000), None);
        let half = INITIAL_WINDOW / 2;
        assert_eq!(r.consumed(half as usize - 1000), Some(half));
        r.arrived(1, half as usize).expect("granted room");
    }

    #[test]
    fn ids_do_not_clash_and_are_bounded() {
        let (mut cloud, mut edge) = (Ids::new(true, 2), Ids::new(false, 2));
        assert_eq!((cloud.open(), cloud.open()), (Ok(1), Ok(3)));
        assert_eq!(edge.open(), Ok(2));
        assert_eq!(cloud.open(), Err(StreamError::TooMany(2)));
        cloud.closed();
        assert_eq!(cloud.open(), Ok(5));
    }
}
