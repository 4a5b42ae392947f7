//! A bound on TLS handshakes under way on one listener: at most `total` in all and `per_ip`
//! from one address. A flood of connections that never finish their handshake then holds a
//! bounded number of descriptors for at most the handshake deadline, and one flooding address
//! cannot crowd out the others (a fleet reconnecting after a cloud restart, say).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Pending {
    total: usize,
    per_ip: usize,
    /// Handshakes under way: in all, and by address.
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One handshake's place; dropping it frees the place.
#[derive(Debug)]
pub struct Place {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    pub fn new(total: usize, per_ip: usize) -> Arc<Pending> {
        Arc::new(Pending {
            total,
            per_ip,
            state: Mutex::default(),
        })
    }

    /// A place for a handshake from `ip`, or `None` when either bound is reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Place> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_ip) = &mut *st;
        let mine = by_ip.entry(ip).or_insert(0);
        if *all >= self.total || *mine >= self.per_ip {
            if *mine == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *all += 1;
        Some(Place {
            pending: self.clone(),
            ip,
        })
    }

    /// Handshakes under way.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut st = self.pending.state.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_ip) = &mut *st;
        *all -= 1;
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
        let p = Pending::new(5, 2);
        let a: Vec<_> = (0..3).filter_map(|_| p.enter(ip(1))).collect();
        assert_eq!(a.len(), 2, "per-address bound");
        let b: Vec<_> = (0..3).filter_map(|_| p.enter(ip(2))).collect();
        assert_eq!(b.len(), 2);
        let c = p.enter(ip(3));
        assert!(c.is_some());
        assert!(p.enter(ip(4)).is_none(), "total bound");
        drop(a);
        assert_eq!(p.len(), 3);
        assert!(
            p.enter(ip(1)).is_some(),
            "places come back when handshakes end"
        );
    }

    #[test]
    fn every_place_is_returned() {
        let p = Pending::new(100, 100);
        let places: Vec<_> = (0..50u8).filter_map(|i| p.enter(ip(i % 7))).collect();
        assert_eq!(p.len(), 50);
        drop(places);
        assert!(p.is_empty());
        assert!(
            p.state.lock().expect("lock").1.is_empty(),
            "no address left behind"
        );
    }
}
