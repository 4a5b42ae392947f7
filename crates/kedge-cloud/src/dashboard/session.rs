//! Signed-in browsers: a random session id (the cookie) maps to the bearer token it signed in
//! with, kept in memory only, for a fixed time from sign-in. Pure: the time is an argument.

use std::collections::HashMap;
use std::time::Duration;

/// How long a sign-in lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions at most (a flood of sign-ins drops the oldest first).
pub const MAX: usize = 10_000;

struct Entry {
    token: String,
    expires_ms: u64,
}

#[derive(Default)]
pub struct Sessions {
    by_id: HashMap<String, Entry>,
}

impl Sessions {
    /// A new session for `token` at `now_ms` (monotonic); returns its id (64 hex digits).
    pub fn create(&mut self, token: &str, id: [u8; 32], now_ms: u64) -> String {
        self.by_id.retain(|_, e| e.expires_ms > now_ms);
        if self.by_id.len() >= MAX
            && let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, e)| e.expires_ms)
                .map(|(k, _)| k.clone())
        {
            self.by_id.remove(&oldest);
        }
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let expires_ms = now_ms + LIFETIME.as_millis() as u64;
        self.by_id.insert(
            id.clone(),
            Entry {
                token: token.to_string(),
                expires_ms,
            },
        );
        id
    }

    /// The token of session `id`, if it is live at `now_ms`.
    pub fn token(&self, id: &str, now_ms: u64) -> Option<&str> {
        self.by_id
            .get(id)
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| e.token.as_str())
    }

    pub fn end(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_its_lifetime_and_ends_when_told() {
        let mut s = Sessions::default();
        let id = s.create("tok", [7; 32], 1_000);
        assert_eq!(id.len(), 64);
        assert_eq!(s.token(&id, 1_000), Some("tok"));
        let end = 1_000 + LIFETIME.as_millis() as u64;
        assert_eq!(s.token(&id, end - 1), Some("tok"));
        assert_eq!(s.token(&id, end), None, "expired");
        let id2 = s.create("tok2", [8; 32], 2_000);
        s.end(&id2);
        assert_eq!(s.token(&id2, 2_000), None);
        assert_eq!(s.token("nope", 2_000), None);
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = "a=1; kedge_session=abc; b=2";
        assert_eq!(cookie(h, "kedge_session"), Some("abc"));
        assert_eq!(cookie(h, "kedge"), None);
        assert_eq!(cookie("", "a"), None);
    }
}
