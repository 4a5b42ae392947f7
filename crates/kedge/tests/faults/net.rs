//! The edge's own network: a namespace joined to this host by a veth pair, which the suite cuts
//! (nftables drops: a silent partition), takes down (no carrier), flaps and slows (tbf).

use std::process::Command;

/// Runs a command that must succeed (setting up or changing the network).
fn must(mut cmd: Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {} (the fault suite needs root, iproute2 and nftables)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

pub struct Net {
    pub ns: String,
    host_if: String,
    edge_if: String,
    /// The cloud's address on the link (this host's end).
    pub cloud_ip: String,
    /// The edge's address on the link (it may change: [`Net::readdress`]).
    edge_ip: String,
}

/// What the link between cloud and edge does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Healthy,
    /// Every packet between the two dropped in both directions, silently.
    Cut,
    /// The veth pair down: no carrier on either end.
    Down,
    /// Both directions limited to this many kbit/s.
    Slow(u32),
}

impl Net {
    /// A namespace and veth pair named after this process, on 10.213.<n>.0/29 (the edge at .2,
    /// or .3 once re-addressed).
    pub fn create() -> Net {
        let id = std::process::id();
        let n = id % 250 + 1;
        let net = Net {
            ns: format!("kfault{id}"),
            host_if: format!("kfh{id}"),
            edge_if: format!("kfe{id}"),
            cloud_ip: format!("10.213.{n}.1"),
            edge_ip: format!("10.213.{n}.2"),
        };
        net.remove();
        must(ip(&["netns", "add", &net.ns]));
        must(ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.edge_if,
            "netns",
            &net.ns,
        ]));
        must(ip(&[
            "addr",
            "add",
            &format!("{}/29", net.cloud_ip),
            "dev",
            &net.host_if,
        ]));
        must(ip(&["link", "set", &net.host_if, "up"]));
        must(net.exec_cmd(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/29", net.edge_ip),
                "dev",
                &net.edge_if,
            ],
        ));
        must(net.exec_cmd("ip", &["link", "set", &net.edge_if, "up"]));
        must(net.exec_cmd("ip", &["link", "set", "lo", "up"]));
        for rule in [
            "add table inet kfault",
            "add chain inet kfault in { type filter hook input priority 0; policy accept; }",
            "add chain inet kfault out { type filter hook output priority 0; policy accept; }",
        ] {
            must(net.nft(rule));
        }
        net
    }

    /// Gives the edge another address on the link, as a Wi-Fi or cellular hand-over does: its
    /// connections from the old one become black holes (no FIN, no RST; what the cloud sends
    /// there is dropped).
    pub fn readdress(&mut self) {
        let (prefix, last) = self.edge_ip.rsplit_once('.').expect("an IPv4 address");
        let next = format!("{prefix}.{}", if last == "2" { 3 } else { 2 });
        let dev = self.edge_if.clone();
        // Removed first: deleting a primary address takes its secondaries with it.
        let old = format!("{}/29", self.edge_ip);
        must(self.exec_cmd("ip", &["addr", "del", &old, "dev", &dev]));
        must(self.exec_cmd("ip", &["addr", "add", &format!("{next}/29"), "dev", &dev]));
        self.edge_ip = next;
    }

    /// `program args…` inside the edge's namespace.
    pub fn exec_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]).args(args);
        c
    }

    fn nft(&self, rule: &str) -> Command {
        let mut c = self.exec_cmd("nft", &[]);
        c.args(rule.split(' '));
        c
    }

    /// Puts the link in state `link` (from whatever it was in).
    pub fn set(&self, link: Link) {
        must(self.nft("flush chain inet kfault in"));
        must(self.nft("flush chain inet kfault out"));
        for (dev, inside) in [(&self.host_if, false), (&self.edge_if, true)] {
            // Fails harmlessly when no qdisc was added.
            let _ = self
                .tc(inside, &["qdisc", "del", "dev", dev, "root"])
                .output();
        }
        must(ip(&["link", "set", &self.host_if, "up"]));
        match link {
            Link::Healthy => {}
            Link::Cut => {
                let peer = &self.cloud_ip;
                must(self.nft(&format!("add rule inet kfault in ip saddr {peer} drop")));
                must(self.nft(&format!("add rule inet kfault out ip daddr {peer} drop")));
            }
            Link::Down => must(ip(&["link", "set", &self.host_if, "down"])),
            Link::Slow(kbit) => {
                for (dev, inside) in [(&self.host_if, false), (&self.edge_if, true)] {
                    let rate = format!("{kbit}kbit");
                    let args = [
                        "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                        "16kbit", "latency", "2s",
                    ];
                    must(self.tc(inside, &args));
                }
            }
        }
    }

    fn tc(&self, inside: bool, args: &[&str]) -> Command {
        if inside {
            self.exec_cmd("tc", args)
        } else {
            let mut c = Command::new("tc");
            c.args(args);
            c
        }
    }

    fn remove(&self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.ns]).output();
        let _ = ip(&["link", "del", &self.host_if]).output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}
