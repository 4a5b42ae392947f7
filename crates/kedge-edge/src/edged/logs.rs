//! Container logs as `kubectl logs` asks for them (pure; groundwork for issue #19, which streams
//! them to the cloud). The runtime writes each container's output to
//! `<data dir>/pods/<uid>/logs/<container>_<attempt>.log` (see `spec`) in the CRI log format,
//! one line per write: `<RFC 3339 time> <stdout|stderr> <F|P> <text>` (`P`: a partial line
//! the next one continues). This module reads that format and applies the options of the
//! Kubernetes `PodLogOptions`: `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`,
//! `limitBytes`, `previous` (the attempt before the current one). Path and format checked
//! against containerd 1.6 (`kedge up --cri-endpoint …`, a pod writing to stdout and stderr).

use std::path::{Path, PathBuf};

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// As written by the runtime (RFC 3339 with nanoseconds).
    pub time: &'a str,
    pub stderr: bool,
    /// `P`: the text continues on the next line of the same stream.
    pub partial: bool,
    pub text: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("not a CRI log line: {0:?}")]
    Line(String),
    #[error("{0}: Invalid value: {1:?}: {2}")]
    Option(&'static str, String, &'static str),
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<CriLine<'_>, LogError> {
    let bad = || LogError::Line(String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned());
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(bad)?;
    let stderr = match parts.next() {
        Some(b"stdout") => false,
        Some(b"stderr") => true,
        _ => return Err(bad()),
    };
    let partial = match parts.next() {
        Some(b"F") => false,
        Some(b"P") => true,
        _ => return Err(bad()),
    };
    if time.parse::<jiff::Timestamp>().is_err() {
        return Err(bad());
    }
    Ok(CriLine {
        time,
        stderr,
        partial,
        text: parts.next().unwrap_or_default(),
    })
}

/// What `kubectl logs` asked for (the query of `pods/<name>/log`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Lines older than this are left out.
    pub since: Option<jiff::Timestamp>,
}

impl Options {
    /// Reads the query parameters (`key`, `value` pairs); `now` resolves `sinceSeconds`.
    pub fn from_query<'a>(
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: jiff::Timestamp,
    ) -> Result<Options, LogError> {
        let mut o = Options::default();
        let flag = |v: &str| matches!(v, "true" | "1");
        let number = |k: &'static str, v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| LogError::Option(k, v.to_string(), "must be a number >= 0"))
        };
        for (k, v) in query {
            match k {
                "container" if !v.is_empty() => o.container = Some(v.to_string()),
                "follow" => o.follow = flag(v),
                "previous" => o.previous = flag(v),
                "timestamps" => o.timestamps = flag(v),
                "tailLines" => o.tail_lines = Some(number("tailLines", v)? as usize),
                "limitBytes" => o.limit_bytes = Some(number("limitBytes", v)? as usize),
                "sinceSeconds" => {
                    let back = jiff::SignedDuration::from_secs(number("sinceSeconds", v)?);
                    o.since = Some(now.checked_sub(back).unwrap_or(jiff::Timestamp::MIN));
                }
                "sinceTime" => {
                    let t = v.parse::<jiff::Timestamp>().map_err(|_| {
                        LogError::Option("sinceTime", v.to_string(), "must be an RFC 3339 time")
                    })?;
                    o.since = Some(t);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// The log file of a container's `attempt` (the previous attempt's with `previous`).
pub fn path(pod_dir: &Path, container: &str, attempt: u32, previous: bool) -> Option<PathBuf> {
    let attempt = if previous {
        attempt.checked_sub(1)?
    } else {
        attempt
    };
    Some(
        pod_dir
            .join("logs")
            .join(format!("{container}_{attempt}.log")),
    )
}

/// What `kubectl logs` prints for the log file's `content`: whole lines (partial ones joined),
/// those since `since`, the last `tail_lines` of them, each with its time when `timestamps`,
/// cut at `limit_bytes`. Lines that are not CRI lines are skipped.
pub fn render(content: &[u8], o: &Options) -> Vec<u8> {
    let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending: [Option<(String, Vec<u8>)>; 2] = [None, None];
    for raw in content.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(l) = parse(raw) else { continue };
        let slot = &mut pending[usize::from(l.stderr)];
        let (time, mut text) = slot
            .take()
            .unwrap_or_else(|| (l.time.to_string(), Vec::new()));
        text.extend_from_slice(l.text);
        if l.partial {
            *slot = Some((time, text));
        } else {
            lines.push((time, text));
        }
    }
    if let Some(since) = o.since {
        lines.retain(|(t, _)| t.parse::<jiff::Timestamp>().is_ok_and(|t| t >= since));
    }
    let skip = o.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = Vec::new();
    for (time, text) in &lines[skip..] {
        if o.timestamps {
            out.extend_from_slice(time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(text);
        out.push(b'\n');
    }
    if let Some(limit) = o.limit_bytes {
        out.truncate(limit);
    }
    out
}

/// How much of `content` (bytes appended to a log file) can be rendered now: up to the end of
/// the last whole line that ends a log line (a `P` line waits for the rest of its line).
pub fn complete(content: &[u8]) -> usize {
    let mut end = 0;
    let mut at = 0;
    for line in content.split_inclusive(|b| *b == b'\n') {
        at += line.len();
        if !line.ends_with(b"\n") {
            break;
        }
        let body = &line[..line.len() - 1];
        if !parse(body).is_ok_and(|l| l.partial) {
            end = at;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-12-07T10:00:00.000000001Z stdout F first\n\
2026-12-07T10:00:01.5Z stderr P half \n\
2026-12-07T10:00:02Z stdout F second\n\
2026-12-07T10:00:03Z stderr F and half\n\
garbage that is not a CRI line\n\
2026-12-07T10:00:04Z stdout F third\n";

    #[test]
    fn lines_parse_and_garbage_is_refused() {
        let l = parse(b"2026-12-07T10:00:00Z stderr P a b c").expect("valid");
        assert_eq!(
            (l.stderr, l.partial, l.text),
            (true, true, b"a b c".as_slice())
        );
        assert!(parse(b"2026-12-07T10:00:00Z stdin F x").is_err());
        assert!(parse(b"yesterday stdout F x").is_err());
    }

    #[test]
    fn partial_lines_join_and_options_apply() {
        let all = render(LOG, &Options::default());
        assert_eq!(all, b"first\nsecond\nhalf and half\nthird\n");
        let tail = render(
            LOG,
            &Options {
                tail_lines: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(tail, b"half and half\nthird\n");
        let since: jiff::Timestamp = "2026-12-07T10:00:02Z".parse().expect("time");
        let o = Options {
            since: Some(since),
            timestamps: true,
            ..Default::default()
        };
        // A joined line has the time of its first part (10:00:01.5, before `since`).
        assert_eq!(
            String::from_utf8(render(LOG, &o)).expect("utf8"),
            "2026-12-07T10:00:02Z second\n2026-12-07T10:00:04Z third\n"
        );
        let limited = render(
            LOG,
            &Options {
                limit_bytes: Some(8),
                ..Default::default()
            },
        );
        assert_eq!(limited, b"first\nse");
    }

    #[test]
    fn query_options_as_kubectl_sends_them() {
        let q = [
            ("container", "main"),
            ("follow", "true"),
            ("tailLines", "10"),
            ("sinceSeconds", "60"),
            ("timestamps", "true"),
        ];
        let now = jiff::Timestamp::from_second(1000).expect("time");
        let o = Options::from_query(q, now).expect("valid");
        assert_eq!(o.container.as_deref(), Some("main"));
        assert!(o.follow && o.timestamps && !o.previous);
        let since = jiff::Timestamp::from_second(940).expect("time");
        assert_eq!((o.tail_lines, o.since), (Some(10), Some(since)));
        let bad = Options::from_query([("tailLines", "-1")], now).expect_err("negative");
        assert_eq!(
            bad.to_string(),
            "tailLines: Invalid value: \"-1\": must be a number >= 0"
        );
        assert!(Options::from_query([("sinceTime", "noon")], now).is_err());
    }

    #[test]
    fn only_whole_log_lines_are_taken_while_following() {
        let a = b"2026-12-07T10:00:00Z stdout F one\n";
        let p = b"2026-12-07T10:00:01Z stdout P hal\n";
        let mut buf = a.to_vec();
        buf.extend_from_slice(p);
        buf.extend_from_slice(b"2026-12-07T10:00:01Z std");
        assert_eq!(complete(&buf), a.len(), "a partial line waits for its end");
        buf.extend_from_slice(b"out F f\n");
        assert_eq!(complete(&buf), buf.len());
    }

    #[test]
    fn previous_is_the_attempt_before() {
        let d = Path::new("/data/pods/u1");
        assert_eq!(path(d, "main", 2, false), Some(d.join("logs/main_2.log")));
        assert_eq!(path(d, "main", 2, true), Some(d.join("logs/main_1.log")));
        assert_eq!(
            path(d, "main", 0, true),
            None,
            "no attempt before the first"
        );
    }
}
