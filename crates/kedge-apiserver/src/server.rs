//! Starting the API server: data directory, CA, admin token, store, TLS listener, kubeconfig.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kedge_pki::{Ca, PkiError, write_private};

use crate::api::Api;
use crate::dispatch::dispatch;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Extra names for the serving certificate.
    pub extra_names: Vec<String>,
    /// Revisions kept for watch resumption.
    pub watch_history: u64,
    /// How often idle watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Preferred versions set per group, instead of the highest served: `kubectl` uses them
    /// for commands that name no version (the seed's `kubectl patch device`, v1alpha2).
    pub preferred_versions: Vec<(String, String)>,
}

impl Config {
    /// Defaults: loopback, port 6443, 20,000 revisions of history, bookmarks every 10 s.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6443,
            extra_names: Vec::new(),
            watch_history: crate::store::DEFAULT_HISTORY,
            bookmark_interval: Duration::from_secs(10),
            preferred_versions: vec![(
                kedge_core::devices::GROUP.into(),
                kedge_core::devices::V1ALPHA2.into(),
            )],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("API store {path}: {cause}{hint}", hint = damaged_hint(cause))]
    Store { path: PathBuf, cause: StoreError },
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("bootstrapping the API store: {0}")]
    Bootstrap(String),
    #[error("{0} is in use by another kedge process (its API store can have one owner)")]
    Locked(PathBuf),
}

/// What to do about a store file SQLite cannot read.
fn damaged_hint(cause: &StoreError) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match cause {
        StoreError::Db(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, NotADatabase | DatabaseCorrupt) =>
        {
            " — the file is damaged. Stop kedge, restore the file from a backup, or move it (with \
             its -wal and -shm files) aside to start with an empty API: edges register again, \
             every other object must be applied again"
        }
        StoreError::Corrupt(..) => {
            " — restore the file from a backup, or move it aside to start with an empty API"
        }
        _ => "",
    }
}

/// A running API server.
pub struct ApiServer {
    /// Held for the server's lifetime: one process per data directory.
    _lock: std::fs::File,
    pub addr: SocketAddr,
    /// The URL clients use (`https://127.0.0.1:<port>`).
    pub url: String,
    pub kubeconfig: PathBuf,
    pub api: Arc<Api>,
    /// The same router the listener serves, for in-process clients.
    router: axum::Router,
    /// `Bearer <admin token>`, marked sensitive so it is never logged.
    admin_auth: axum::http::HeaderValue,
    listener: kedge_http::Listener,
    /// The garbage collector, stopped with the server.
    _gc: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ApiServer {
    /// A kube-rs client that calls this server in-process: the same handlers, authentication
    /// and semantics as over HTTPS, without TLS, TCP and HTTP framing. The cloud's controllers
    /// use it with the embedded API (every Lease renewal of every node goes through it).
    pub fn client(&self) -> kube::Client {
        use tower::ServiceExt;
        let auth = self.admin_auth.clone();
        let service = self.router.clone().map_request(
            move |mut req: axum::http::Request<kube::client::Body>| {
                req.headers_mut()
                    .insert(axum::http::header::AUTHORIZATION, auth.clone());
                req
            },
        );
        kube::Client::new(service, "default")
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |cause| ServerError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Takes an exclusive lock on `<data_dir>/apiserver.lock`; released when the process exits,
/// however it exits.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, ServerError> {
    kedge_pki::lock_exclusive(&data_dir.join("apiserver.lock"))?
        .ok_or_else(|| ServerError::Locked(data_dir.to_path_buf()))
}

/// Reads the admin token, creating a random one on first start.
fn admin_token(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

fn kubeconfig(url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kedge\n  cluster:\n    server: {url}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: kedge-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: kedge\n  context:\n    cluster: kedge\n    user: kedge-admin\n\
         current-context: kedge\n"
    )
}

pub async fn start(cfg: Config) -> Result<ApiServer, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(io(&cfg.data_dir))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let ca = Ca::load_or_create(&cfg.data_dir)?;
    let token = admin_token(&cfg.data_dir)?;
    let db_path = cfg.data_dir.join("apiserver.db");
    let store = {
        let p = db_path.clone();
        let history = cfg.watch_history;
        tokio::task::spawn_blocking(move || Store::open(&p, history))
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?
            .map_err(|cause| ServerError::Store {
                path: db_path.clone(),
                cause,
            })?
    };
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    // Bind before writing the kubeconfig: it names the real port.
    let listener =
        std::net::TcpListener::bind(addr).map_err(|cause| ServerError::Bind { addr, cause })?;
    let addr = listener
        .local_addr()
        .map_err(|cause| ServerError::Bind { addr, cause })?;
    let host = if cfg.bind.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind.to_string()
    };
    let url = format!(
        "https://{}",
        SocketAddr::new(host.parse().unwrap_or(cfg.bind), addr.port())
    );
    let address = format!("{host}:{}", addr.port());
    let api = Arc::new(Api::new(
        Arc::new(store),
        token.clone(),
        address,
        cfg.bookmark_interval,
    ));
    for (group, version) in &cfg.preferred_versions {
        api.registry.prefer(group, version);
    }
    {
        let api = api.clone();
        tokio::task::spawn_blocking(move || crate::bootstrap::run(&api))
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
        "kubernetes".into(),
    ];
    names.push(host.clone());
    names.extend(cfg.extra_names.iter().cloned());
    names.dedup();
    let tls = ca.server_config("kedge-apiserver", &names)?;
    let kubeconfig_path = cfg.data_dir.join("kubeconfig");
    write_private(
        &kubeconfig_path,
        kubeconfig(&url, ca.cert_pem(), &token).as_bytes(),
    )?;
    let router = axum::Router::new()
        .fallback(dispatch)
        .with_state(api.clone());
    let mut admin_auth = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| ServerError::Bootstrap(format!("admin token: {e}")))?;
    admin_auth.set_sensitive(true);
    let listener = kedge_http::Listener::serve(listener, tls, router.clone()).map_err(|e| {
        ServerError::Bind {
            addr,
            cause: e.cause,
        }
    })?;
    let gc = AbortOnDrop(tokio::spawn(crate::gc::run(api.clone())).abort_handle());
    tracing::info!(%url, kubeconfig = %kubeconfig_path.display(), "API server listening");
    Ok(ApiServer {
        _lock: lock,
        addr,
        url,
        kubeconfig: kubeconfig_path,
        api,
        router,
        admin_auth,
        listener,
        _gc: gc,
    })
}
