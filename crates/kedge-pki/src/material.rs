//! The CA's files as bytes — what several cloud replicas must share (on a real cluster, through
//! one Secret) — and their installation into a data directory. Each file is replaced atomically
//! and only when it differs, so a replica that reads the token key at each use never sees half a
//! key, and an unchanged CA is never rewritten.

use std::fs;
use std::path::Path;

use crate::{CA_CERT, CA_KEY, PkiError, TOKEN_KEY, io_err, write_private};

/// A CA's certificate and key (PEM) and its join-token key (none for a CA made before token
/// keys existed: it signs tokens with its own key).
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub token_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    // Never print a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("cert_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl Material {
    /// The CA in `<data_dir>/pki`, created there first if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Material, PkiError> {
        crate::Ca::load_or_create(data_dir)?;
        Self::load_existing(data_dir)
    }

    /// The CA in `<data_dir>/pki`; an error if there is none.
    pub fn load_existing(data_dir: &Path) -> Result<Material, PkiError> {
        let dir = data_dir.join("pki");
        let read = |name: &str| {
            let p = dir.join(name);
            fs::read(&p).map_err(io_err(&p))
        };
        let token_key = match fs::read(dir.join(TOKEN_KEY)) {
            Ok(k) => Some(k),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&dir.join(TOKEN_KEY))(e)),
        };
        Ok(Material {
            cert_pem: read(CA_CERT)?,
            key_pem: read(CA_KEY)?,
            token_key,
        })
    }

    /// A CA made of this material (its token key fixed: nothing is read from disk).
    pub fn ca(&self) -> Result<crate::Ca, PkiError> {
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| PkiError::BadPem { path: what.into() })
        };
        crate::Ca::from_pem(
            text(&self.cert_pem, CA_CERT)?,
            &text(&self.key_pem, CA_KEY)?,
            crate::TokenKey::Fixed(self.token_key.clone()),
        )
    }

    /// Writes the material into `<data_dir>/pki`: each file that differs, atomically (written
    /// aside, then renamed over). True when a file changed.
    pub fn install(&self, data_dir: &Path) -> Result<bool, PkiError> {
        self.ca()?; // never install what does not load
        let dir = data_dir.join("pki");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut changed = false;
        for (name, data) in [
            (CA_CERT, Some(&self.cert_pem)),
            (CA_KEY, Some(&self.key_pem)),
            (TOKEN_KEY, self.token_key.as_ref()),
        ] {
            let path = dir.join(name);
            let now = fs::read(&path).ok();
            match data {
                Some(d) if now.as_ref() != Some(d) => {
                    let tmp = dir.join(format!(".{name}-{}", rand::random::<u32>()));
                    write_private(&tmp, d)?;
                    fs::rename(&tmp, &path).map_err(io_err(&path))?;
                    changed = true;
                }
                None if now.is_some() => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    changed = true;
                }
                _ => {}
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_installs_into_another_directory_as_the_same_ca() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let m = Material::load_or_create(a.path()).expect("created");
        assert!(m.token_key.is_some());
        let again = Material::load_or_create(a.path()).expect("loaded");
        assert_eq!(m, again, "created once");
        assert!(m.install(b.path()).expect("installed"));
        assert!(!m.install(b.path()).expect("again"), "nothing differs");
        let (ca_a, ca_b) = (
            crate::Ca::load_existing(a.path()).expect("a"),
            crate::Ca::load_existing(b.path()).expect("b"),
        );
        assert_eq!(ca_a.fingerprint(), ca_b.fingerprint());
        let token = ca_a
            .token(std::time::Duration::from_secs(60))
            .expect("token");
        let jwt = token.split_once('.').expect("fingerprint.jwt").1;
        ca_b.verify_jwt(jwt).expect("b accepts a's tokens");
        let fixed = m.ca().expect("from bytes");
        fixed
            .verify_jwt(jwt)
            .expect("so does a CA made from the bytes");
        assert!(!format!("{m:?}").contains("PRIVATE"), "no key in Debug");
    }

    #[test]
    fn a_rotated_token_key_is_installed_and_bad_material_is_not() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let mut m = Material::load_or_create(a.path()).expect("created");
        m.install(b.path()).expect("installed");
        let old = crate::Ca::load_existing(b.path())
            .expect("b")
            .token(std::time::Duration::from_secs(60))
            .expect("token");
        m.token_key = Some(vec![7; 32]);
        assert!(m.install(b.path()).expect("rotated"));
        let ca_b = crate::Ca::load_existing(b.path()).expect("b");
        let jwt = old.split_once('.').expect("jwt").1;
        assert!(
            ca_b.verify_jwt(jwt).is_err(),
            "tokens of the old key are refused"
        );
        let bad = Material {
            key_pem: b"not a key".to_vec(),
            ..m.clone()
        };
        assert!(bad.install(b.path()).is_err());
        assert_eq!(
            Material::load_or_create(b.path()).expect("still there"),
            m,
            "nothing of the bad material was written"
        );
    }
}
