//! The connections a DMI gRPC server (the edge's, or a mapper's) accepts on its unix socket,
//! read through `authority::AuthorityFix` so Go clients are served (see there).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

use super::authority::AuthorityFix;

/// How much is read from the socket at a time.
const CHUNK: usize = 16 * 1024;

/// Every connection `listener` accepts, for `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<Fixed>> + Send {
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| s.map(Fixed::new))
}

/// A client connection whose HTTP/2 header blocks pass through `AuthorityFix`.
pub struct Fixed {
    inner: UnixStream,
    fix: AuthorityFix,
    /// Read from the socket, not yet rewritten.
    scratch: Box<[u8]>,
    /// Rewritten, not yet handed to the server.
    ready: Vec<u8>,
    at: usize,
}

impl Fixed {
    pub fn new(inner: UnixStream) -> Self {
        Self {
            inner,
            fix: AuthorityFix::default(),
            scratch: vec![0; CHUNK].into_boxed_slice(),
            ready: Vec::new(),
            at: 0,
        }
    }
}

impl AsyncRead for Fixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A partial frame yields nothing to hand on: read again rather than report 0 bytes,
        // which would mean the end of the stream.
        while this.at == this.ready.len() {
            let mut raw = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.ready.clear();
            this.at = 0;
            let before = this.fix.replaced;
            this.fix.feed(raw.filled(), &mut this.ready);
            if before == 0 && this.fix.replaced > 0 {
                tracing::debug!("DMI: a client's :authority replaced by localhost (a Go client)");
            }
        }
        let n = buf.remaining().min(this.ready.len() - this.at);
        buf.put_slice(&this.ready[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Fixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Fixed {
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
