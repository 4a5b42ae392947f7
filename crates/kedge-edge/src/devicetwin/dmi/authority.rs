//! What a gRPC client sends on a DMI socket, with its `:authority` made one h2 accepts.
//!
//! grpc-go dialling a socket path (edgecore calling a mapper, KubeEdge's mapper framework
//! calling the edge) sends the path, percent-encoded, as the HTTP/2 `:authority`
//! (`%2Fetc%2Fkubeedge%2Fdmi.sock`). h2, under tonic, refuses such a stream with
//! `PROTOCOL_ERROR` before any handler sees it, and has no setting to relax that. On a unix
//! socket the authority names nothing, so the server side reads the client's bytes through this
//! state machine, which replaces an authority h2 would refuse by `localhost` (what grpc-go
//! itself sends for `unix://` targets) and leaves every other byte as it was.
//!
//! Header blocks are HPACK-compressed against a table both ends keep in step, so one value
//! cannot be changed in place: every header block is decoded here with the client's table and
//! sent on as literals that are never indexed, so h2's table stays empty and always agrees.
//! Frames other than HEADERS/CONTINUATION pass through untouched, streamed, not buffered.
//! Anything this cannot read (a bad HPACK block, a broken frame sequence) is passed on as it
//! came and the rest of the connection too: h2 then refuses it exactly as it would have.

use loona_hpack::Decoder;

/// The HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame every HTTP/2 peer accepts (its SETTINGS_MAX_FRAME_SIZE floor).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this (across CONTINUATIONs) is passed on unread: h2's own header
/// list limit refuses it.
const MAX_BLOCK: usize = 1 << 20;
/// What an authority h2 refuses becomes.
pub const REPLACEMENT: &[u8] = b"localhost";

/// The rewriter for one connection, fed the bytes the client sent, in order.
pub struct AuthorityFix {
    state: State,
    /// Bytes of a frame not yet whole.
    buf: Vec<u8>,
    block: Option<Block>,
    /// The whole HEADERS/CONTINUATION frames held back, as they came: passed on unchanged if
    /// their block cannot be read.
    held: Vec<u8>,
    decoder: Decoder<'static>,
    /// Authorities replaced so far (for the log and the tests).
    pub replaced: u64,
}

enum State {
    /// So many bytes of the preface still to pass.
    Preface(usize),
    /// Between frames; `skip` bytes of a frame's payload pass unread first.
    Frames { skip: usize },
    /// Something could not be read: the rest passes as it is.
    Through,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self {
            state: State::Preface(PREFACE_LEN),
            buf: Vec::new(),
            block: None,
            held: Vec::new(),
            decoder: Decoder::new(),
            replaced: 0,
        }
    }
}

impl AuthorityFix {
    /// Takes `input` from the client and appends to `out` what the server should read. Bytes
    /// of an incomplete frame are kept for the next call.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                State::Through => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Preface(left) => {
                    let n = (*left).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Frames { skip: 0 };
                    }
                }
                State::Frames { skip } if *skip > 0 => {
                    let n = (*skip).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *skip -= n;
                }
                State::Frames { .. } => input = self.frame(input, out),
            }
        }
    }

    /// Reads from the start of a frame; returns what is left of `input`.
    fn frame<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        let have = self.buf.len();
        if have < FRAME_HEADER {
            let n = (FRAME_HEADER - have).min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            if self.buf.len() < FRAME_HEADER {
                return &input[n..];
            }
            return self.after_header(&input[n..], out);
        }
        self.after_header(input, out)
    }

    /// `buf` holds at least a frame header (and perhaps part of its payload).
    fn after_header<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        let kind = self.buf[3];
        if kind != HEADERS && kind != CONTINUATION {
            if self.block.is_some() {
                // Only CONTINUATION may follow an unfinished block: h2 will say so.
                self.give_up(out);
                return input;
            }
            out.append(&mut self.buf);
            self.state = State::Frames { skip: len };
            return input;
        }
        let gathered = self.buf.len() - FRAME_HEADER;
        let n = (len - gathered).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        if self.buf.len() == FRAME_HEADER + len {
            let frame = std::mem::take(&mut self.buf);
            self.held.extend_from_slice(&frame);
            if !self.header_frame(&frame, out) {
                self.give_up(out);
            }
        }
        &input[n..]
    }

    /// Takes one whole HEADERS or CONTINUATION frame; false if it cannot be read.
    fn header_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> bool {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if self.block.is_some() {
                return false;
            }
            let Some((priority, fragment)) = headers_payload(flags, payload) else {
                return false;
            };
            self.block = Some(Block {
                stream,
                flags,
                priority,
                fragment: fragment.to_vec(),
            });
        } else {
            let Some(block) = self.block.as_mut().filter(|b| b.stream == stream) else {
                return false;
            };
            block.fragment.extend_from_slice(payload);
            if self.held.len() > MAX_BLOCK {
                return false;
            }
        }
        if flags & END_HEADERS == 0 {
            return true;
        }
        let Some(block) = self.block.take() else {
            return false;
        };
        self.finish(block, out)
    }

    /// Decodes a whole block and writes it out again; false if it cannot be read.
    fn finish(&mut self, block: Block, out: &mut Vec<u8>) -> bool {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut replaced = false;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            let value = if &*name == b":authority" && !valid_authority(&value) {
                replaced = true;
                REPLACEMENT
            } else {
                &*value
            };
            never_indexed(&name, value, &mut encoded);
        });
        if decoded.is_err() {
            return false;
        }
        if replaced {
            self.replaced += 1;
        }
        self.held.clear();
        write_block(&block, &encoded, out);
        true
    }

    /// Passes on what was held back and what is buffered, and from now on everything, unread.
    fn give_up(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        out.append(&mut self.buf);
        self.block = None;
        self.state = State::Through;
    }
}

/// A HEADERS payload without its padding: the priority fields, if any, and the block fragment.
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, tail) = rest.split_first()?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (p, tail) = rest.split_first_chunk::<5>()?;
        priority = Some(*p);
        rest = tail;
    }
    let end = rest.len().checked_sub(pad)?;
    Some((priority, &rest[..end]))
}

/// What h2 accepts as an authority.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field never indexed — new name" (RFC 7541 §6.2.3), no Huffman.
fn never_indexed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x10);
    string(name, out);
    string(value, out);
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    integer(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1); `first` holds the bits above it.
fn integer(mut n: usize, prefix: u32, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// The block as a HEADERS frame, and CONTINUATIONs when it does not fit in one.
fn write_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let mut first = Vec::with_capacity(5 + encoded.len().min(MAX_FRAME));
    let mut flags = block.flags & END_STREAM;
    if let Some(p) = block.priority {
        first.extend_from_slice(&p);
        flags |= PRIORITY;
    }
    let take = (MAX_FRAME - first.len()).min(encoded.len());
    first.extend_from_slice(&encoded[..take]);
    let mut rest = encoded[take..].chunks(MAX_FRAME).peekable();
    let last = rest.peek().is_none();
    frame_header(
        first.len(),
        HEADERS,
        flags | if last { END_HEADERS } else { 0 },
        block.stream,
        out,
    );
    out.extend_from_slice(&first);
    while let Some(chunk) = rest.next() {
        let end = if rest.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame_header(chunk.len(), CONTINUATION, end, block.stream, out);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

#[cfg(test)]
mod tests;
