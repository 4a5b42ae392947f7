//! Join tokens: `<sha256hex(CA DER)>.<JWT>`, as KubeEdge's `keadm gettoken` prints them. The JWT
//! is HS256 with the CA key as its secret and an `exp` claim; the first part lets a joining edge
//! check the CA it downloads before trusting it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Ca;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("the token has expired; ask the cloud for a new one (`kedge token`)")]
    Expired,
    #[error(
        "the token was not issued by this cloud, or its key was rotated since (bad signature); ask the cloud for a new one (`kedge token`)"
    )]
    BadSignature,
    #[error("the token is malformed: expected <ca-hash>.<jwt>")]
    Malformed,
    #[error(
        "the token's CA hash does not match the cloud's CA: wrong cloud, or a tampered download"
    )]
    CaMismatch,
    #[error("could not sign a token: {0}")]
    Sign(String),
    #[error("the join token key {0}")]
    Key(String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    exp: u64,
    iat: u64,
}

/// A join token split into the CA hash and the JWT.
pub struct JoinToken<'a> {
    pub ca_hash: &'a str,
    pub jwt: &'a str,
}

impl<'a> JoinToken<'a> {
    pub fn parse(token: &'a str) -> Result<JoinToken<'a>, TokenError> {
        let (ca_hash, jwt) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let hex_ok = ca_hash.len() == 64 && ca_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok || jwt.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken { ca_hash, jwt })
    }

    /// Checks a downloaded CA certificate (DER) against the token's hash.
    pub fn check_ca(&self, ca_der: &[u8]) -> Result<(), TokenError> {
        let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ca_der));
        if got.eq_ignore_ascii_case(self.ca_hash) {
            Ok(())
        } else {
            Err(TokenError::CaMismatch)
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ca {
    /// The current token key, read afresh (see [`Ca::rotate_token_key`]).
    fn token_secret(&self) -> Result<Vec<u8>, TokenError> {
        let dir = match &self.token_key {
            crate::TokenKey::Fixed(k) => return Ok(k.clone().unwrap_or(self.ca_key_der.clone())),
            crate::TokenKey::Dir(dir) => dir,
        };
        let path = dir.join(crate::TOKEN_KEY);
        match std::fs::read(&path) {
            Ok(key) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.ca_key_der.clone()),
            Err(e) => Err(TokenError::Key(format!("{}: {e}", path.display()))),
        }
    }

    /// Replaces the token key in the CA's directory (atomically: written aside, then renamed
    /// over): every token issued before stops working; edges already joined keep their
    /// certificates. A CA whose key is not in a directory has nothing to rotate here.
    pub fn rotate_token_key(&self) -> Result<(), crate::PkiError> {
        let crate::TokenKey::Dir(dir) = &self.token_key else {
            return Err(crate::PkiError::NoKeyDir);
        };
        let path = dir.join(crate::TOKEN_KEY);
        let tmp = dir.join(format!(
            ".{}-{}-{}",
            crate::TOKEN_KEY,
            std::process::id(),
            rand::random::<u32>()
        ));
        crate::write_private(&tmp, &rand::random::<[u8; 32]>())?;
        std::fs::rename(&tmp, &path).map_err(|cause| crate::PkiError::Io { path, cause })?;
        tracing::info!("join token key rotated: earlier tokens are no longer accepted");
        Ok(())
    }

    /// A join token valid for `ttl`.
    pub fn token(&self, ttl: Duration) -> Result<String, TokenError> {
        self.token_at(ttl, now_secs())
    }

    /// A join token issued at `iat` (seconds since the epoch).
    pub fn token_at(&self, ttl: Duration, iat: u64) -> Result<String, TokenError> {
        let claims = Claims {
            iat,
            exp: iat + ttl.as_secs(),
        };
        let key = EncodingKey::from_secret(&self.token_secret()?);
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(format!("{}.{jwt}", self.fingerprint()))
    }

    /// Verifies the JWT part of a join token (signature and expiry, no leeway).
    pub fn verify_jwt(&self, jwt: &str) -> Result<(), TokenError> {
        self.verify_jwt_at(jwt, now_secs())
    }

    /// Verifies as of `now` (seconds since the epoch).
    pub fn verify_jwt_at(&self, jwt: &str, now: u64) -> Result<(), TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.set_required_spec_claims(&["exp"]);
        let key = DecodingKey::from_secret(&self.token_secret()?);
        let claims = jsonwebtoken::decode::<Claims>(jwt, &key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("ca");
        (dir, ca)
    }

    #[test]
    fn a_fresh_token_verifies_and_names_the_ca() {
        let (_d, ca) = ca();
        let token = ca.token(Duration::from_secs(3600)).expect("token");
        assert_eq!(token.split('.').count(), 4, "hash.header.claims.signature");
        let t = JoinToken::parse(&token).expect("parses");
        assert_eq!(t.ca_hash, ca.fingerprint());
        t.check_ca(ca.cert_der()).expect("CA matches");
        ca.verify_jwt(t.jwt).expect("valid");
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let (_d, ca) = ca();
        let (_d2, other) = self::ca();
        let day_ago = now_secs() - 86_400;
        let expired = ca
            .token_at(Duration::from_secs(3600), day_ago)
            .expect("token");
        let jwt = JoinToken::parse(&expired).expect("parses").jwt.to_string();
        assert_eq!(ca.verify_jwt(&jwt), Err(TokenError::Expired));
        assert_eq!(ca.verify_jwt_at(&jwt, day_ago + 10), Ok(()));
        let foreign = other.token(Duration::from_secs(60)).expect("token");
        let foreign = JoinToken::parse(&foreign).expect("parses");
        assert_eq!(ca.verify_jwt(foreign.jwt), Err(TokenError::BadSignature));
        assert_eq!(foreign.check_ca(ca.cert_der()), Err(TokenError::CaMismatch));
        // A longer-lived payload under the original signature.
        let short = ca.token(Duration::from_secs(60)).expect("token");
        let long = ca.token(Duration::from_secs(86_400 * 365)).expect("token");
        let (s, l): (Vec<&str>, Vec<&str>) =
            (short.split('.').collect(), long.split('.').collect());
        let forged = format!("{}.{}.{}", s[1], l[2], s[3]);
        assert_eq!(ca.verify_jwt(&forged), Err(TokenError::BadSignature));
        assert!(matches!(
            JoinToken::parse("abc"),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn rotating_the_key_revokes_earlier_tokens_everywhere_at_once() {
        let (d, ca) = ca();
        // The running cloud's CA, loaded before the rotation another process makes.
        let running = Ca::load_existing(d.path()).expect("load");
        let old = ca.token(Duration::from_secs(3600)).expect("token");
        let old = JoinToken::parse(&old).expect("parses").jwt.to_string();
        assert_eq!(running.verify_jwt(&old), Ok(()));
        ca.rotate_token_key().expect("rotate");
        assert_eq!(running.verify_jwt(&old), Err(TokenError::BadSignature));
        let new = ca.token(Duration::from_secs(3600)).expect("token");
        assert_eq!(
            running.verify_jwt(JoinToken::parse(&new).expect("parses").jwt),
            Ok(())
        );
        let files: Vec<String> = std::fs::read_dir(d.path().join("pki"))
            .expect("pki dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(
            files.iter().all(|f| !f.starts_with('.')),
            "no leftovers: {files:?}"
        );
    }

    #[test]
    fn a_ca_without_a_token_key_signs_with_its_own_until_rotated() {
        let (d, ca) = ca();
        std::fs::remove_file(d.path().join("pki").join(crate::TOKEN_KEY)).expect("rm");
        let before = ca.token(Duration::from_secs(3600)).expect("token");
        let before = JoinToken::parse(&before).expect("parses").jwt.to_string();
        // The CA key's HMAC, as tokens were made before token.key existed.
        let claims = jsonwebtoken::decode::<Claims>(
            &before,
            &DecodingKey::from_secret(&ca.ca_key_der),
            &Validation::new(Algorithm::HS256),
        );
        assert!(claims.is_ok(), "signed with the CA key");
        ca.rotate_token_key().expect("rotate");
        assert_eq!(ca.verify_jwt(&before), Err(TokenError::BadSignature));
    }
}
