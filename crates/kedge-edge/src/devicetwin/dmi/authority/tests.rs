use loona_hpack::{Decoder, Encoder};

use super::*;

/// What grpc-go 1.67 (KubeEdge's, dialling `/tmp/cap.sock` as edgecore and the mapper framework
/// do) sent for two `MapperRegister` calls on one connection, captured from the socket: the
/// preface, SETTINGS, a SETTINGS ack, then per call HEADERS and DATA. The first HEADERS carries
/// `:authority: %2Ftmp%2Fcap.sock` Huffman-coded with incremental indexing; the second refers
/// to it, and the other headers, by their dynamic table indices only.
const GRPC_GO: &[u8] = include_bytes!("../grpc-go-client.bin");

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The frames after the preface.
fn frames(mut b: &[u8]) -> Vec<Frame> {
    assert_eq!(&b[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    b = &b[PREFACE_LEN..];
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        out.push(Frame {
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
            payload: b[FRAME_HEADER..FRAME_HEADER + len].to_vec(),
        });
        b = &b[FRAME_HEADER + len..];
    }
    out
}

/// Each header block as a fresh decoder — h2's — reads it, with its stream.
fn blocks(out: &[u8]) -> Vec<(u32, Vec<(String, String)>)> {
    let mut decoder = Decoder::new();
    let mut blocks = Vec::new();
    let mut open: Option<(u32, Vec<u8>)> = None;
    for f in frames(out) {
        match f.kind {
            HEADERS => {
                assert!(open.is_none(), "a HEADERS inside a block");
                let (_, fragment) = headers_payload(f.flags, &f.payload).expect("payload");
                open = Some((f.stream, fragment.to_vec()));
            }
            CONTINUATION => open.as_mut().expect("open block").1.extend(&f.payload),
            _ => continue,
        }
        if f.flags & END_HEADERS != 0 {
            let (stream, block) = open.take().expect("block");
            let headers = decoder.decode(&block).expect("h2 can decode it");
            let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
            let headers = headers.into_iter().map(|(n, v)| (text(n), text(v)));
            blocks.push((stream, headers.collect()));
        }
    }
    blocks
}

fn fixed(input: &[u8]) -> (Vec<u8>, u64) {
    let mut fix = AuthorityFix::default();
    let mut out = Vec::new();
    fix.feed(input, &mut out);
    (out, fix.replaced)
}

fn header<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn grpc_go_authority_becomes_localhost_on_every_stream() {
    let (out, replaced) = fixed(GRPC_GO);
    assert_eq!(replaced, 2);
    let blocks = blocks(&out);
    assert_eq!(blocks.len(), 2);
    for (stream, (got, block)) in [1, 3].into_iter().zip(&blocks) {
        assert_eq!(*got, stream);
        assert_eq!(header(block, ":authority"), Some("localhost"));
        assert_eq!(
            header(block, ":path"),
            Some("/v1beta1.DeviceManagerService/MapperRegister")
        );
        assert_eq!(header(block, "content-type"), Some("application/grpc"));
        assert_eq!(header(block, "te"), Some("trailers"));
    }
    assert!(http::uri::Authority::try_from("%2Ftmp%2Fcap.sock").is_err());
}

#[test]
fn frames_other_than_headers_pass_unchanged() {
    let (out, _) = fixed(GRPC_GO);
    let other = |b: &[u8]| -> Vec<(u8, u8, u32, Vec<u8>)> {
        let f = frames(b).into_iter().filter(|f| f.kind != HEADERS);
        f.map(|f| (f.kind, f.flags, f.stream, f.payload)).collect()
    };
    assert_eq!(other(&out), other(GRPC_GO));
    assert_eq!(out[..PREFACE_LEN], GRPC_GO[..PREFACE_LEN]);
    // Same order: SETTINGS, SETTINGS ack, then HEADERS and DATA per stream.
    let kinds = |b: &[u8]| frames(b).iter().map(|f| f.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&out), kinds(GRPC_GO));
}

#[test]
fn any_split_of_the_input_gives_the_same_output() {
    let (whole, _) = fixed(GRPC_GO);
    for step in [1, 2, 7, 9, 10, 23, 64] {
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        for chunk in GRPC_GO.chunks(step) {
            fix.feed(chunk, &mut out);
        }
        assert_eq!(out, whole, "fed {step} bytes at a time");
    }
}

/// A connection: preface, then each block as one HEADERS frame.
fn connection(blocks: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for (i, (flags, block)) in blocks.iter().enumerate() {
        frame_header(block.len(), HEADERS, *flags, 2 * i as u32 + 1, &mut b);
        b.extend_from_slice(block);
    }
    b
}

fn request(authority: &str) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b":method", b"POST".to_vec()),
        (b":scheme", b"http".to_vec()),
        (b":path", b"/x.Y/Z".to_vec()),
        (b":authority", authority.as_bytes().to_vec()),
    ]
}

fn encode(encoder: &mut Encoder, headers: &[(&'static [u8], Vec<u8>)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())))
}

#[test]
fn a_valid_authority_is_kept() {
    let mut e = Encoder::new();
    let block = encode(&mut e, &request("unix.invalid:80"));
    let (out, replaced) = fixed(&connection(&[(END_HEADERS | END_STREAM, block)]));
    assert_eq!(replaced, 0);
    let blocks = blocks(&out);
    assert_eq!(header(&blocks[0].1, ":authority"), Some("unix.invalid:80"));
    let f = &frames(&out)[0];
    assert_eq!(f.flags, END_HEADERS | END_STREAM, "END_STREAM kept");
}

#[test]
fn padding_is_dropped_and_priority_kept() {
    let mut e = Encoder::new();
    let block = encode(&mut e, &request("/run/m.sock"));
    let mut payload = vec![3];
    payload.extend_from_slice(&[0x80, 0, 0, 1, 15]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame_header(
        payload.len(),
        HEADERS,
        END_HEADERS | PADDED | PRIORITY,
        1,
        &mut input,
    );
    input.extend_from_slice(&payload);
    let (out, replaced) = fixed(&input);
    assert_eq!(replaced, 1);
    let f = &frames(&out)[0];
    assert_eq!(f.flags, END_HEADERS | PRIORITY);
    assert_eq!(f.payload[..5], [0x80, 0, 0, 1, 15]);
    assert_eq!(header(&blocks(&out)[0].1, ":authority"), Some("localhost"));
}

#[test]
fn continuations_are_joined_and_large_blocks_split_again() {
    let mut e = Encoder::new();
    let mut headers = request("/run/m.sock");
    headers.push((b"x-big", vec![b'a'; 40_000]));
    let block = encode(&mut e, &headers);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let parts: Vec<&[u8]> = block.chunks(1000).collect();
    for (i, part) in parts.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let end = if i + 1 == parts.len() { END_HEADERS } else { 0 };
        frame_header(part.len(), kind, end, 1, &mut input);
        input.extend_from_slice(part);
    }
    let (out, replaced) = fixed(&input);
    assert_eq!(replaced, 1);
    let fs = frames(&out);
    assert!(fs.len() >= 3, "split to fit 16 KiB frames");
    assert!(fs.iter().all(|f| f.payload.len() <= MAX_FRAME));
    let b = blocks(&out);
    assert_eq!(header(&b[0].1, ":authority"), Some("localhost"));
    assert_eq!(header(&b[0].1, "x-big").map(str::len), Some(40_000));
}

#[test]
fn what_cannot_be_read_passes_unchanged_from_there_on() {
    // An index no table has: h2 must see it as sent, and answer COMPRESSION_ERROR itself.
    let bad = connection(&[(END_HEADERS, vec![0xff, 0x7f])]);
    let (out, replaced) = fixed(&bad);
    assert_eq!((out, replaced), (bad.clone(), 0));

    // A DATA frame inside an unfinished block: everything from the block on passes unread.
    let mut e = Encoder::new();
    let block = encode(&mut e, &request("/run/m.sock"));
    let mut input = connection(&[(0, block)]);
    frame_header(2, 0x0, 0, 1, &mut input);
    input.extend_from_slice(b"hi");
    let more = connection(&[]);
    input.extend_from_slice(&more[..4]);
    assert_eq!(fixed(&input).0, input);
}

#[test]
fn integers_encode_as_rfc_7541_c_1() {
    let mut out = Vec::new();
    integer(10, 5, 0, &mut out);
    integer(1337, 5, 0, &mut out);
    integer(42, 8, 0, &mut out);
    assert_eq!(out, [0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
}
