//! Edged's side of `kubectl logs/exec/attach/port-forward`: streams the cloud opens over the
//! hub session (and only there) are served from the container runtime — log files in the CRI
//! format, and Exec/Attach/PortForward through the runtime's streaming server (SPDY on
//! loopback), whose channels map one to one onto the stream's `v5.channel.k8s.io` messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use kedge_proto::cri;
use kedge_stream::request::{Io, PodRef, channel, exit_status};
use kedge_stream::spdy::{SpdyStream, conn::dial};
use kedge_stream::{Incoming, Reader, StreamRequest, Writer};
use tokio::sync::mpsc;

use super::cri::{Cri, CriError};
use super::logs::{self, Options};
use super::spec;

/// How often a followed log file is looked at for new lines where inotify is not available;
/// with it, at each write, and at least this often.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
const FOLLOW_CHECK: Duration = Duration::from_secs(1);

/// Wakes when a file is written (inotify): a followed log line goes out as soon as it is in
/// the file, and an idle follower costs nothing.
struct Changes(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl Changes {
    fn watch(path: &std::path::Path) -> Option<Changes> {
        use rustix::fs::inotify;
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()?;
        let on = inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::MOVE_SELF
            | inotify::WatchFlags::DELETE_SELF;
        inotify::add_watch(&fd, path, on).ok()?;
        // `register` (unsafe) asks that the descriptor stay open and the same while registered:
        // an `OwnedFd` moved into the `AsyncFd` does, so the safe, deprecated constructor is
        // sound here (the crate forbids unsafe code).
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(fd).ok()?;
        Some(Changes(fd))
    }

    /// Waits for the next write (or `FOLLOW_CHECK`, whichever comes first).
    async fn next(&self) {
        let ready = tokio::time::timeout(FOLLOW_CHECK, self.0.readable()).await;
        if let Ok(Ok(mut guard)) = ready {
            let mut buf = [0u8; 4096];
            // The events themselves do not matter: the file is read either way.
            while matches!(rustix::io::read(guard.get_inner(), &mut buf), Ok(n) if n > 0) {}
            guard.clear_ready();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("bad stream request: {0}")]
    Request(#[from] serde_json::Error),
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("container {container:?} of pod {pod} is not on this node")]
    NoContainer { pod: String, container: String },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { pod: String, container: String },
    #[error("pod {0} has no sandbox on this node")]
    NoSandbox(String),
    #[error(transparent)]
    Log(#[from] logs::LogError),
    #[error("reading {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the container runtime's streaming server: {0}")]
    Spdy(#[from] kedge_stream::spdy::SpdyError),
    #[error(transparent)]
    Stream(#[from] kedge_stream::StreamError),
    #[error("this node runs no pods (--cri-endpoint none)")]
    NoRuntime,
}

/// Serves streams from the runtime at `cri` (none: each is refused with the reason).
pub async fn serve(mut incoming: mpsc::Receiver<Incoming>, cri: Option<Cri>, data_dir: PathBuf) {
    while let Some(inc) = incoming.recv().await {
        let (cri, dir) = (cri.clone(), data_dir.clone());
        tokio::spawn(async move {
            let writer = inc.stream.writer.clone();
            let result = match cri {
                Some(cri) => handle(&cri, &dir, inc).await,
                None => Err(ServeError::NoRuntime),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "stream failed");
                writer.reset(&e.to_string());
            }
        });
    }
}

async fn handle(cri: &Cri, dir: &std::path::Path, inc: Incoming) -> Result<(), ServeError> {
    let req = StreamRequest::decode(&inc.request)?;
    let (reader, writer) = (inc.stream.reader, inc.stream.writer);
    match req {
        StreamRequest::Logs {
            pod,
            container,
            query,
        } => {
            let now = jiff::Timestamp::now();
            let pairs = query.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let o = Options::from_query(pairs, now)?;
            let found = find_container(cri, &pod, &container).await?;
            send_logs(cri, dir, &pod, &container, found, &o, &writer).await
        }
        StreamRequest::Exec {
            pod,
            container,
            command,
            io,
        } => {
            let c = find_container(cri, &pod, &container).await?;
            let url = cri.exec_url(&c.id, command, io).await?;
            remote_command(&url, io, reader, writer).await
        }
        StreamRequest::Attach { pod, container, io } => {
            let c = find_container(cri, &pod, &container).await?;
            let url = cri.attach_url(&c.id, io).await?;
            remote_command(&url, io, reader, writer).await
        }
        StreamRequest::PortForward { pod, port } => {
            let sandbox = find_sandbox(cri, &pod).await?;
            let url = cri.port_forward_url(&sandbox, port).await?;
            port_forward(&url, port, reader, writer).await
        }
        StreamRequest::Stats => {
            let stats = super::stats::collect(cri).await?;
            writer.send(&serde_json::to_vec(&stats)?).await?;
            writer.close();
            Ok(())
        }
    }
}

fn pod_labels(pod: &PodRef) -> HashMap<String, String> {
    HashMap::from([(spec::LABEL_POD_UID.to_string(), pod.uid.clone())])
}

/// The newest container named `name` of `pod`.
async fn find_container(cri: &Cri, pod: &PodRef, name: &str) -> Result<cri::Container, ServeError> {
    let mut labels = pod_labels(pod);
    labels.insert(spec::LABEL_CONTAINER.into(), name.into());
    let mut found = cri.containers(labels).await?;
    found.sort_by_key(|c| std::cmp::Reverse(c.metadata.as_ref().map_or(0, |m| m.attempt)));
    found
        .into_iter()
        .next()
        .ok_or_else(|| ServeError::NoContainer {
            pod: format!("{}/{}", pod.namespace, pod.name),
            container: name.into(),
        })
}

async fn find_sandbox(cri: &Cri, pod: &PodRef) -> Result<String, ServeError> {
    let mut found = cri.sandboxes(pod_labels(pod)).await?;
    found.retain(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
    found
        .into_iter()
        .next()
        .map(|s| s.id)
        .ok_or_else(|| ServeError::NoSandbox(format!("{}/{}", pod.namespace, pod.name)))
}

/// Sends the container's log as `o` asks, following it while the container runs.
async fn send_logs(
    cri: &Cri,
    dir: &std::path::Path,
    pod: &PodRef,
    container: &str,
    c: cri::Container,
    o: &Options,
    writer: &Writer,
) -> Result<(), ServeError> {
    let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
    let pod_dir = spec::pod_dir(dir, &pod.uid);
    let path = logs::path(&pod_dir, container, attempt, o.previous)
        .filter(|p| !o.previous || p.exists())
        .ok_or_else(|| ServeError::NoPrevious {
            pod: pod.name.clone(),
            container: container.into(),
        })?;
    let content = read_log(&path).await?;
    // Whole lines only: a line still being written is sent when it ends (by `follow`).
    let whole = logs::complete(&content);
    let first = logs::render(&content[..whole], o);
    writer.send(&first).await?;
    let sent = first.len();
    if !o.follow || o.previous || o.limit_bytes.is_some_and(|l| sent >= l) {
        writer.close();
        return Ok(());
    }
    // The rotated files come first in `content`: the unsent rest is the current file's end.
    let current = tokio::fs::metadata(&path)
        .await
        .map_or(0, |m| m.len() as usize);
    let offset = current.saturating_sub(content.len() - whole);
    follow(cri, &c.id, &path, offset, sent, o, writer).await
}

/// Reads a log file with the rotated files before it (`<file>.<suffix>`, oldest first).
async fn read_log(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    let read = |p: PathBuf| async move {
        tokio::fs::read(&p)
            .await
            .map_err(|cause| ServeError::Read { path: p, cause })
    };
    let mut rotated = Vec::new();
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let prefix = format!("{}.", name.to_string_lossy());
        if let Ok(mut entries) = tokio::fs::read_dir(parent).await {
            while let Ok(Some(e)) = entries.next_entry().await {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && !n.ends_with(".gz") && !n.ends_with(".tmp") {
                    rotated.push(e.path());
                }
            }
        }
    }
    rotated.sort();
    let mut out = Vec::new();
    for p in rotated {
        out.extend(read(p).await?);
    }
    match read(path.to_path_buf()).await {
        Ok(b) => out.extend(b),
        // A container that never wrote has no file yet.
        Err(ServeError::Read { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Sends lines appended to `path` after `offset` until the container stops running or the
/// reader goes away. Only the new bytes are read; a file that shrank was rotated (read anew).
async fn follow(
    cri: &Cri,
    id: &str,
    path: &std::path::Path,
    offset: usize,
    mut sent: usize,
    o: &Options,
    writer: &Writer,
) -> Result<(), ServeError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let each = Options {
        timestamps: o.timestamps,
        ..Options::default()
    };
    let read_err = |cause| ServeError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
    file.seek(std::io::SeekFrom::Start(offset as u64))
        .await
        .map_err(read_err)?;
    let mut at = offset as u64;
    let mut pending = Vec::new();
    let changes = Changes::watch(path);
    let mut checked = tokio::time::Instant::now();
    loop {
        let n = file.read_to_end(&mut pending).await.map_err(read_err)?;
        at += n as u64;
        let whole = logs::complete(&pending);
        if whole > 0 {
            let mut out = logs::render(&pending[..whole], &each);
            pending.drain(..whole);
            if let Some(limit) = o.limit_bytes {
                out.truncate(limit.saturating_sub(sent));
            }
            writer.send(&out).await?;
            sent += out.len();
            if o.limit_bytes.is_some_and(|l| sent >= l) {
                break;
            }
        } else if n == 0 && checked.elapsed() > Duration::from_secs(1) {
            checked = tokio::time::Instant::now();
            let state = cri.container_status(id).await.map(|s| s.state);
            if state.is_err()
                || state.is_ok_and(|s| s != cri::ContainerState::ContainerRunning as i32)
            {
                break;
            }
            let len = tokio::fs::metadata(path).await.map_or(at, |m| m.len());
            if len < at {
                file = tokio::fs::File::open(path).await.map_err(read_err)?;
                (at, pending) = (0, Vec::new());
            }
        }
        if n == 0 {
            match &changes {
                Some(c) => c.next().await,
                None => tokio::time::sleep(FOLLOW_POLL).await,
            }
        }
    }
    writer.close();
    Ok(())
}

/// Exec or attach: the runtime's streaming server (SPDY, `v4.channel.k8s.io`) on one side,
/// the stream's channel messages on the other. Ends with the command's status on channel 3.
async fn remote_command(
    url: &str,
    io: Io,
    mut reader: Reader,
    writer: Writer,
) -> Result<(), ServeError> {
    let (conn, _incoming, _) = dial(url, &["v4.channel.k8s.io"]).await?;
    let open = |t: &str| conn.open(vec![("streamtype".into(), t.into())]);
    let mut error = open("error");
    let stdin = io.stdin.then(|| open("stdin"));
    let stdout = io.stdout.then(|| open("stdout"));
    let stderr = (io.stderr && !io.tty).then(|| open("stderr"));
    let resize = io.tty.then(|| open("resize"));
    // kubectl → container: stdin, its end, terminal sizes.
    let stdin_w = stdin.as_ref().map(|s| s.writer.clone());
    let resize_w = resize.as_ref().map(|s| s.writer.clone());
    let (gone_tx, gone) = tokio::sync::oneshot::channel::<String>();
    let input = tokio::spawn(async move {
        loop {
            let m = match reader.recv().await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    let _ = gone_tx.send(e.to_string());
                    return;
                }
            };
            let Some((&ch, payload)) = m.split_first() else {
                continue;
            };
            let target = match ch {
                channel::STDIN => stdin_w.as_ref(),
                channel::RESIZE => resize_w.as_ref(),
                channel::CLOSE if payload.first() == Some(&channel::STDIN) => {
                    if let Some(w) = &stdin_w {
                        w.close();
                    }
                    continue;
                }
                _ => None,
            };
            if let Some(w) = target
                && w.send(payload).is_err()
            {
                break;
            }
        }
    });
    // container → kubectl: stdout and stderr, then the status.
    let out = pump(stdout, channel::STDOUT, writer.clone());
    let err = pump(stderr, channel::STDERR, writer.clone());
    let mut status = Vec::new();
    let done = async {
        let (out, err) = tokio::join!(out, err);
        while let Ok(Some(d)) = error.recv().await {
            status.extend(d);
        }
        out.and(err)
    };
    // kubectl gone: the session to the runtime ends with it (its stdin closes).
    let ended = tokio::select! {
        r = done => r,
        Ok(why) = gone => Err(ServeError::Stream(kedge_stream::StreamError::Reset(why))),
    };
    input.abort();
    drop(conn);
    ended?;
    if status.is_empty() {
        status = exit_status(
            None,
            Some("the container runtime ended the session without a status"),
        );
    }
    writer
        .send_message(&channel::message(channel::ERROR, &status))
        .await?;
    writer.close();
    Ok(())
}

/// Copies one SPDY stream onto `writer` as `ch` messages until it ends.
async fn pump(s: Option<SpdyStream>, ch: u8, writer: Writer) -> Result<(), ServeError> {
    let Some(mut s) = s else { return Ok(()) };
    while let Ok(Some(d)) = s.recv().await {
        for m in channel::messages(ch, &d) {
            writer.send_message(&m).await?;
        }
    }
    Ok(())
}

/// One port-forward connection: bytes both ways between the stream and the pod's `port`.
async fn port_forward(
    url: &str,
    port: u16,
    mut reader: Reader,
    writer: Writer,
) -> Result<(), ServeError> {
    let (conn, _incoming, _) = dial(url, &["portforward.k8s.io"]).await?;
    let headers = |t: &str| {
        vec![
            ("streamtype".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), "0".to_string()),
        ]
    };
    let mut error = conn.open(headers("error"));
    let mut data = conn.open(headers("data"));
    let data_w = data.writer.clone();
    let (gone_tx, gone) = tokio::sync::oneshot::channel::<()>();
    let input = tokio::spawn(async move {
        loop {
            match reader.recv().await {
                Ok(Some(d)) => {
                    if data_w.send(&d).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    data_w.close();
                    break;
                }
                Err(_) => {
                    let _ = gone_tx.send(());
                    break;
                }
            }
        }
    });
    let copied = async {
        while let Ok(Some(d)) = data.recv().await {
            writer.send(&d).await?;
        }
        Ok::<_, ServeError>(())
    };
    let mut failure = Vec::new();
    let failed = async {
        while let Ok(Some(d)) = error.recv().await {
            failure.extend(d);
        }
    };
    let both = async { tokio::join!(copied, failed).0 };
    let copied = tokio::select! {
        r = both => r,
        Ok(()) = gone => Ok(()),
    };
    input.abort();
    drop(conn);
    copied?;
    if failure.is_empty() {
        writer.close();
    } else {
        writer.reset(&String::from_utf8_lossy(&failure));
    }
    Ok(())
}
