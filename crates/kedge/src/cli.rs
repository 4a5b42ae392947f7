//! Command-line interface, thin over the library crates. Every default lives in the components'
//! settings types (`kedge_cloud::config::Settings`, `kedge_edge::config::Settings`): flags are
//! optional, win over a `--config` file when given, and `--help` shows the defaults those types
//! hold.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};

use kedge_cloud::config::{Resolved, Settings as CloudSettings};
use kedge_core::settings::Layered;
use kedge_edge::config::Settings as EdgeSettings;

#[derive(Parser)]
#[command(
    name = "kedge",
    version,
    about = "Cloud-edge collaboration for Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on loopback in one process: the cloud (with its embedded Kubernetes API),
    /// one edge node and the MQTT broker.
    Up(UpArgs),
    /// The cloud side: CloudHub, controllers, router, and the embedded Kubernetes API.
    Cloud(CloudArgs),
    /// The edge side: EdgeHub, MetaManager, DeviceTwin, EventBus, ServiceBus, Edged.
    Edge(EdgeArgs),
    /// Print a join token for an edge node: `<sha256 of the CA>.<JWT>`.
    Token(TokenArgs),
    /// Demo devices: the seed's counter (MQTT) and a mapper of virtual devices (DMI).
    #[command(subcommand)]
    Demo(Demo),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum Demo {
    /// The seed's counter: counts once a second while its desired `status` is ON.
    Counter(CounterArgs),
    /// A DMI mapper of virtual devices (v1beta1): registers with the edge, takes the devices
    /// of its protocol, reports changing values and follows desired ones.
    Mapper(MapperArgs),
}

#[derive(Args)]
struct MapperArgs {
    /// The edge's DMI socket (`kedge edge --dmi-socket`; by default `<edge data dir>/dmi.sock`).
    #[arg(long, default_value = "./kedge-edge-data/dmi.sock")]
    dmi_socket: PathBuf,
    /// This mapper's own socket, where the edge calls it.
    #[arg(long, default_value = "./kedge-demo-mapper.sock")]
    socket: PathBuf,
    /// The protocol it serves (`spec.protocol.protocolName` of its devices).
    #[arg(long, default_value = crate::demo::mapper::PROTOCOL)]
    protocol: String,
    /// Its name, as the edge records it.
    #[arg(long, default_value = "kedge-demo-mapper")]
    name: String,
}

#[derive(Args)]
struct CounterArgs {
    /// The edge's MQTT broker.
    #[arg(
        long,
        default_value = "mqtt://127.0.0.1:1883",
        env = "KEDGE_MQTT_URL",
        hide_env_values = true
    )]
    mqtt_url: String,
    /// The device, as `<namespace>/<name>`.
    #[arg(long, default_value = "default/counter")]
    device: String,
}

/// `kedge up`'s own defaults; the rest are the cloud's and the edge's.
const UP_NODE_NAME: &str = "kube-edge-1";
const UP_CRI_ENDPOINT: &str = "auto";

#[derive(Args)]
struct UpArgs {
    /// Where the cloud keeps its CA, API store and kubeconfig (the edge uses `<dir>/edge`).
    #[arg(long, env = "KEDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Name of the edge node `kedge up` runs.
    #[arg(long)]
    node_name: Option<String>,
    /// Port of the embedded Kubernetes API (HTTPS); 0 picks a free one.
    #[arg(long)]
    api_port: Option<u16>,
    /// Address the embedded Kubernetes API listens on.
    #[arg(long)]
    api_bind: Option<IpAddr>,
    /// CloudHub WebSocket port.
    #[arg(long)]
    hub_port: Option<u16>,
    /// Join (certificate) server port.
    #[arg(long)]
    https_port: Option<u16>,
    /// Router REST port.
    #[arg(long)]
    router_port: Option<u16>,
    /// Port of the edge's MQTT broker.
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1) for the cloud and the edge.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Port of the web dashboard (HTTPS on 127.0.0.1; sign in with the kubeconfig's token); 0
    /// picks a free one.
    #[arg(long)]
    dashboard_port: Option<u16>,
    /// Also create the seed's counter model and device, and run the counter on the edge.
    #[arg(long)]
    demo: bool,
    /// The unix socket DMI mappers register on [default: <data-dir>/edge/dmi.sock]; stock
    /// KubeEdge mappers expect /etc/kubeedge/dmi.sock.
    #[arg(long)]
    dmi_socket: Option<PathBuf>,
    /// Port (on 127.0.0.1) where edge apps call cloud apps through servicebus→rest rules.
    #[arg(long)]
    servicebus_port: Option<u16>,
    /// The embedded API's preferred devices.kubeedge.io version (v1alpha2 or v1beta1): the one
    /// kubectl uses when a command names none.
    #[arg(long)]
    device_api_version: Option<String>,
    /// The container runtime's CRI socket the edge runs pods with, or `none`; `auto`:
    /// containerd's socket if it exists, else none.
    #[arg(long)]
    cri_endpoint: Option<String>,
    /// First delay, in seconds, before a crashed container is restarted again (it doubles up to
    /// 300).
    #[arg(long = "restart-backoff")]
    restart_backoff_seconds: Option<u64>,
}

#[derive(Args)]
struct TokenArgs {
    /// The cloud's data directory.
    #[arg(long, env = "KEDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long the token is valid: a number with s, m, h or d.
    #[arg(long, default_value = "24h", value_parser = kedge_core::clock::parse_duration)]
    ttl: std::time::Duration,
    /// First replace the key tokens are signed with: every token issued before stops working,
    /// in a running cloud too (edges already joined keep their certificates).
    #[arg(long)]
    rotate: bool,
    /// Read the CA from the cluster in this kubeconfig (where `kedge cloud --kubeconfig`
    /// replicas keep it) instead of a data directory: a token every replica accepts.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Secret (NAMESPACE/NAME) the replicas keep the CA in.
    #[arg(long, default_value = kedge_cloud::config::DEFAULT_PKI_SECRET)]
    pki_secret: String,
}

#[derive(Args)]
struct CloudArgs {
    /// Settings from a YAML file (`--print-default-config` shows them all); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print every setting with its default and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(flatten)]
    flags: CloudFlags,
}

/// `kedge cloud`'s flags, named as its settings (`kedge_cloud::config::Settings`).
#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct CloudFlags {
    /// Where the cloud keeps its CA, API store and kubeconfig.
    #[arg(long, env = "KEDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Port of the embedded Kubernetes API (HTTPS); 0 picks a free one.
    #[arg(long)]
    api_port: Option<u16>,
    /// Address the embedded Kubernetes API listens on.
    #[arg(long)]
    api_bind: Option<IpAddr>,
    /// Use the Kubernetes cluster in this kubeconfig instead of the embedded API.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address CloudHub and the join server listen on.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// CloudHub WebSocket port (edges connect here).
    #[arg(long)]
    hub_port: Option<u16>,
    /// Join (certificate) server port.
    #[arg(long)]
    https_port: Option<u16>,
    /// Names or addresses edges use to reach this cloud (repeatable; go into its certificate).
    #[arg(long = "advertise-address")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    advertise_addresses: Vec<String>,
    /// Lifetime of the node certificates the cloud signs (edges renew them at 70–90 % of it).
    #[arg(long)]
    node_cert_ttl: Option<String>,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Address /metrics and /healthz listen on (loopback unless opened: a kubelet probes a
    /// pod's own address).
    #[arg(long)]
    metrics_bind: Option<IpAddr>,
    /// Router REST listener port (`/{node}/{namespace}/{path}`).
    #[arg(long)]
    router_port: Option<u16>,
    /// Address the router's REST listener listens on (loopback unless you open it: without
    /// `--router-token` anyone who reaches it can publish to edges).
    #[arg(long)]
    router_bind: Option<IpAddr>,
    /// Require `Authorization: Bearer <token>` on the router's REST listener (off by default, as
    /// in KubeEdge).
    #[arg(long, env = "KEDGE_ROUTER_TOKEN", hide_env_values = true)]
    router_token: Option<String>,
    /// How long an edge app has to answer a routed request: a number with s, m or h.
    #[arg(long)]
    router_timeout: Option<String>,
    /// The embedded API's preferred devices.kubeedge.io version (v1alpha2 or v1beta1): the one
    /// kubectl uses when a command names none.
    #[arg(long)]
    device_api_version: Option<String>,
    /// With `--kubeconfig`: serve the kubelet API for edge nodes to clients whose certificate
    /// this CA file signed (kube-apiserver's --kubelet-client-certificate), so `kubectl
    /// logs/exec/attach/port-forward` reach edge pods. Off unless given.
    #[arg(long)]
    kubelet_client_ca: Option<PathBuf>,
    /// Port of the kubelet API for edge nodes (their Nodes advertise it).
    #[arg(long)]
    kubelet_port: Option<u16>,
    /// The name or address kube-apiserver reaches this cloud by (default: the first
    /// --advertise-address); every edge Node's Hostname address.
    #[arg(long)]
    kubelet_address: Option<String>,
    /// Common name of a client certificate allowed to call the kubelet API (repeatable; default
    /// kube-apiserver-kubelet-client).
    #[arg(long = "kubelet-client-name")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kubelet_client_names: Vec<String>,
    /// With `--kubeconfig`: the Secret (NAMESPACE/NAME) every replica keeps the one CA and join
    /// token key in (default kedge/kedge-cloud-pki; "" keeps them in the data directory only).
    #[arg(long)]
    pki_secret: Option<String>,
    /// With `--kubeconfig`: port of the listener replicas call each other on (mutual TLS);
    /// router calls for a node another replica holds are forwarded there (0 picks one).
    #[arg(long)]
    peer_port: Option<u16>,
    /// The name or address other replicas reach this one by (default: the first
    /// --advertise-address).
    #[arg(long)]
    peer_address: Option<String>,
    /// Port of the web dashboard (HTTPS; sign in with a token the Kubernetes API accepts); 0
    /// picks a free one.
    #[arg(long)]
    dashboard_port: Option<u16>,
    /// Address the dashboard listens on (loopback unless opened).
    #[arg(long)]
    dashboard_bind: Option<IpAddr>,
}

#[derive(Args)]
struct EdgeArgs {
    /// Settings from a YAML file (`--print-default-config` shows them all); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print every setting with its default and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(flatten)]
    flags: EdgeFlags,
}

/// `kedge edge`'s flags, named as its settings (`kedge_edge::config::Settings`).
#[derive(Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct EdgeFlags {
    /// Where the edge keeps its identity and store.
    #[arg(long, env = "KEDGE_EDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This node's name.
    #[arg(long)]
    node_name: Option<String>,
    /// The cloud's host name or address; several replicas as HOST[:PORT],HOST[:PORT],... (PORT is
    /// CloudHub's): the edge starts at the one its name hashes to and fails over to the next.
    #[arg(long)]
    cloud: Option<String>,
    /// CloudHub WebSocket port.
    #[arg(long)]
    hub_port: Option<u16>,
    /// Join (certificate) server port.
    #[arg(long)]
    https_port: Option<u16>,
    /// Join token from `kedge token` (needed until the edge holds its certificate).
    #[arg(long, env = "KEDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Port of the embedded MQTT broker.
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// Address the embedded MQTT broker listens on.
    #[arg(long)]
    mqtt_bind: Option<IpAddr>,
    /// Use this MQTT broker instead of the embedded one: mqtt://[user:password@]host[:port],
    /// or mqtts://... for TLS.
    #[arg(long, env = "KEDGE_MQTT_URL", hide_env_values = true)]
    mqtt_url: Option<String>,
    /// For mqtts://: the CA (PEM) that signed the broker's certificate [default: system roots].
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// The container runtime's CRI socket, or `none` to run no pods.
    #[arg(long)]
    cri_endpoint: Option<String>,
    /// First delay, in seconds, before a crashed container is restarted again (it doubles up to
    /// 300).
    #[arg(long = "restart-backoff")]
    restart_backoff_seconds: Option<u64>,
    /// The unix socket DMI mappers register on [default: <data-dir>/dmi.sock]; stock KubeEdge
    /// mappers expect /etc/kubeedge/dmi.sock.
    #[arg(long)]
    dmi_socket: Option<PathBuf>,
    /// Port (on 127.0.0.1) where edge apps call cloud apps through servicebus→rest rules.
    #[arg(long)]
    servicebus_port: Option<u16>,
}

/// The command line, with each flag's help showing the default its settings type holds.
pub fn parse() -> Cli {
    let cloud = to_json(&CloudSettings::default());
    let edge = to_json(&EdgeSettings::default());
    let up = up_defaults(&cloud, &edge);
    let cmd = Cli::command()
        .mut_subcommand("cloud", |c| with_defaults(c, &cloud))
        .mut_subcommand("edge", |c| with_defaults(c, &edge))
        .mut_subcommand("up", |c| with_defaults(c, &up))
        .mut_subcommand("token", |c| with_defaults(c, &cloud));
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// `kedge up`'s defaults: the cloud's, the edge's broker and back-off, and its own.
fn up_defaults(cloud: &Value, edge: &Value) -> Value {
    let mut up = cloud.clone();
    if let Some(o) = up.as_object_mut() {
        for key in [
            "mqttPort",
            "restartBackoffSeconds",
            "dmiSocket",
            "servicebusPort",
        ] {
            o.insert(key.into(), edge[key].clone());
        }
        o.insert("nodeName".into(), json!(UP_NODE_NAME));
        o.insert("criEndpoint".into(), json!(UP_CRI_ENDPOINT));
    }
    up
}

/// Appends ` [default: …]` to the help of each flag whose setting has a non-empty default.
fn with_defaults(mut cmd: clap::Command, defaults: &Value) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let shown = match defaults.get(camel(&id)) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {shown}]"))
        });
    }
    cmd
}

/// `hub_port` → `hubPort`, as the settings types name their keys.
fn camel(id: &str) -> String {
    let mut out = String::new();
    for (i, part) in id.split('_').enumerate() {
        let mut chars = part.chars();
        match chars.next() {
            Some(c) if i > 0 => out.extend(c.to_uppercase().chain(chars)),
            Some(c) => out.extend(std::iter::once(c).chain(chars)),
            None => {}
        }
    }
    out
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(a) => up(a).await,
        Command::Cloud(a) => cloud(a).await,
        Command::Token(a) => token(a).await,
        Command::Edge(a) => edge(a).await,
        Command::Demo(Demo::Counter(a)) => {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                stop.send_replace(true);
            });
            crate::demo::counter(&a.mqtt_url, &a.device, stopped).await
        }
        Command::Demo(Demo::Mapper(a)) => {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                stop.send_replace(true);
            });
            let o = crate::demo::mapper::Options {
                dmi_socket: a.dmi_socket,
                socket: a.socket,
                name: a.name,
                protocol: a.protocol,
            };
            crate::demo::mapper::run(o, stopped).await
        }
        Command::Version => {
            println!("kedge {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

async fn token(a: TokenArgs) -> anyhow::Result<()> {
    if let Some(k) = &a.kubeconfig {
        let client = kube_client(k).await?;
        let at: kedge_cloud::pkisecret::SecretRef = a.pki_secret.parse()?;
        let read =
            |e| anyhow::anyhow!("{e}: start `kedge cloud --kubeconfig` on this cluster first");
        if a.rotate {
            kedge_cloud::pkisecret::rotate(&client, &at)
                .await
                .map_err(read)?;
            eprintln!(
                "join token key rotated: tokens issued before no longer work, on every replica"
            );
        }
        let ca = kedge_cloud::pkisecret::read(&client, &at)
            .await
            .map_err(read)?
            .ca()?;
        println!("{}", ca.token(a.ttl)?);
        return Ok(());
    }
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| CloudSettings::default().data_dir);
    let ca = kedge_pki::Ca::load_existing(&data_dir).with_context(|| {
        format!(
            "no cloud CA in {}: start `kedge cloud --data-dir {0}` (or `kedge up`) first",
            data_dir.display()
        )
    })?;
    if a.rotate {
        ca.rotate_token_key()?;
        eprintln!("join token key rotated: tokens issued before no longer work");
    }
    println!("{}", ca.token(a.ttl)?);
    Ok(())
}

/// The cloud, with the embedded API unless it uses a real cluster.
struct RunningCloud {
    api: Option<kedge_apiserver::ApiServer>,
    kubeconfig: PathBuf,
    client: kube::Client,
    cloud: kedge_cloud::Cloud,
    dashboard: kedge_cloud::dashboard::Dashboard,
}

impl RunningCloud {
    async fn shutdown(self) {
        self.dashboard.shutdown().await;
        self.cloud.shutdown().await;
        if let Some(api) = self.api {
            api.shutdown().await;
        }
    }
}

/// Starts the embedded API (or connects to the real cluster) and the cloud.
async fn start_cloud(r: &Resolved) -> anyhow::Result<RunningCloud> {
    // With the embedded API the controllers call it in-process; a real cluster over HTTPS.
    let (api, kubeconfig, client) = match (&r.kubeconfig, r.api) {
        (Some(k), _) => (None, k.clone(), kube_client(k).await?),
        (None, None) => anyhow::bail!("neither a kubeconfig nor the embedded API"),
        (None, Some(addr)) => {
            let mut cfg = kedge_apiserver::Config::new(&r.data_dir);
            cfg.bind = addr.ip();
            cfg.port = addr.port();
            cfg.preferred_versions = vec![(
                kedge_core::devices::GROUP.into(),
                r.device_api_version.clone(),
            )];
            let api = kedge_apiserver::start(cfg)
                .await
                .context("starting the Kubernetes API")?;
            let (k, c) = (api.kubeconfig.clone(), api.client());
            (Some(api), k, c)
        }
    };
    let cloud = kedge_cloud::start(cloud_config(r, api.as_ref()), client.clone())
        .await
        .context("starting the cloud")?;
    if let Some(api) = &api {
        // `kubectl logs/exec/attach/port-forward` reach edge pods through the hub sessions.
        api.api.set_streams(cloud.hub.clone());
    }
    // Users reach the API as themselves through the dashboard, as kubectl does: over HTTPS.
    let dashboard = kedge_cloud::dashboard::start(
        r.dashboard,
        &cloud.ca,
        &r.names,
        kube_config(&kubeconfig).await?,
        cloud.metrics(),
    )
    .await
    .context("starting the dashboard")?;
    Ok(RunningCloud {
        api,
        kubeconfig,
        client,
        cloud,
        dashboard,
    })
}

async fn kube_config(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

async fn kube_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(kubeconfig).await?)?)
}

fn cloud_config(
    r: &Resolved,
    api: Option<&kedge_apiserver::ApiServer>,
) -> kedge_cloud::CloudConfig {
    kedge_cloud::CloudConfig {
        data_dir: r.data_dir.clone(),
        bind: r.bind,
        hub_port: r.hub_port,
        https_port: r.https_port,
        names: r.names.clone(),
        hub: Default::default(),
        lifecycle: Default::default(),
        node_cert_ttl: r.node_cert_ttl,
        router: r.router.clone(),
        bulk: api
            .map(|a| Arc::new(EmbeddedBulk(a.api.clone())) as Arc<dyn kedge_cloud::bulk::Bulk>),
        workloads: api.is_some(),
        cloudstream: r.cloudstream.clone(),
        pki_secret: r.pki_secret.clone(),
        // Several replicas can share a real cluster; the embedded API has one cloud.
        replicas: r.replica.clone(),
    }
}

/// Lease renewals and sync records written straight into the embedded API's store, many per
/// commit.
struct EmbeddedBulk(Arc<kedge_apiserver::Api>);

impl std::fmt::Debug for EmbeddedBulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedBulk")
    }
}

impl kedge_cloud::bulk::Bulk for EmbeddedBulk {
    fn renew_leases(
        &self,
        nodes: &[String],
        spec_of: &dyn Fn(&str) -> serde_json::Value,
    ) -> Result<Vec<String>, String> {
        self.0
            .renew_node_leases(nodes, spec_of)
            .map_err(|e| e.message)
    }

    fn write_records(
        &self,
        records: &[kedge_core::delivery::RecordWrite],
    ) -> Result<Vec<Result<(), String>>, String> {
        self.0.write_records(records).map_err(|e| e.message)
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    // The cloud's settings, on loopback.
    let r = CloudSettings::default()
        .overlay(json!({
            "dataDir": a.data_dir, "apiPort": a.api_port, "apiBind": a.api_bind,
            "hubPort": a.hub_port, "httpsPort": a.https_port, "routerPort": a.router_port,
            "metricsPort": a.metrics_port, "bind": loopback, "routerBind": loopback,
            "dashboardPort": a.dashboard_port,
            "deviceApiVersion": a.device_api_version,
        }))?
        .resolve()?;
    let running = start_cloud(&r).await?;
    let cloud = &running.cloud;
    let node = a.node_name.unwrap_or_else(|| UP_NODE_NAME.to_string());
    let token = cloud.ca.token(std::time::Duration::from_secs(600))?;
    let cri = a
        .cri_endpoint
        .unwrap_or_else(|| UP_CRI_ENDPOINT.to_string());
    let mut edge_cfg = EdgeSettings::default()
        .overlay(json!({
            "dataDir": r.data_dir.join("edge"), "nodeName": node, "cloud": loopback.to_string(),
            "token": token, "mqttPort": a.mqtt_port, "mqttBind": loopback,
            "restartBackoffSeconds": a.restart_backoff_seconds,
            "criEndpoint": cri_endpoint_for_up(&cri), "dmiSocket": a.dmi_socket,
            "servicebusPort": a.servicebus_port,
        }))?
        .resolve()?;
    // The ports the cloud got (0 picks free ones).
    edge_cfg.hub_port = cloud.hub_addr.port();
    edge_cfg.https_port = cloud.join_addr.port();
    let edge = kedge_edge::start(edge_cfg)
        .await
        .context("starting the edge")?;
    let (cloud_m, edge_m) = (cloud.metrics(), edge.metrics());
    let both: kedge_http::metrics::Source = Arc::new(move || {
        let mut r = cloud_m();
        r.extend(edge_m());
        r
    });
    let metrics = serve_metrics((r.metrics_bind, r.metrics_port), both).await?;
    let demo = if a.demo {
        let (client, mqtt) = (&running.client, edge.mqtt.to_string());
        Some(start_demo(client, &mqtt, &node, &edge.dmi_socket).await?)
    } else {
        None
    };
    print_up(&running, &edge, &node, metrics, a.demo)?;
    wait_for_signal().await;
    // The edge leaves first, so nothing reports the cloud as lost.
    if let Some(d) = demo {
        d.stop().await;
    }
    edge.shutdown().await;
    running.shutdown().await;
    Ok(())
}

fn print_up(
    running: &RunningCloud,
    edge: &kedge_edge::Edge,
    node: &str,
    metrics: std::net::SocketAddr,
    demo: bool,
) -> anyhow::Result<()> {
    let cloud = &running.cloud;
    let api_url = running
        .api
        .as_ref()
        .map(|a| a.url.clone())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "kedge is up")?;
    writeln!(out, "  Kubernetes API: {api_url}")?;
    writeln!(out, "  kubeconfig:     {}", running.kubeconfig.display())?;
    writeln!(out, "  CloudHub:       wss://{}", cloud.hub_addr)?;
    writeln!(out, "  join server:    https://{}", cloud.join_addr)?;
    writeln!(out, "  edge node:      {node}")?;
    writeln!(out, "  pods run with:  {}", edge.cri_endpoint)?;
    writeln!(out, "  MQTT broker:    {}", edge.mqtt)?;
    writeln!(out, "  DMI socket:     {}", edge.dmi_socket.display())?;
    writeln!(out, "  servicebus:     http://{}", edge.servicebus)?;
    writeln!(out, "  router:         http://{}", cloud.router_addr)?;
    writeln!(out, "  dashboard:      https://{}/", running.dashboard.addr)?;
    writeln!(out, "  metrics:        http://{metrics}/metrics")?;
    writeln!(out, "Next:")?;
    writeln!(out, "  export KUBECONFIG={}", running.kubeconfig.display())?;
    writeln!(out, "  kubectl get nodes")?;
    writeln!(
        out,
        "  # the dashboard signs in with the kubeconfig's token (its certificate is the cloud CA's):"
    )?;
    writeln!(
        out,
        "  kubectl config view --raw -o jsonpath='{{.users[0].user.token}}'"
    )?;
    if demo {
        writeln!(
            out,
            "  # the demo counter runs on the edge; switch it on and watch it count:"
        )?;
        writeln!(
            out,
            "  kubectl patch device counter --type=json -p '{DEMO_ON}'"
        )?;
        writeln!(
            out,
            "  kubectl get device counter -o jsonpath='{{.status.twins[0].reported.value}}'"
        )?;
        writeln!(
            out,
            "  # the demo mapper (DMI) serves virtual-sensor (v1beta1); watch its reports:"
        )?;
        writeln!(out, "  kubectl get devicestatus virtual-sensor -w")?;
        writeln!(
            out,
            "  kubectl patch devices.v1beta1.devices.kubeedge.io virtual-sensor --type=json -p '{DEMO_LEVEL}'"
        )?;
    } else {
        writeln!(
            out,
            "  kubectl apply -f examples/devicemodel-counter.yaml -f examples/device-counter.yaml"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The JSON patch that sets the virtual sensor's desired level to 50.
const DEMO_LEVEL: &str =
    r#"[{"op":"replace","path":"/spec/properties/1/desired/value","value":"50"}]"#;

/// The JSON patch that sets the counter's desired status to ON.
const DEMO_ON: &str = r#"[{"op":"replace","path":"/status/twins/0/desired/value","value":"ON"}]"#;

/// The seed's manifests and the DMI demo's, built in so `kedge up --demo` works from any
/// directory.
const DEMO_MANIFESTS: [&str; 4] = [
    include_str!("../../../examples/devicemodel-counter.yaml"),
    include_str!("../../../examples/device-counter.yaml"),
    include_str!("../../../examples/v1beta1/devicemodel-virtual.yaml"),
    include_str!("../../../examples/v1beta1/device-virtual.yaml"),
];

/// The running demo devices.
struct DemoCounter {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DemoCounter {
    async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
        }
    }
}

/// A demo manifest bound to `node`, with the resource it is created through.
fn demo_object(
    text: &str,
    node: &str,
) -> anyhow::Result<(kube::api::DynamicObject, kube::discovery::ApiResource)> {
    use kube::core::GroupVersionKind;
    let mut obj: serde_json::Value = serde_saphyr::from_str(text).context("demo manifest")?;
    if let Some(values) =
        obj.pointer_mut("/spec/nodeSelector/nodeSelectorTerms/0/matchExpressions/0/values")
    {
        *values = serde_json::json!([node]);
    }
    if let Some(n) = obj.pointer_mut("/spec/nodeName") {
        *n = serde_json::json!(node);
    }
    let version = kedge_core::devices::version_of(&obj).to_string();
    let obj: kube::api::DynamicObject = serde_json::from_value(obj)?;
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let plural = format!("{}s", kind.to_lowercase());
    let gvk = GroupVersionKind::gvk(kedge_core::devices::GROUP, &version, &kind);
    Ok((
        obj,
        kube::discovery::ApiResource::from_gvk_with_plural(&gvk, &plural),
    ))
}

/// Creates the demo models and devices (bound to `node`) unless they exist, and runs the
/// counter (MQTT) and the mapper (DMI, on the edge's socket `dmi`).
async fn start_demo(
    client: &kube::Client,
    broker: &str,
    node: &str,
    dmi: &std::path::Path,
) -> anyhow::Result<DemoCounter> {
    use kube::api::{Api, DynamicObject, PostParams};
    for text in DEMO_MANIFESTS {
        let (obj, ar) = demo_object(text, node)?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context(format!("creating the demo {}", ar.kind)),
        }
    }
    let broker = broker.to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let counter_stopped = stopped.clone();
    let counter = tokio::spawn(async move {
        if let Err(e) = crate::demo::counter(&broker, "default/counter", counter_stopped).await {
            tracing::error!(error = %e, "demo counter stopped");
        }
    });
    let o = crate::demo::mapper::Options {
        socket: dmi.with_file_name("demo-mapper.sock"),
        dmi_socket: dmi.to_path_buf(),
        name: "kedge-demo-mapper".into(),
        protocol: crate::demo::mapper::PROTOCOL.into(),
    };
    let mapper = tokio::spawn(async move {
        if let Err(e) = crate::demo::mapper::run(o, stopped).await {
            tracing::error!(error = %e, "demo mapper stopped");
        }
    });
    Ok(DemoCounter {
        stop,
        tasks: vec![counter, mapper],
    })
}

async fn cloud(a: CloudArgs) -> anyhow::Result<()> {
    if a.print_default_config {
        print!("{}", kedge_cloud::config::default_yaml());
        return Ok(());
    }
    let file = match &a.config {
        Some(p) => CloudSettings::read(p)?,
        None => CloudSettings::default(),
    };
    let r = file.overlay(to_json(&a.flags))?.resolve()?;
    let running = start_cloud(&r).await?;
    let cloud = &running.cloud;
    println!("kedge cloud");
    println!(
        "  Kubernetes API: {}",
        running
            .api
            .as_ref()
            .map_or_else(|| "(external)".to_string(), |a| a.url.clone())
    );
    println!("  kubeconfig:     {}", running.kubeconfig.display());
    println!("  CloudHub:       wss://{}", cloud.hub_addr);
    println!("  join server:    https://{}", cloud.join_addr);
    println!("  router:         http://{}", cloud.router_addr);
    if let Some((addr, ep)) = &cloud.cloudstream {
        println!(
            "  kubelet API:    https://{addr} (edge Nodes advertise {}:{})",
            ep.address, ep.port
        );
    }
    if let Some((addr, me)) = &cloud.replica {
        let reached = me.peer.as_deref().unwrap_or("nowhere: give --peer-address");
        println!(
            "  peer listener:  https://{addr} (replica {}, reached at {reached})",
            me.id
        );
    }
    println!("  dashboard:      https://{}/", running.dashboard.addr);
    let metrics = serve_metrics((r.metrics_bind, r.metrics_port), cloud.metrics()).await?;
    println!("  metrics:        http://{metrics}/metrics");
    let token = match (&r.kubeconfig, &r.pki_secret) {
        (Some(k), Some(at)) => format!("--kubeconfig {} --pki-secret {at}", k.display()),
        _ => format!("--data-dir {}", r.data_dir.display()),
    };
    println!(
        "  join an edge:   kedge edge --node-name NODE --cloud HOST --token $(kedge token {token})"
    );
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

/// `kedge up`'s runtime: with `auto`, containerd when this machine runs it, else no pods (so
/// the all-in-one demo works, Ready, on a machine without containerd).
fn cri_endpoint_for_up(flag: &str) -> String {
    use kedge_edge::edged::{NO_RUNTIME, cri};
    if flag != "auto" {
        return flag.into();
    }
    let present = cri::socket_path(cri::DEFAULT_ENDPOINT).is_ok_and(|p| p.exists());
    if present {
        cri::DEFAULT_ENDPOINT.into()
    } else {
        NO_RUNTIME.into()
    }
}

async fn edge(a: EdgeArgs) -> anyhow::Result<()> {
    if a.print_default_config {
        print!("{}", kedge_edge::config::default_yaml());
        return Ok(());
    }
    let file = match &a.config {
        Some(p) => EdgeSettings::read(p)?,
        None => EdgeSettings::default(),
    };
    let cfg = file.overlay(to_json(&a.flags))?.resolve()?;
    let (node, cloud, metrics_port) = (cfg.node.clone(), cfg.cloud.clone(), cfg.metrics_port);
    let edge = kedge_edge::start(cfg).await.context("starting the edge")?;
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let metrics = serve_metrics((loopback, metrics_port), edge.metrics()).await?;
    tokio::spawn(trim_when_up(edge.hub.connected()));
    println!("kedge edge: node {node} → cloud {cloud}");
    println!("  MQTT broker:    {}", edge.mqtt);
    println!("  DMI socket:     {}", edge.dmi_socket.display());
    println!("  servicebus:     http://{}", edge.servicebus);
    println!("  metrics:        http://{metrics}/metrics");
    wait_for_signal().await;
    edge.shutdown().await;
    Ok(())
}

/// Once the edge is connected (or has tried for a minute) and a moment has passed, gives back
/// the code pages only start-up used (`trim`): an idle edge keeps 6.5–9.7 MiB instead of 15.
async fn trim_when_up(mut connected: tokio::sync::watch::Receiver<bool>) {
    let up = connected.wait_for(|c| *c);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), up).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    match tokio::task::spawn_blocking(crate::trim::startup_pages).await {
        Ok(Ok(bytes)) => tracing::debug!(bytes, "start-up pages given back"),
        Ok(Err(e)) => tracing::debug!(error = %e, "start-up pages kept (madvise)"),
        Err(e) => tracing::debug!(error = %e, "start-up pages kept"),
    }
}

/// Serves `/metrics` and `/healthz` on `(address, port)` (port 0 picks one).
async fn serve_metrics(
    (ip, port): (IpAddr, u16),
    source: kedge_http::metrics::Source,
) -> anyhow::Result<std::net::SocketAddr> {
    let addr = std::net::SocketAddr::new(ip, port);
    Ok(kedge_http::metrics::serve(addr, source).await?)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_ids_name_their_settings() {
        assert_eq!(camel("hub_port"), "hubPort");
        assert_eq!(camel("restart_backoff_seconds"), "restartBackoffSeconds");
        assert_eq!(camel("bind"), "bind");
        // Every flag of `kedge cloud` and `kedge edge` is a setting of its type (so a flag
        // given wins over the file, and its help shows the right default).
        let cloud = to_json(&CloudSettings::default());
        let edge = to_json(&EdgeSettings::default());
        for (name, defaults) in [("cloud", &cloud), ("edge", &edge)] {
            let cmd = Cli::command();
            let sub = cmd.find_subcommand(name).expect("subcommand");
            for a in sub.get_arguments() {
                let id = a.get_id().as_str();
                if ["config", "print_default_config", "help"].contains(&id) {
                    continue;
                }
                assert!(
                    defaults.get(camel(id)).is_some(),
                    "{name} --{id} is no setting"
                );
            }
        }
        let up = up_defaults(&cloud, &edge);
        let cmd = Cli::command();
        for a in cmd.find_subcommand("up").expect("up").get_arguments() {
            let id = a.get_id().as_str();
            if !["demo", "help"].contains(&id) {
                assert!(up.get(camel(id)).is_some(), "up --{id} has no default");
            }
        }
    }

    #[test]
    fn help_shows_the_settings_defaults() {
        let cloud = to_json(&CloudSettings::default());
        let mut cmd = with_defaults(
            Cli::command()
                .find_subcommand("cloud")
                .expect("cloud")
                .clone(),
            &cloud,
        );
        let help = cmd.render_help().to_string();
        assert!(help.contains("[default: 10000]"), "{help}");
        assert!(help.contains("[default: 365d]"), "{help}");
    }
}
