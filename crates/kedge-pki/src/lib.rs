//! The cloud's certificate authority.
//!
//! One CA per cloud, created on first start under `<data-dir>/pki/` and never regenerated over an
//! existing one (KubeEdge #5922: a CA race locked out a whole fleet). Creation is atomic: the key
//! and certificate are written to a private temporary directory that is then renamed into place, so
//! a concurrent or interrupted start either sees a complete CA or none.
//!
//! Every TLS listener (API server, CloudHub, join server) gets a serving certificate issued by this
//! CA at start-up; clients trust `ca.crt`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub mod material;
pub mod node;
pub mod token;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// The HMAC key of join tokens; `kedge token --rotate` replaces it. A CA made before it existed
/// signs tokens with its own key until the first rotation.
const TOKEN_KEY: &str = "token.key";
/// Validity of the CA, in days.
const CA_DAYS: u32 = 3650;
/// Validity of serving certificates, in days; they are re-issued at every start.
const SERVING_DAYS: u32 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: not a valid PEM certificate or key")]
    BadPem { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Csr(String),
    #[error("this CA's token key is not kept in a directory: rotate it where it is kept")]
    NoKeyDir,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |cause| PkiError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A certificate chain and its private key, ready for rustls.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The cloud CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    token_key: TokenKey,
    /// The CA key's DER: the token key of a CA that has no `token.key`.
    ca_key_der: Vec<u8>,
}

/// Where a CA's join-token key comes from.
#[derive(Clone)]
pub enum TokenKey {
    /// `<data-dir>/pki/token.key`, read at each use: a rotation (`kedge token --rotate`, or a
    /// replica installing a rotated key) takes effect in a running cloud at once.
    Dir(PathBuf),
    /// Given once (`None`: the CA's own key).
    Fixed(Option<Vec<u8>>),
}

impl std::fmt::Debug for Ca {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Ca {
    /// Loads the CA from `<data_dir>/pki`, creating it first if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Ca, PkiError> {
        let dir = data_dir.join("pki");
        if !dir.join(CA_CERT).exists() {
            create_atomically(data_dir, &dir)?;
        }
        Self::load(&dir)
    }

    /// Loads the CA from `<data_dir>/pki`; an error if there is none yet.
    pub fn load_existing(data_dir: &Path) -> Result<Ca, PkiError> {
        Self::load(&data_dir.join("pki"))
    }

    fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        Self::from_pem(cert_pem, &key_pem, TokenKey::Dir(dir.to_path_buf())).map_err(|e| match e {
            PkiError::BadPem { path } if path.as_os_str() == CA_KEY => {
                PkiError::BadPem { path: key_path }
            }
            PkiError::BadPem { .. } => PkiError::BadPem { path: cert_path },
            other => other,
        })
    }

    /// A CA from its certificate and key (PEM); a bad one names the file it would be in.
    pub fn from_pem(cert_pem: String, key_pem: &str, token_key: TokenKey) -> Result<Ca, PkiError> {
        let bad = |name: &str| PkiError::BadPem { path: name.into() };
        let key = KeyPair::from_pem(key_pem).map_err(|_| bad(CA_KEY))?;
        let cert_der = pem_cert_der(&cert_pem).ok_or_else(|| bad(CA_CERT))?;
        let ca_key_der = key.serialize_der();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|_| bad(CA_CERT))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
            token_key,
            ca_key_der,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256(CA DER)` in hex: the first half of a join token.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.cert_der.as_ref()))
    }

    /// Issues a serving certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, common_name: &str, names: &[String]) -> Result<Issued, PkiError> {
        let mut params = leaf_params(common_name)?;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// Issues a client certificate named `common_name` (the cloud's own clients: replicas
    /// calling each other).
    pub fn issue_client(&self, common_name: &str) -> Result<Issued, PkiError> {
        let mut params = leaf_params(common_name)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A TLS client config that trusts only this CA and presents a fresh client certificate
    /// named `common_name`.
    pub fn client_config_as(&self, common_name: &str) -> Result<rustls::ClientConfig, PkiError> {
        let issued = self.issue_client(common_name)?;
        node::client_config(self.cert_der(), Some((issued.chain, issued.key)))
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A rustls server config (TLS 1.2+, ALPN h2 and http/1.1) with a fresh serving certificate.
    pub fn server_config(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let issued = self.issue_server(common_name, names)?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(issued.chain, issued.key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// PEM text of one DER block (`CERTIFICATE`, `PRIVATE KEY`, …).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub(crate) fn pem_cert_der(pem: &str) -> Option<CertificateDer<'static>> {
    let mut reader = pem.as_bytes();
    rustls_pemfile::certs(&mut reader).next()?.ok()
}

fn san(name: &str) -> Result<SanType, PkiError> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

pub(crate) fn validity(ttl: std::time::Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date a little so a peer with a slightly slow clock accepts a fresh certificate; by at
    // most a tenth of the lifetime, so renewing at a fraction of it stays meaningful.
    let back = (ttl / 10).min(std::time::Duration::from_secs(3600));
    (now - back, now + ttl)
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn leaf_params(common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    (params.not_before, params.not_after) = validity(SERVING_DAYS * DAY);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kedge-ca");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kedge");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(CA_DAYS * DAY);
    Ok(params)
}

/// Writes a new CA into a private temporary directory, then renames it to `dir`. If another
/// process got there first the rename fails and its CA is kept.
fn create_atomically(data_dir: &Path, dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let tmp = data_dir.join(format!(
        ".pki-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write_private(&tmp.join(CA_KEY), key.serialize_pem().as_bytes())?;
    write_private(&tmp.join(CA_CERT), cert.pem().as_bytes())?;
    write_private(&tmp.join(TOKEN_KEY), &rand::random::<[u8; 32]>())?;
    match fs::rename(&tmp, dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "created the cloud CA");
            Ok(())
        }
        Err(_) if dir.join(CA_CERT).exists() => {
            // Lost a race with another start: keep the CA that is there.
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err(dir)(e))
        }
    }
}

/// Takes an exclusive lock on the file at `path` (created if missing), held until the returned
/// file is dropped or the process ends, however it ends; `None` when another process holds it.
/// One process per data directory: two would write one store.
pub fn lock_exclusive(path: &Path) -> Result<Option<fs::File>, PkiError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// Writes a file readable only by its owner, and syncs it.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reloaded_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Ca::load_or_create(dir.path()).expect("create");
        let again = Ca::load_or_create(dir.path()).expect("load");
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
    }

    /// KubeEdge #5922: two cloud processes starting at once each made a CA, and the loser's
    /// tokens and certificates locked the fleet out. Here every racer ends with the same CA.
    #[test]
    fn racing_starts_agree_on_one_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prints: Vec<String> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Ca::load_or_create(dir.path()).map(|c| c.fingerprint())))
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("thread").expect("CA"))
                .collect()
        });
        assert!(prints.iter().all(|p| *p == prints[0]), "{prints:?}");
        assert_eq!(
            Ca::load_existing(dir.path()).expect("load").fingerprint(),
            prints[0]
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".pki-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary CA directories left: {leftovers:?}"
        );
    }

    #[test]
    fn issues_a_server_config_for_ip_and_dns_names() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cfg = ca.server_config("kedge-apiserver", &names).expect("config");
        assert_eq!(cfg.alpn_protocols.len(), 2);
    }

    #[test]
    fn a_corrupt_ca_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        Ca::load_or_create(dir.path()).expect("create");
        fs::write(dir.path().join("pki").join(CA_KEY), "garbage").expect("write");
        let err = Ca::load_or_create(dir.path()).expect_err("must fail");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }
}
