//! Joining the cloud with a token, as KubeEdge's edge does: download the CA, check it against the
//! token's hash, send a CSR for `CN=system:node:<node>`, keep the signed certificate. Renewal
//! sends a CSR for a fresh key authenticated by the current certificate (no token needed), at a
//! random point between 70 % and 90 % of the certificate's lifetime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kedge_pki::node::{Identity, cert_validity, node_csr, unverified_client_config};
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
    #[error(transparent)]
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

/// [`Join`] with owned values, for the renewal loop that outlives the caller, and every cloud
/// replica's join server (`https://<host>:<https-port>`, in the order to try them).
#[derive(Debug, Clone)]
pub struct JoinWith {
    pub servers: Vec<String>,
    pub node: String,
    pub token: String,
    pub dir: PathBuf,
}

impl JoinWith {
    /// The join at each server, in order.
    pub fn each(&self) -> impl Iterator<Item = Join<'_>> {
        self.servers.iter().map(|server| Join {
            server,
            node: &self.node,
            token: &self.token,
            dir: &self.dir,
        })
    }

    /// `act` at the first server that can be reached: an answer (a refusal included) ends the
    /// search, an unreachable server moves to the next.
    pub async fn first_reachable<'a, T, F, Fut>(&'a self, act: F) -> Result<T, JoinError>
    where
        F: Fn(Join<'a>) -> Fut,
        Fut: std::future::Future<Output = Result<T, JoinError>>,
    {
        let mut last = JoinError::Unreachable {
            url: String::new(),
            cause: "no join server given".into(),
        };
        for j in self.each() {
            match act(j).await {
                Err(e @ JoinError::Unreachable { .. }) => {
                    tracing::warn!(error = %e, "trying the next cloud replica");
                    last = e;
                }
                other => return other,
            }
        }
        Err(last)
    }
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
    let tls = kedge_pki::node::client_config(&ca_der, None)?;
    let id = request_certificate(j, tls, Some(token.jwt), ca_der).await?;
    tracing::info!(node = j.node, dir = %j.dir.display(), "joined the cloud");
    Ok(id)
}

/// Renews `current` before it expires: with the certificate itself while it is valid, with
/// the join token once it has expired (the edge was off too long). Stores the new identity.
pub async fn renew(j: &Join<'_>, current: &Identity) -> Result<Identity, JoinError> {
    let now = jiff::Timestamp::now().as_second();
    let valid = cert_validity(&current.cert_der).is_some_and(|(_, after)| after > now);
    if !valid {
        tracing::warn!(
            node = j.node,
            "the node certificate has expired; renewing with the join token"
        );
        return join(j).await;
    }
    let tls = current.client_config()?;
    let id = request_certificate(j, tls, None, current.ca_der.clone()).await?;
    tracing::info!(node = j.node, "renewed the node certificate");
    Ok(id)
}

/// How long to wait before renewing a certificate valid over `[not_before, not_after]`, at
/// `now` (seconds since the epoch): until `fraction` (0.7–0.9, random) of its lifetime.
pub fn renewal_delay(validity: (i64, i64), now: i64, fraction: f64) -> Duration {
    let (before, after) = validity;
    let lifetime = (after - before).max(0) as f64;
    let at = before as f64 + lifetime * fraction.clamp(0.0, 1.0);
    Duration::from_secs_f64((at - now as f64).max(0.0))
}

/// Sends a CSR for a new key over `tls`, with the join token if given; stores the result.
async fn request_certificate(
    j: &Join<'_>,
    tls: rustls::ClientConfig,
    jwt: Option<&str>,
    ca_der: Vec<u8>,
) -> Result<Identity, JoinError> {
    let (key_pem, csr) = node_csr(j.node)?;
    let cert_url = format!("{}/edge.crt", j.server);
    let mut req = client(tls)?.get(&cert_url).header("NodeName", j.node);
    if let Some(jwt) = jwt {
        req = req.header("Authorization", format!("Bearer {jwt}"));
    }
    let resp = req.body(csr).send().await.map_err(unreachable(&cert_url))?;
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
    Ok(id)
}

/// Renews the node certificate at 70–90 % of its lifetime, for as long as the edge runs, and
/// has EdgeHub reconnect with the new one; a failed renewal is retried with back-off
/// (10 s → 10 min).
pub async fn keep(j: JoinWith, hub: super::client::EdgeHub, mut id: Identity) {
    let mut retry = Duration::from_secs(10);
    loop {
        let validity = cert_validity(&id.cert_der).unwrap_or((0, 0));
        let fraction = 0.7 + 0.2 * rand::random::<f64>();
        // Certificate lifetimes are wall-clock times: the wait is computed afresh each turn.
        let now = jiff::Timestamp::now().as_second();
        tokio::time::sleep(renewal_delay(validity, now, fraction)).await;
        let id_now = &id;
        match j
            .first_reachable(|one| async move { renew(&one, id_now).await })
            .await
        {
            Ok(new) => {
                if let Err(e) = hub.use_identity(&new) {
                    tracing::error!(error = %e, "the renewed certificate cannot be used");
                }
                id = new;
                retry = Duration::from_secs(10);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "certificate renewal failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(600));
            }
        }
    }
}

/// `<data-dir>/pki`.
pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_at_the_chosen_fraction_of_the_lifetime() {
        // Valid for 1,000 s from t=10,000.
        let v = (10_000, 11_000);
        assert_eq!(renewal_delay(v, 10_000, 0.8), Duration::from_secs(800));
        assert_eq!(renewal_delay(v, 10_500, 0.7), Duration::from_secs(200));
        assert_eq!(
            renewal_delay(v, 10_950, 0.9),
            Duration::ZERO,
            "overdue: now"
        );
        assert_eq!(
            renewal_delay(v, 20_000, 0.8),
            Duration::ZERO,
            "expired: now"
        );
        assert_eq!(
            renewal_delay((5, 1), 0, 0.8),
            Duration::from_secs(5),
            "inverted validity"
        );
    }
}
