//! Joining the cloud with a token, as KubeEdge's edge does: download the CA, check it against the
//! token's hash, send a CSR for `CN=system:node:<node>`, keep the signed certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kedge_pki::node::{Identity, node_csr, unverified_client_config};
use kedge_pki::token::{JoinToken, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("join token: {0}")]
    Token(#[from] TokenError),
    #[error("cannot reach the cloud's join server at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("the cloud refused to join node {node:?} ({status}): {reason}")]
    Refused {
        node: String,
        status: u16,
        reason: String,
    },
    #[error("{0}")]
    Pki(#[from] kedge_pki::PkiError),
}

/// Where and as whom to join.
pub struct Join<'a> {
    /// `https://<cloud>:<https-port>`.
    pub server: &'a str,
    pub node: &'a str,
    pub token: &'a str,
    /// Where the identity is kept (`<edge-data-dir>/pki`).
    pub dir: &'a Path,
}

const TIMEOUT: Duration = Duration::from_secs(15);

fn client(tls: rustls::ClientConfig) -> Result<reqwest::Client, JoinError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| JoinError::Unreachable {
            url: String::new(),
            cause: e.to_string(),
        })
}

fn unreachable(url: &str) -> impl FnOnce(reqwest::Error) -> JoinError + '_ {
    move |e| JoinError::Unreachable {
        url: url.to_string(),
        cause: error_chain(&e),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The identity kept in `dir`, or a new one obtained with the token.
pub async fn load_or_join(j: &Join<'_>) -> Result<Identity, JoinError> {
    if let Some(id) = Identity::load(j.dir)?
        && id.node().as_deref() == Some(j.node)
    {
        return Ok(id);
    }
    join(j).await
}

/// Joins with the token and stores the identity in `dir`.
pub async fn join(j: &Join<'_>) -> Result<Identity, JoinError> {
    let token = JoinToken::parse(j.token)?;
    let ca_url = format!("{}/ca.crt", j.server);
    let ca_der = client(unverified_client_config())?
        .get(&ca_url)
        .send()
        .await
        .map_err(unreachable(&ca_url))?
        .bytes()
        .await
        .map_err(unreachable(&ca_url))?
        .to_vec();
    token.check_ca(&ca_der)?;
    let (key_pem, csr) = node_csr(j.node)?;
    let cert_url = format!("{}/edge.crt", j.server);
    let resp = client(kedge_pki::node::client_config(&ca_der, None)?)?
        .get(&cert_url)
        .header("NodeName", j.node)
        .header("Authorization", format!("Bearer {}", token.jwt))
        .body(csr)
        .send()
        .await
        .map_err(unreachable(&cert_url))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(unreachable(&cert_url))?.to_vec();
    if status != 200 {
        let reason = String::from_utf8_lossy(&body).trim().to_string();
        return Err(JoinError::Refused {
            node: j.node.to_string(),
            status,
            reason,
        });
    }
    let id = Identity::new(ca_der, body, key_pem);
    id.save(j.dir)?;
    tracing::info!(node = j.node, dir = %j.dir.display(), "joined the cloud");
    Ok(id)
}

/// `<data-dir>/pki`.
pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}
