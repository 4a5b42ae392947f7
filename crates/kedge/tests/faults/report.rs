//! What a run did, printed (and written with `--report`) for docs/reliability.md.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    KillCloud,
    KillEdge,
    Cut,
    LinkDown,
    Flap,
    Slow,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::KillCloud,
        Fault::KillEdge,
        Fault::Cut,
        Fault::LinkDown,
        Fault::Flap,
        Fault::Slow,
    ];

    fn describe(self) -> &'static str {
        match self {
            Fault::KillCloud => "kill -9 of kedge cloud, restarted 0.1–3 s later",
            Fault::KillEdge => {
                "kill -9 of kedge edge and its embedded broker, restarted 0.1–3 s later"
            }
            Fault::Cut => "silent partition (nftables drop both ways) for 1–12 s",
            Fault::LinkDown => "link down (no carrier) for 0.5–6 s",
            Fault::Flap => "flapping link: 4–11 cuts of 0.1–0.8 s, 0.1–0.8 s apart",
            Fault::Slow => "slow link: 64 kbit/s both ways for 3–10 s",
        }
    }
}

#[derive(Debug, Default)]
pub struct Counts {
    pub seed: u64,
    pub faults: HashMap<Fault, u64>,
    pub faults_took: Duration,
    /// From the last fault's end to every check passing.
    pub converged: Duration,
    pub bus_made: u64,
    /// Deliveries at the app of those messages (duplicates included).
    pub bus_received: u64,
    pub twin_made: u64,
    pub desired_made: u64,
    /// Attempts refused during faults (and retried).
    pub refused: u64,
    pub outbox_left: u64,
}

impl Counts {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let total: u64 = self.faults.values().sum();
        let _ = writeln!(
            s,
            "faults injected: {total} in {} s (seed {})",
            self.faults_took.as_secs(),
            self.seed
        );
        let mut kinds: Vec<_> = self.faults.iter().collect();
        kinds.sort();
        for (f, n) in kinds {
            let _ = writeln!(s, "  {n:>5}  {}", f.describe());
        }
        let ops = self.bus_made + self.twin_made + self.desired_made;
        let _ = writeln!(
            s,
            "operations acknowledged: {ops} (attempts refused during faults and retried: {})",
            self.refused
        );
        let _ = writeln!(
            s,
            "  eventbus→rest messages: {} published, all delivered, lost 0, duplicates {}",
            self.bus_made,
            self.bus_received - self.bus_made
        );
        let _ = writeln!(
            s,
            "  twin reports: {}, the last of each device at the cloud",
            self.twin_made
        );
        let _ = writeln!(
            s,
            "  desired changes (kubectl): {}, the last of each device at the edge",
            self.desired_made
        );
        let _ = writeln!(
            s,
            "converged {:.1} s after the last fault; stores intact after a final kill -9; device messages left in the outbox: {}; panics: 0",
            self.converged.as_secs_f64(),
            self.outbox_left
        );
        s
    }
}
