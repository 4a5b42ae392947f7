//! `kedge-bench`: measures a real `kedge` process over real connections.
//!
//! `kedge-bench api` starts `kedge up` in a scratch directory and measures the embedded
//! Kubernetes API with kube-rs: creates/s, list latency with many Devices, watch fan-out
//! latency, and the server's memory. `kedge-bench twins` drives device twins through it end to
//! end with a real MQTT client. `kedge-bench hollow-edges` connects thousands of simulated edge
//! nodes to a real `kedge cloud`; `kedge-bench edge` times one real `kedge edge` from launch to
//! connected and reads its memory with and without devices.

mod api;
mod dashboard;
mod dmi;
mod edge;
mod hollow;
mod pods;
mod router;
mod state;
mod stats;
mod streams;
mod twins;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kedge-bench", about = "kedge's load tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded Kubernetes API: creates, lists, watch fan-out, memory.
    Api(api::Args),
    /// Device twins end to end: desired → MQTT delta, MQTT report → Device status, throughput.
    Twins(twins::Args),
    /// DMI mappers: report → DeviceStatus, desired → UpdateDevice, reports/s through one edge.
    Dmi(dmi::Args),
    /// The router end to end: rest → eventbus (HTTP → MQTT) and servicebus round trips.
    Router(router::Args),
    /// N simulated edge nodes (real wss + mTLS sessions) against a real `kedge cloud`.
    HollowEdges(hollow::Args),
    /// One real `kedge edge`: time from launch to connected, idle memory with and without devices.
    Edge(edge::Args),
    /// Pod start latency on a real container runtime (create → Running and Ready in the API).
    Pods(pods::Args),
    /// `kubectl exec/port-forward/logs -f` to an edge pod beside the runtime directly, and twin
    /// latency while 50 `logs -f` and a 100 MiB `cp` loop run.
    Streams(streams::Args),
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Api(a) => rt.block_on(api::run(a)),
        Command::Twins(a) => rt.block_on(twins::run(a)),
        Command::Dmi(a) => rt.block_on(dmi::run(a)),
        Command::Router(a) => rt.block_on(router::run(a)),
        Command::Pods(a) => rt.block_on(pods::run(a)),
        Command::Streams(a) => rt.block_on(streams::run(a)),
        Command::HollowEdges(a) => rt.block_on(hollow::run(a)),
        Command::Edge(a) => rt.block_on(edge::run(a)),
    }
}
