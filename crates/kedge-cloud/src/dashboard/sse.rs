//! Watch streams as server-sent events: the API's watch answer is one JSON object per line;
//! each complete line becomes one `data:` event, so the page can read it with `EventSource`.
//! Pure: bytes in, bytes out.

/// A line longer than this is refused (no watch event of a sane object comes near it).
pub const MAX_LINE: usize = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a watch event over {MAX_LINE} bytes")]
pub struct TooLong;

/// Cuts a byte stream into lines and frames each as an event.
#[derive(Debug, Default)]
pub struct Framer {
    partial: Vec<u8>,
}

impl Framer {
    /// The events completed by `chunk` (empty when it ends mid-line).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TooLong> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            frame(&self.partial, &mut out);
            self.partial.clear();
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            return Err(TooLong);
        }
        Ok(out)
    }

    /// The last event, when the stream ended without a newline.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        frame(&self.partial, &mut out);
        out
    }
}

/// One event: `data: <line>` and a blank line. A JSON line has no newline of its own; a stray
/// `\r` would end the field early, so it goes.
fn frame(line: &[u8], out: &mut Vec<u8>) {
    let line: Vec<u8> = line.iter().copied().filter(|b| *b != b'\r').collect();
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&line);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_become_whole_events() {
        let mut f = Framer::default();
        let mut out = f.push(b"{\"type\":\"ADDED\"}\n{\"ty").expect("fits");
        assert_eq!(out, b"data: {\"type\":\"ADDED\"}\n\n");
        out = f.push(b"pe\":\"MODIFIED\"}\r\n\n").expect("fits");
        assert_eq!(out, b"data: {\"type\":\"MODIFIED\"}\n\n");
        assert!(f.push(b"{\"last\":1}").expect("fits").is_empty());
        assert_eq!(f.finish(), b"data: {\"last\":1}\n\n");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut f = Framer::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut result = Ok(Vec::new());
        for _ in 0..=(MAX_LINE >> 20) {
            result = f.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong));
    }
}
