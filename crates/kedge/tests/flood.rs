//! A connection flood against a real `kedge cloud`: thousands of connections that never start
//! their TLS handshake, from one address, to CloudHub, the join server and the API at once. The
//! cloud holds a bounded number of them (the rest are closed at once), closes those at the
//! handshake deadline, and keeps serving kubectl and a joining edge from another address.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{EdgeProc, Kedge, wait_until};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Per listener, from one address (`kedge-http`'s bound).
const HELD_PER_ADDRESS: usize = 512;
const FLOOD: usize = 1200;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn connect_from(src: &str, port: u16) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(format!("{src}:0").parse().expect("addr"))
        .expect("bind");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    s.connect(to).await.expect("connect")
}

/// How many of `conns` the server closes (EOF or reset) within `within`.
async fn closed_within(conns: &mut [TcpStream], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let reads = conns.iter_mut().map(|c| async move {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout_at(deadline, c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|c| *c)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_bounded_and_starves_no_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud(dir.path());
    let token = k.token();
    let before = open_files(k.pid());
    let ports = [k.hub_port, k.join_port, k.port];
    let mut flood = Vec::new();
    for port in ports {
        for _ in 0..FLOOD {
            flood.push(connect_from("127.0.0.2", port).await);
        }
    }
    let started = Instant::now();
    let excess = ports.len() * (FLOOD - HELD_PER_ADDRESS);
    let closed = closed_within(&mut flood, Duration::from_secs(5)).await;
    assert_eq!(
        closed, excess,
        "the connections beyond the bound are closed at once"
    );
    let held = open_files(k.pid()) - before;
    assert!(
        held <= ports.len() * HELD_PER_ADDRESS + 50,
        "{held} descriptors held for the flood"
    );

    // Meanwhile, from another address: kubectl works and a new edge joins and gets Ready.
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let _edge = EdgeProc::start(&k, edge_dir.path(), "edge-a", &token);
    wait_until(
        Duration::from_secs(30),
        "edge-a Ready during the flood",
        || (k.node_ready("edge-a") == "True").then_some(()),
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "served before the flood's handshake deadline ran out"
    );

    // The handshake deadline (10 s) closes the rest.
    let closed = closed_within(&mut flood, Duration::from_secs(15)).await;
    assert_eq!(
        closed,
        flood.len(),
        "every flood connection closed by the deadline"
    );
    drop(flood);
    wait_until(Duration::from_secs(10), "descriptors freed", || {
        (open_files(k.pid()) < before + 50).then_some(())
    });
}
