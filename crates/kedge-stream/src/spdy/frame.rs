//! SPDY/3 frames (pure): encoding, decoding, header blocks.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub type Headers = Vec<(String, String)>;

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
/// Frames above this are refused (SPDY allows 16 MiB; kubectl sends 32 KiB chunks).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        id: u32,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

/// The RST_STREAM status sent when a stream is given up.
pub const CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("a SPDY frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    Zlib(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("SPDY upgrade refused: {0}")]
    Upgrade(String),
}

/// The SPDY/3 header compression dictionary (the spec's, section 2.6.10.1): length-prefixed
/// words, then a run of common values.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414\
        415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
        400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
        501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct \
        Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,\
        image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
        publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut d = Vec::with_capacity(1500);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// One direction pair of a connection's header compression (each side keeps one zlib stream
/// per direction for the connection's life) and the frame codec around it.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Codec {
    pub fn new() -> Codec {
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream; if it did, headers would go without the dictionary,
        // which readers still accept.
        let _ = deflate.set_dictionary(&dict);
        Codec {
            deflate,
            inflate: Decompress::new(true),
            dict,
        }
    }

    /// Takes one frame off the front of `buf`, if a whole one is there.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (be32(&buf[4..8]) & 0x00ff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let first = be32(&buf[..4]);
        let flags = buf[4];
        let body: Vec<u8> = buf.drain(..8 + len).skip(8).collect();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first & 0x7fff_ffff,
                fin,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        self.control((first & 0xffff) as u16, fin, &body).map(Some)
    }

    fn control(&mut self, kind: u16, fin: bool, b: &[u8]) -> Result<Frame, SpdyError> {
        let need = |n: usize| {
            if b.len() < n {
                Err(SpdyError::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            1 => {
                need(10)?;
                Frame::SynStream {
                    id: be32(b) & 0x7fff_ffff,
                    fin,
                    headers: self.read_headers(&b[10..])?,
                }
            }
            2 => {
                need(4)?;
                Frame::SynReply {
                    id: be32(b) & 0x7fff_ffff,
                    fin,
                    headers: self.read_headers(&b[4..])?,
                }
            }
            3 => {
                need(8)?;
                Frame::RstStream {
                    id: be32(b) & 0x7fff_ffff,
                    status: be32(&b[4..]),
                }
            }
            6 => {
                need(4)?;
                Frame::Ping(be32(b))
            }
            7 => {
                need(8)?;
                Frame::GoAway {
                    last: be32(b) & 0x7fff_ffff,
                    status: be32(&b[4..]),
                }
            }
            8 => {
                need(4)?;
                // Read to keep the zlib stream in step; kubectl sends none.
                let _ = self.read_headers(&b[4..])?;
                Frame::Headers {
                    id: be32(b) & 0x7fff_ffff,
                }
            }
            9 => {
                need(8)?;
                Frame::WindowUpdate {
                    id: be32(b) & 0x7fff_ffff,
                    delta: be32(&b[4..]) & 0x7fff_ffff,
                }
            }
            _ => Frame::Settings,
        })
    }

    fn read_headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate_block(block)?;
        parse_headers(&raw)
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let zlib = |e: flate2::DecompressError| SpdyError::Zlib(e.to_string());
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            if out.capacity() > MAX_FRAME * 4 {
                return Err(SpdyError::TooLarge(out.capacity()));
            }
            let before = self.inflate.total_in();
            let produced = out.len();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict).map_err(zlib)?;
                }
                Err(e) => return Err(zlib(e)),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() == produced && out.len() < out.capacity() {
                return Err(SpdyError::Malformed("header block does not inflate"));
            }
        }
    }

    fn deflate_block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            let room = out.len() < out.capacity();
            if matches!(status, Err(_) | Ok(Status::StreamEnd)) || (input.is_empty() && room) {
                return out;
            }
        }
    }

    /// The bytes of `f`.
    pub fn encode(&mut self, f: &Frame) -> Vec<u8> {
        match f {
            Frame::Data { id, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&length(*fin, data.len()));
                out.extend_from_slice(data);
                out
            }
            Frame::SynStream { id, fin, headers } => {
                let block = self.deflate_block(&header_block(headers));
                let mut body = Vec::with_capacity(10 + block.len());
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&[0; 6]);
                body.extend_from_slice(&block);
                control(1, *fin, &body)
            }
            Frame::SynReply { id, fin, headers } => {
                let block = self.deflate_block(&header_block(headers));
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&block);
                control(2, *fin, &body)
            }
            Frame::RstStream { id, status } => control(3, false, &pair(*id, *status)),
            Frame::Ping(id) => control(6, false, &id.to_be_bytes()),
            Frame::GoAway { last, status } => control(7, false, &pair(*last, *status)),
            Frame::WindowUpdate { id, delta } => control(9, false, &pair(*id, *delta)),
            Frame::Settings => control(4, false, &0u32.to_be_bytes()),
            Frame::Headers { id } => {
                let block = self.deflate_block(&header_block(&[]));
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&block);
                control(8, false, &body)
            }
        }
    }
}

fn length(fin: bool, len: usize) -> [u8; 4] {
    let mut l = (len as u32 & 0x00ff_ffff).to_be_bytes();
    l[0] = if fin { FLAG_FIN } else { 0 };
    l
}

fn pair(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out[4..].copy_from_slice(&b.to_be_bytes());
    out
}

fn control(kind: u16, fin: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&length(fin, body.len()));
    out.extend_from_slice(body);
    out
}

/// The uncompressed header block: a count, then length-prefixed names and values.
fn header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        for s in [k.to_ascii_lowercase().as_str(), v.as_str()] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

fn parse_headers(raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = SpdyError::Malformed("header block");
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = raw
            .get(at..at + n)
            .ok_or(SpdyError::Malformed("header block"))?;
        at += n;
        Ok(s)
    };
    let count = be32(take(4)?) as usize;
    if count > 1024 {
        return Err(bad);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// The value of header `name` (names are lower case on the wire).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn frames_round_trip_through_one_connection_of_codecs() {
        let (mut a, mut b) = (Codec::new(), Codec::new());
        let frames = [
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::SynStream {
                id: 3,
                fin: false,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::RstStream {
                id: 3,
                status: CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway { last: 3, status: 0 },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(a.encode(f));
        }
        // Arrives in pieces, as TCP may cut it.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(5) {
            buf.extend_from_slice(chunk);
            while let Some(f) = b.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut c = Codec::new();
        let mut v2 = vec![0x80, 2, 0, 1, 0, 0, 0, 0];
        assert!(matches!(c.decode(&mut v2), Err(SpdyError::Version(2))));
        let mut huge = vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(matches!(c.decode(&mut huge), Err(SpdyError::TooLarge(_))));
        let mut garbage = control(1, false, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        assert!(c.decode(&mut garbage).is_err());
    }

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423, "the SPDY/3 dictionary's length");
        assert_eq!(&d[..11], b"\0\0\0\x07options");
    }
}
