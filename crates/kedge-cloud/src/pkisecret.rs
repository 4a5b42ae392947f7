//! On a real cluster every cloud replica serves one CA and accepts the same join tokens: the
//! CA's material lives in one Secret, created exactly once — when replicas start together the
//! API server's create decides (one succeeds, the others get 409 and adopt what it stored;
//! KubeEdge #5922 had each replica make a CA of its own) — and mirrored into each replica's
//! `<data-dir>/pki`, where everything else reads it. A token key rotated in the Secret
//! (`kedge token --rotate --kubeconfig`) reaches every replica through a watch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kedge_pki::material::Material;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

const CERT: &str = "ca.crt";
const KEY: &str = "ca.key";
const TOKEN: &str = "token.key";

#[derive(Debug, thiserror::Error)]
pub enum PkiSecretError {
    #[error(transparent)]
    Pki(#[from] kedge_pki::PkiError),
    #[error("Kubernetes API: {}", crate::objects::brief(.0))]
    Kube(#[from] kube::Error),
    #[error("Secret {0} has no {1}")]
    Missing(String, &'static str),
    #[error("{0:?} is not NAMESPACE/NAME")]
    BadRef(String),
    #[error("Secret {0} kept changing while this replica tried to create it")]
    Racing(String),
}

/// Where the Secret is: `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for SecretRef {
    type Err = PkiSecretError;
    fn from_str(s: &str) -> Result<SecretRef, PkiSecretError> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(SecretRef {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(PkiSecretError::BadRef(s.into())),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Secret holding `m`.
pub fn to_secret(at: &SecretRef, m: &Material) -> Secret {
    let mut data = BTreeMap::from([
        (CERT.to_string(), ByteString(m.cert_pem.clone())),
        (KEY.to_string(), ByteString(m.key_pem.clone())),
    ]);
    if let Some(k) = &m.token_key {
        data.insert(TOKEN.into(), ByteString(k.clone()));
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(at.name.clone()),
            namespace: Some(at.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                "kedge-cloud".into(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The material a Secret holds (checked: it loads as a CA).
pub fn from_secret(s: &Secret) -> Result<Material, PkiSecretError> {
    let data = s.data.clone().unwrap_or_default();
    let name = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
    let get = |k: &'static str| {
        data.get(k)
            .map(|b| b.0.clone())
            .ok_or_else(|| PkiSecretError::Missing(name.clone(), k))
    };
    let m = Material {
        cert_pem: get(CERT)?,
        key_pem: get(KEY)?,
        token_key: data.get(TOKEN).map(|b| b.0.clone()),
    };
    m.ca()?;
    Ok(m)
}

/// Makes `<data_dir>/pki` hold the cluster's CA: the Secret's when it exists, else this data
/// directory's (created if it has none) stored as the Secret — unless another replica stored
/// one first, which is then adopted.
pub async fn adopt(
    client: &kube::Client,
    at: &SecretRef,
    data_dir: &Path,
) -> Result<Material, PkiSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    // This directory's CA from before (not one made below and lost in a race).
    let had = Material::load_existing(data_dir).ok();
    for _ in 0..5 {
        if let Some(s) = api.get_opt(&at.name).await? {
            let m = from_secret(&s)?;
            if m.install(data_dir)? {
                match had {
                    Some(h) if h.cert_pem != m.cert_pem => tracing::warn!(
                        secret = %at,
                        "replaced this data directory's CA with the cluster's: edges that joined \
                         with the old one must join again"
                    ),
                    _ => tracing::info!(secret = %at, "installed the cluster's CA from its Secret"),
                }
            }
            return Ok(m);
        }
        let local = Material::load_or_create(data_dir)?;
        match api
            .create(&PostParams::default(), &to_secret(at, &local))
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %at, "stored this cloud's CA as the cluster's");
                return Ok(local);
            }
            // Another replica's create came first: adopt it on the next turn.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // The namespace is missing.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                crate::objects::create_namespace(client, &at.namespace).await?
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(PkiSecretError::Racing(at.to_string()))
}

/// Follows the Secret, installing what changes (a rotated token key) into `data_dir`, for ever.
/// A changed CA is installed too, but this replica serves the one it started with until it is
/// restarted (said once per change).
pub fn follow(client: kube::Client, at: SecretRef, data_dir: PathBuf, serving: Material) {
    tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client, &at.namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", at.name));
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(ev) = stream.next().await {
            let s = match ev {
                Ok(s) => s,
                Err(e) => {
                    crate::objects::log_watch_error(&e, "watching the CA's Secret");
                    continue;
                }
            };
            match from_secret(&s).and_then(|m| Ok((m.install(&data_dir)?, m))) {
                Ok((false, _)) => {}
                Ok((true, m)) if m.cert_pem != serving.cert_pem => tracing::warn!(
                    secret = %at,
                    "the cluster's CA changed: restart this replica to serve it"
                ),
                Ok((true, _)) => {
                    tracing::info!(secret = %at, "join token key rotated: earlier tokens are no longer accepted")
                }
                Err(e) => {
                    tracing::warn!(secret = %at, error = %e, "the CA's Secret is not usable; kept the CA installed")
                }
            }
        }
    });
}

/// Replaces the token key in the Secret (every replica installs it): tokens issued before stop
/// working.
pub async fn rotate(client: &kube::Client, at: &SecretRef) -> Result<(), PkiSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    let key = ByteString(rand::random::<[u8; 32]>().to_vec());
    let p = serde_json::json!({"data": {TOKEN: key}});
    api.patch(&at.name, &PatchParams::default(), &Patch::Merge(&p))
        .await?;
    Ok(())
}

/// The cluster's CA as its Secret holds it (for `kedge token --kubeconfig`).
pub async fn read(client: &kube::Client, at: &SecretRef) -> Result<Material, PkiSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &at.namespace);
    from_secret(&api.get(&at.name).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs_and_the_material_round_trip() {
        let at: SecretRef = "kedge/kedge-cloud-pki".parse().expect("ref");
        assert_eq!(at.to_string(), "kedge/kedge-cloud-pki");
        for bad in ["kedge", "/x", "x/", "a/b/c", ""] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let m = Material::load_or_create(dir.path()).expect("ca");
        let s = to_secret(&at, &m);
        assert_eq!(from_secret(&s).expect("back"), m);
        let mut no_key = s.clone();
        no_key.data.as_mut().expect("data").remove(KEY);
        let err = from_secret(&no_key).expect_err("no key");
        assert_eq!(
            err.to_string(),
            "Secret kedge/kedge-cloud-pki has no ca.key"
        );
        let mut bad = s;
        bad.data
            .as_mut()
            .expect("data")
            .insert(CERT.into(), ByteString(b"junk".to_vec()));
        assert!(from_secret(&bad).is_err(), "a CA that does not load");
    }
}
