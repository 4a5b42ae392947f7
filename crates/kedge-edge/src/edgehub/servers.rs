//! `--cloud HOST[:PORT][,HOST[:PORT]...]`: the cloud replicas an edge may use (PORT is
//! CloudHub's; the join server is on each host's `httpsPort`), in the order the edge tries them.
//! The order starts at a replica picked by a hash of the node's name, so a fleet spreads over
//! the replicas instead of every edge dialling the first, and is the same at every start.

/// One cloud replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    pub host: String,
    pub hub_port: u16,
}

impl Cloud {
    /// `host:port` of its CloudHub.
    pub fn hub(&self) -> String {
        kedge_core::hostport::join(&self.host, self.hub_port)
    }

    /// `host:port` of its join server.
    pub fn join(&self, https_port: u16) -> String {
        kedge_core::hostport::join(&self.host, https_port)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServersError {
    #[error("no cloud address given")]
    Empty,
    #[error("{0:?} is not HOST or HOST:PORT")]
    Bad(String),
}

/// Reads the list; a host without a port gets `hub_port`.
pub fn parse(list: &str, hub_port: u16) -> Result<Vec<Cloud>, ServersError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        let bad = || ServersError::Bad(item.to_string());
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            // [v6] or [v6]:port
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (h, hub_port),
                p => (h, port(p.strip_prefix(':').ok_or_else(bad)?)?),
            }
        } else {
            match item.matches(':').count() {
                0 => (item, hub_port),
                1 => {
                    let (h, p) = item.split_once(':').ok_or_else(bad)?;
                    (h, port(p)?)
                }
                // A bare IPv6 address.
                _ => (item, hub_port),
            }
        };
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(bad());
        }
        out.push(Cloud {
            host: host.to_string(),
            hub_port: port,
        });
    }
    if out.is_empty() {
        return Err(ServersError::Empty);
    }
    Ok(out)
}

/// `clouds` in the order `node` tries them: from the one its name hashes to (FNV-1a: stable
/// across builds and starts), then the others from a second place the hash picks, so the edges
/// of a replica that dies spread over the others instead of all moving to the next one.
pub fn ordered_for(node: &str, mut clouds: Vec<Cloud>) -> Vec<Cloud> {
    let n = clouds.len() as u64;
    if n > 1 {
        let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        clouds.rotate_left((hash % n) as usize);
        clouds[1..].rotate_left(((hash / n) % (n - 1)) as usize);
    }
    clouds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs(c: &[Cloud]) -> Vec<String> {
        c.iter().map(Cloud::hub).collect()
    }

    #[test]
    fn lists_of_hosts_with_and_without_ports() {
        let c = parse(
            "a.example, 10.0.0.2:11000,[fd00::1]:12000,fd00::2,[fd00::3]",
            10000,
        )
        .expect("parses");
        assert_eq!(
            hubs(&c),
            [
                "a.example:10000",
                "10.0.0.2:11000",
                "[fd00::1]:12000",
                "[fd00::2]:10000",
                "[fd00::3]:10000"
            ]
        );
        assert_eq!(c[1].join(10002), "10.0.0.2:10002");
        for bad in [
            "",
            "a,,b",
            "a:",
            "a:0",
            "a:x",
            "[fd00::1",
            "[fd00::1]x",
            "a/b",
            "u@a",
        ] {
            assert!(parse(bad, 10000).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn edges_start_at_replicas_their_names_pick_and_spread() {
        let three = parse("r0,r1,r2", 10000).expect("parses");
        let first = |n: &str| ordered_for(n, three.clone())[0].host.clone();
        assert_eq!(first("edge-7"), first("edge-7"), "the same at every start");
        let order = ordered_for("edge-7", three.clone());
        let mut sorted = hubs(&order);
        sorted.sort();
        assert_eq!(sorted, hubs(&three), "every replica, once");
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            *counts.entry(first(&format!("edge-{i}"))).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&c| c > 800), "spread: {counts:?}");
        // The edges starting at one replica have the others second in equal shares.
        let mut second = std::collections::HashMap::new();
        for i in 0..3000 {
            let order = ordered_for(&format!("edge-{i}"), three.clone());
            if order[0].host == "r0" {
                *second.entry(order[1].host.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(second.len(), 2, "{second:?}");
        assert!(
            second.values().all(|&c| c > 400),
            "spread after r0: {second:?}"
        );
        let one = parse("only", 1).expect("one");
        assert_eq!(ordered_for("x", one.clone()), one);
    }
}
