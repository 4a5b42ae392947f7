//! The fault-injection suite: a real `kedge cloud`, a real `kedge edge` in its own network
//! namespace, devices publishing with mosquitto_pub and an operator using kubectl, while the
//! suite kills processes (SIGKILL) and cuts, downs, flaps and slows the link at random points.
//! Afterwards every acknowledged operation must show at the other side in its final state, the
//! stores must be intact and the edge's outbox empty, and no process may have panicked.
//!
//! `cargo test -p kedge --test faults` runs it for 150 s of faults (CI).
//! `cargo test --release -p kedge --test faults -- --duration 2h [--seed N] [--report FILE]`
//! is the soak run. Needs root, iproute2, nftables, mosquitto-clients and kubectl.

#[path = "../common/app.rs"]
mod app;
#[path = "../common/mod.rs"]
mod common;
mod load;
mod net;
mod report;
mod rig;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use net::{Link, Net};
use report::{Counts, Fault};
use rig::Rig;

const DEVICES: [&str; 2] = ["counter", "counter-b"];

struct Args {
    duration: Duration,
    seed: u64,
    report: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        duration: Duration::from_secs(150),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // cargo test passes libtest's flags too (--nocapture, filters): not ours, ignored.
        match arg.as_str() {
            "--duration" => a.duration = parse_duration(&it.next().expect("--duration value")),
            "--seed" => a.seed = it.next().and_then(|s| s.parse().ok()).expect("--seed N"),
            "--report" => a.report = it.next().map(Into::into),
            _ => {}
        }
    }
    a
}

/// `90s`, `10m`, `2h` or plain seconds.
fn parse_duration(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().expect("--duration: a number with s, m or h");
    Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("--duration: unit must be s, m or h"),
    })
}

/// SplitMix64: the run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn main() {
    let a = args();
    println!(
        "fault suite: {:?} of faults, seed {} (replay: cargo test -p kedge --test faults -- --seed {} --duration {}s)",
        a.duration,
        a.seed,
        a.seed,
        a.duration.as_secs()
    );
    let mut rng = Rng(a.seed);
    let mut rig = Rig::start(Net::create());
    let app = setup(&rig);
    a_new_address_is_noticed(&mut rig);
    let stop = Arc::new(AtomicBool::new(false));
    let kubeconfig = rig.cloud().kubeconfig();
    let mut loads = vec![("bus", load::bus_messages(&rig.net, stop.clone()))];
    for d in DEVICES {
        loads.push(("twin", load::twin_reports(&rig.net, d, stop.clone())));
        loads.push((
            "desired",
            load::desired_changes(kubeconfig.clone(), d, stop.clone()),
        ));
    }
    let mut received: HashMap<String, u32> = HashMap::new();
    let started = Instant::now();
    let mut faults = HashMap::new();
    while started.elapsed() < a.duration {
        let at = started.elapsed();
        let f = inject(&mut rig, &mut rng);
        println!(
            "[{:>6.1} s] {f:?} for {:.1} s",
            at.as_secs_f64(),
            (started.elapsed() - at).as_secs_f64()
        );
        *faults.entry(f).or_insert(0u64) += 1;
        drain(&app, &mut received);
        rig.assert_alive();
        std::thread::sleep(rng.ms(500, 3000));
    }
    let faults_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut tallies: Vec<(&str, load::Tally)> = Vec::new();
    for (kind, h) in loads {
        tallies.push((kind, h.join().expect("a load thread failed")));
    }
    println!("faults over; load stopped: {tallies:?}");
    let converged = Instant::now();
    let counts = check(&mut rig, &app, &mut received, &tallies);
    let counts = Counts {
        faults,
        faults_took,
        converged: converged.elapsed(),
        seed: a.seed,
        ..counts
    };
    let text = counts.render();
    println!("{text}");
    if let Some(path) = a.report {
        std::fs::write(&path, &text).expect("report file");
    }
}

/// The seed's devices (two counters) and eventbus→rest rule; returns the cloud app once a first
/// message has gone through.
fn setup(rig: &Rig) -> app::App {
    let cloud = rig.cloud();
    let example = |n: &str| common::examples().join(n).display().to_string();
    cloud.ok(&["apply", "-f", &example("devicemodel-counter.yaml")]);
    let counter = std::fs::read_to_string(example("device-counter.yaml")).expect("device");
    cloud.apply(&counter);
    cloud.apply(&counter.replace("name: counter\n", "name: counter-b\n"));
    let app = app::App::start(0);
    app::eventbus_to_app(cloud, app.port);
    common::wait_until(
        Duration::from_secs(60),
        "a first eventbus→rest message",
        || {
            let payload = "warm-up";
            let _ = rig
                .net
                .exec_cmd(
                    "mosquitto_pub",
                    &["-p", rig::MQTT_PORT, "-q", "1", "-t", "default/test"],
                )
                .args(["-m", payload])
                .output();
            app.got.recv_timeout(Duration::from_millis(500)).ok()
        },
    );
    app
}

/// The edge's address changes while it is connected (its flow to the cloud becomes a black
/// hole, as in a Wi-Fi or cellular hand-over): the edge notices what it no longer hears and is
/// connected again, its node Ready, within 45 s — not when TCP gives up, ~15 minutes later.
fn a_new_address_is_noticed(rig: &mut Rig) {
    let metrics = rig.cloud().metrics.clone();
    let sessions = || -> u64 {
        let text = common::http_get(&metrics);
        text.lines()
            .find_map(|l| l.strip_prefix("kedge_cloudhub_sessions_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = sessions();
    assert!(before >= 1, "the edge is connected");
    let changed = Instant::now();
    rig.net.readdress();
    while !(sessions() > before && rig.cloud().node_ready(rig::NODE) == "True") {
        assert!(
            changed.elapsed() < Duration::from_secs(45),
            "the edge was not connected again, Ready, within 45 s of its address changing; its log:\n{}",
            rig.log_tail("edge.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "[address change] the edge was connected again, Ready, {:.1} s after its address changed",
        changed.elapsed().as_secs_f64()
    );
}

/// Injects one fault, picked at random, and ends it.
fn inject(rig: &mut Rig, rng: &mut Rng) -> Fault {
    let f = Fault::ALL[(rng.next() % Fault::ALL.len() as u64) as usize];
    match f {
        Fault::KillCloud => {
            rig.kill_cloud();
            std::thread::sleep(rng.ms(100, 3000));
            rig.restart_cloud();
        }
        Fault::KillEdge => {
            rig.kill_edge();
            std::thread::sleep(rng.ms(100, 3000));
            rig.restart_edge();
        }
        Fault::Cut => hold(rig, Link::Cut, rng.ms(1000, 12_000)),
        Fault::LinkDown => hold(rig, Link::Down, rng.ms(500, 6000)),
        Fault::Slow => hold(rig, Link::Slow(64), rng.ms(3000, 10_000)),
        Fault::Flap => {
            for _ in 0..(4 + rng.next() % 8) {
                hold(rig, Link::Cut, rng.ms(100, 800));
                std::thread::sleep(rng.ms(100, 800));
            }
        }
    }
    f
}

fn hold(rig: &Rig, link: Link, d: Duration) {
    rig.net.set(link);
    std::thread::sleep(d);
    rig.net.set(Link::Healthy);
}

/// Counts what the cloud app has received so far, by body.
fn drain(app: &app::App, received: &mut HashMap<String, u32>) {
    while let Ok((_, body)) = app.got.try_recv() {
        *received.entry(body).or_insert(0) += 1;
    }
}

/// Waits for every acknowledged operation to show at the other side, then kills both
/// processes (a power cut) and checks the stores.
fn check(
    rig: &mut Rig,
    app: &app::App,
    received: &mut HashMap<String, u32>,
    tallies: &[(&str, load::Tally)],
) -> Counts {
    let made = |kind: &str| -> Vec<&load::Tally> {
        tallies
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| t)
            .collect()
    };
    let bus = made("bus")[0].clone();
    let want: Vec<String> = (0..bus.made).map(|n| format!("m-{n}")).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        drain(app, received);
        let missing: Vec<&String> = want.iter().filter(|m| !received.contains_key(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged eventbus messages never reached the app: {:?}…",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(20)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let twins = made("twin");
    let desired = made("desired");
    for (i, d) in DEVICES.iter().enumerate() {
        let reported = twins[i].last().map(|n| n.to_string());
        let wanted = desired[i].last().map(|n| format!("d-{n}"));
        let reported_at_cloud = || Some(cloud_twin(rig, d, "reported"));
        converge(
            &format!("{d}'s last report at the cloud"),
            &reported,
            reported_at_cloud,
        );
        assert_eq!(
            cloud_twin(rig, d, "desired"),
            wanted.clone().unwrap_or_default(),
            "{d}: the cloud's desired value"
        );
        converge(
            &format!("{d}'s last desired value at the edge"),
            &wanted,
            || edge_twin(rig, d).0,
        );
        assert_eq!(
            edge_twin(rig, d).1,
            reported,
            "{d}: the edge's reported value"
        );
    }
    rig.assert_alive();
    rig.kill_edge();
    rig.kill_cloud();
    let outbox = stores_intact(rig);
    let panics = rig.panics();
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    drain(app, received);
    let extra: Vec<_> = received
        .keys()
        .filter(|b| !want.contains(b) && *b != "warm-up")
        .collect();
    assert!(
        extra.is_empty(),
        "the app got messages no device sent: {extra:?}"
    );
    Counts {
        bus_made: bus.made,
        bus_received: want.iter().map(|m| u64::from(received[m])).sum(),
        twin_made: twins.iter().map(|t| t.made).sum(),
        desired_made: desired.iter().map(|t| t.made).sum(),
        refused: tallies.iter().map(|(_, t)| t.refused).sum(),
        outbox_left: outbox,
        ..Counts::default()
    }
}

/// Waits until `now()` gives `want`; on timeout, says what it gave instead.
fn converge(what: &str, want: &Option<String>, mut now: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = now();
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: want {want:?}, still {got:?} after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A device's twin value at the cloud (`desired` or `reported`), through kubectl.
fn cloud_twin(rig: &Rig, device: &str, which: &str) -> String {
    let out = rig.cloud().kubectl(&[
        "get",
        "device",
        device,
        "-o",
        &format!("jsonpath={{.status.twins[0].{which}.value}}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A device's (desired, reported) `status` in the edge's store, read beside the running edge.
fn edge_twin(rig: &Rig, device: &str) -> (Option<String>, Option<String>) {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        rig.edge_db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return (None, None);
    };
    let row: Option<(Option<String>, Option<String>)> = db
        .query_row(
            "SELECT expected, actual FROM device_twin WHERE deviceid = ?1 AND twin_name = 'status'",
            [format!("default/{device}")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    row.unwrap_or((None, None))
}

/// After the final SIGKILL: both databases pass SQLite's integrity check; returns how many of
/// the devices' messages the edge's outbox still held (everything was delivered, so 0; a Lease
/// renewal may be in flight).
fn stores_intact(rig: &Rig) -> u64 {
    for path in [rig.edge_db(), rig.cloud_db()] {
        let db = rusqlite::Connection::open(&path).expect("open store");
        let verdict: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(verdict, "ok", "{}", path.display());
    }
    let db = rusqlite::Connection::open(rig.edge_db()).expect("edge.db");
    let mut stmt = db
        .prepare(
            "SELECT key, msg FROM outbox WHERE msg LIKE '%default/test%' OR msg LIKE '%counter%'",
        )
        .expect("outbox");
    let left: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{:?} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .expect("outbox rows")
        .filter_map(Result::ok)
        .collect();
    assert!(
        left.is_empty(),
        "messages left in the edge's outbox after everything arrived:\n{}",
        left.join("\n")
    );
    left.len() as u64
}
