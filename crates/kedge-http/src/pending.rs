//! A bound on TLS handshakes under way from one address on one listener (the listener bounds
//! them in all with a semaphore). A flood of connections that never finish their handshake then
//! holds a bounded number of descriptors for at most the handshake deadline, and one flooding
//! address cannot take every place from the others (a fleet reconnecting after a cloud restart,
//! say).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Pending {
    per_ip: usize,
    /// Handshakes under way, by address (addresses with none are not kept).
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One handshake's place; dropping it frees the place.
#[derive(Debug)]
pub struct Place {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    pub fn new(per_ip: usize) -> Arc<Pending> {
        Arc::new(Pending {
            per_ip,
            by_ip: Mutex::default(),
        })
    }

    fn by_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a handshake from `ip`, or `None` when `ip` has all its places.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Place> {
        let mut by_ip = self.by_ip();
        let mine = by_ip.entry(ip).or_insert(0);
        if *mine >= self.per_ip {
            return None;
        }
        *mine += 1;
        Some(Place {
            pending: self.clone(),
            ip,
        })
    }

    /// Handshakes under way.
    pub fn len(&self) -> usize {
        self.by_ip().values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip().is_empty()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut by_ip = self.pending.by_ip();
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_gets_its_share_and_the_others_theirs() {
        let p = Pending::new(2);
        let a: Vec<_> = (0..3).filter_map(|_| p.enter(ip(1))).collect();
        assert_eq!(a.len(), 2, "per-address bound");
        let b: Vec<_> = (0..3).filter_map(|_| p.enter(ip(2))).collect();
        assert_eq!(b.len(), 2, "another address is not affected");
        assert_eq!(p.len(), 4);
        drop(a);
        assert_eq!(p.len(), 2);
        assert!(
            p.enter(ip(1)).is_some(),
            "places come back when handshakes end"
        );
    }

    #[test]
    fn every_place_is_returned() {
        let p = Pending::new(100);
        let places: Vec<_> = (0..50u8).filter_map(|i| p.enter(ip(i % 7))).collect();
        assert_eq!(p.len(), 50);
        drop(places);
        assert!(p.is_empty(), "no address left behind");
    }
}
