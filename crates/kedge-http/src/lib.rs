//! Every kedge HTTPS listener (API server, join server, CloudHub) runs the same accept loop:
//! TLS handshake with a deadline and a bound on handshakes under way (`pending`), HTTP/1.1 and
//! h2 (with upgrades, for WebSockets), back-off on accept errors such as EMFILE, and a shutdown
//! signal.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way on one listener: beyond this the listener accepts no more until one
/// ends (the rest wait in the kernel's queue, as in a reconnect storm).
const MAX_HANDSHAKES: usize = 2048;
/// Handshakes under way from one address (a NATed site's edges share one): beyond this a new
/// connection from it is closed at once, so one flooding address cannot hold all the places.
const MAX_HANDSHAKES_PER_IP: usize = 512;

pub mod pending;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {cause}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// A running listener; dropping it does not stop it, [`Listener::shutdown`] does.
pub struct Listener {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` (port 0 picks one) and serves `router` over TLS.
    pub async fn bind(
        addr: SocketAddr,
        tls: std::sync::Arc<rustls::ServerConfig>,
        router: axum::Router,
    ) -> Result<Listener, BindError> {
        let listener =
            std::net::TcpListener::bind(addr).map_err(|cause| BindError { addr, cause })?;
        Self::serve(listener, tls, router)
    }

    /// Serves on a listener bound earlier (so its port can be published before serving).
    pub fn serve(
        listener: std::net::TcpListener,
        tls: std::sync::Arc<rustls::ServerConfig>,
        router: axum::Router,
    ) -> Result<Listener, BindError> {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let addr = listener.local_addr().map_err(|cause| BindError {
            addr: unknown,
            cause,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|cause| BindError { addr, cause })?;
        let listener =
            TcpListener::from_std(listener).map_err(|cause| BindError { addr, cause })?;
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), router, rx));
        Ok(Listener {
            addr,
            shutdown,
            task,
        })
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    let pending = pending::Pending::new(MAX_HANDSHAKES_PER_IP);
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let mut refused: u64 = 0;
    loop {
        let place_in_all = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    // Usually EMFILE: wait for descriptors to free up instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(place) = pending.enter(peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "too many TLS handshakes under way; connection closed");
            }
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop((place, place_in_all));
            let tls = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // Handlers that need the peer's certificate (CloudHub) read it from here.
            let peer_certs = PeerCerts(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
            );
            let router = router.layer(axum::Extension(peer_certs));
            let svc = TowerToHyperService::new(router);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

pub mod metrics;

/// The client certificate chain (DER) presented on this connection; empty without mTLS.
#[derive(Debug, Clone, Default)]
pub struct PeerCerts(pub Vec<Vec<u8>>);
