//! Node identities: the CA signs an edge's CSR into a client certificate
//! `CN=system:node:<node>` (as KubeEdge), CloudHub requires one (mutual TLS), and reads the node
//! back from the peer's certificate.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

use crate::{Ca, PkiError, pem, write_private};

/// Validity of node certificates (KubeEdge's default, a year); edges renew before expiry.
pub const NODE_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
const NODE_CN_PREFIX: &str = "system:node:";
/// Kubernetes' node group, as KubeEdge puts it in the CSR.
const NODE_ORG: &str = "system:nodes";

/// `system:node:<node>`.
pub fn node_cn(node: &str) -> String {
    format!("{NODE_CN_PREFIX}{node}")
}

/// The common name of a certificate (DER).
pub fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

/// The node a client certificate names, if its CN is `system:node:<node>`.
pub fn cert_node(der: &[u8]) -> Option<String> {
    cert_common_name(der)?
        .strip_prefix(NODE_CN_PREFIX)
        .map(String::from)
}

/// When a certificate (DER) stops being valid, in seconds since the epoch.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    cert_validity(der).map(|(_, after)| after)
}

/// A certificate's (not before, not after), in seconds since the epoch.
pub fn cert_validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn csr_common_name(der: &[u8]) -> Result<String, PkiError> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|_| PkiError::Csr("not a DER certificate signing request".into()))?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    Ok(cn.to_string())
}

/// A new node key (PEM) and its CSR (DER), subject `O=system:nodes, CN=system:node:<node>`.
pub fn node_csr(node: &str) -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, NODE_ORG);
    params
        .distinguished_name
        .push(DnType::CommonName, node_cn(node));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// What an edge holds after joining: the cloud CA, its node certificate and key.
#[derive(Clone)]
pub struct Identity {
    pub ca_der: Vec<u8>,
    pub cert_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.node())
            .finish()
    }
}

/// The private-key block of a PEM file holding a certificate and its key.
fn key_block(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN PRIVATE KEY-----")?;
    let end = text[start..].find("-----END PRIVATE KEY-----")? + start;
    Some(format!("{}-----END PRIVATE KEY-----\n", &text[start..end]))
}

impl Identity {
    pub fn new(ca_der: Vec<u8>, cert_der: Vec<u8>, key_pem: String) -> Identity {
        Identity {
            ca_der,
            cert_der,
            key_pem,
        }
    }

    /// The node the certificate names.
    pub fn node(&self) -> Option<String> {
        cert_node(&self.cert_der)
    }

    /// Writes `ca.crt` and `node.pem` (the certificate and its key, mode 0600) under `dir`,
    /// each atomically. Certificate and key share one file so that a crash during renewal
    /// can never leave a certificate next to another certificate's key.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|cause| PkiError::Io {
            path: dir.into(),
            cause,
        })?;
        for (name, text) in [
            ("ca.crt", pem("CERTIFICATE", &self.ca_der)),
            (
                "node.pem",
                pem("CERTIFICATE", &self.cert_der) + &self.key_pem,
            ),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            write_private(&tmp, text.as_bytes())?;
            let path = dir.join(name);
            std::fs::rename(&tmp, &path).map_err(|cause| PkiError::Io { path, cause })?;
        }
        Ok(())
    }

    /// Loads what [`Identity::save`] wrote; `Ok(None)` when nothing is there yet.
    pub fn load(dir: &Path) -> Result<Option<Identity>, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|cause| PkiError::Io { path, cause })
        };
        if !dir.join("node.pem").exists() {
            return Ok(None);
        }
        let cert = |name: &str| -> Result<Vec<u8>, PkiError> {
            let text = read(name)?;
            crate::pem_cert_der(&text)
                .map(|d| d.to_vec())
                .ok_or(PkiError::BadPem {
                    path: dir.join(name),
                })
        };
        Ok(Some(Identity {
            ca_der: cert("ca.crt")?,
            cert_der: cert("node.pem")?,
            key_pem: key_block(&read("node.pem")?).ok_or(PkiError::BadPem {
                path: dir.join("node.pem"),
            })?,
        }))
    }

    /// A TLS client config that trusts the cloud CA and presents the node certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, PkiError> {
        let mut reader = self.key_pem.as_bytes();
        let key = rustls_pemfile::private_key(&mut reader)
            .ok()
            .flatten()
            .ok_or(PkiError::Csr(
                "the node key is not a PEM private key".into(),
            ))?;
        let chain = vec![CertificateDer::from(self.cert_der.clone())];
        client_config(&self.ca_der, Some((chain, key)))
    }
}

impl Ca {
    /// Signs an edge's CSR into a client certificate valid for `ttl`, after checking that it
    /// asks for `CN=system:node:<node>` and that its signature is valid.
    pub fn sign_node_csr(
        &self,
        csr_der: &[u8],
        node: &str,
        ttl: std::time::Duration,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let cn = csr_common_name(csr_der)?;
        let want = node_cn(node);
        if cn != want {
            return Err(PkiError::Csr(format!(
                "the CSR asks for CN {cn:?}, but node {node:?} may only have {want:?}"
            )));
        }
        let der = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| PkiError::Csr(format!("the CSR is not acceptable: {e}")))?;
        let p = &mut csr.params;
        (p.not_before, p.not_after) = crate::validity(ttl);
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let cert = csr.signed_by(&self.issuer)?;
        Ok(cert.der().clone())
    }

    /// A server config that verifies client certificates against this CA: required (CloudHub),
    /// or optional (the join server, where an edge renews with its current certificate).
    pub fn mtls_server_config(
        &self,
        common_name: &str,
        names: &[String],
        required: bool,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der().clone())?;
        self.mtls_server_config_for(common_name, names, roots, required)
    }

    /// A server config with this CA's serving certificate that verifies client certificates
    /// against `roots` (another authority's, such as a cluster's for its API server).
    pub fn mtls_server_config_for(
        &self,
        common_name: &str,
        names: &[String],
        roots: rustls::RootCertStore,
        required: bool,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let issued = self.issue_server(common_name, names)?;
        let builder = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder
            .build()
            .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(issued.chain, issued.key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips certificate verification, so an
        // expired node certificate could keep reconnecting. Edge sessions are long-lived anyway.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(Arc::new(cfg))
    }
}

/// The certificates of a PEM file (a CA bundle) as trust roots; a file with none is an error.
pub fn roots_from_pem_file(path: &Path) -> Result<rustls::RootCertStore, PkiError> {
    let text = std::fs::read(path).map_err(|cause| PkiError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let bad = || PkiError::BadPem {
        path: path.to_path_buf(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut text.as_slice()) {
        roots.add(cert.map_err(|_| bad())?)?;
    }
    if roots.is_empty() {
        return Err(bad());
    }
    Ok(roots)
}

/// A client config that trusts `ca_der` and, when given, presents a client certificate.
pub fn client_config(
    ca_der: &[u8],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(cfg)
}

/// A client config that accepts any server certificate. Only for downloading the cloud CA at
/// join time, whose SHA-256 is then checked against the join token before anything trusts it.
pub fn unverified_client_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAny;

/// Signatures are still checked: only the certificate chain is not.
fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_only_the_node_it_is_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("ca");
        let (key, csr) = node_csr("edge-1").expect("csr");
        let cert = ca
            .sign_node_csr(&csr, "edge-1", NODE_CERT_TTL)
            .expect("signed");
        assert_eq!(cert_node(&cert).as_deref(), Some("edge-1"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let days = (cert_not_after(&cert).expect("not after") - now) / 86_400;
        assert!((364..=365).contains(&days), "{days} days");
        let err = ca
            .sign_node_csr(&csr, "edge-2", NODE_CERT_TTL)
            .expect_err("other node");
        assert!(err.to_string().contains("system:node:edge-2"), "{err}");
        assert!(ca.sign_node_csr(b"junk", "edge-1", NODE_CERT_TTL).is_err());

        let id = Identity::new(ca.cert_der().to_vec(), cert.to_vec(), key);
        let edge_dir = dir.path().join("edge");
        id.save(&edge_dir).expect("save");
        let back = Identity::load(&edge_dir).expect("load").expect("present");
        assert_eq!(back.node().as_deref(), Some("edge-1"));
        assert_eq!(back.ca_der, ca.cert_der().to_vec());
        let _ = rustls::crypto::ring::default_provider().install_default();
        back.client_config().expect("client config");
        assert!(
            Identity::load(&dir.path().join("none"))
                .expect("ok")
                .is_none()
        );
    }
}
