//! Command-line interface.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

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
    /// Demo devices that speak MQTT like real ones.
    #[command(subcommand)]
    Demo(Demo),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum Demo {
    /// The seed's counter: counts once a second while its desired `status` is ON.
    Counter(CounterArgs),
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

#[derive(Args, Clone)]
struct ApiArgs {
    /// Where the cloud keeps its CA, API store and kubeconfig.
    #[arg(long, default_value = "./kedge-data", env = "KEDGE_DATA_DIR")]
    data_dir: PathBuf,
    /// Port of the embedded Kubernetes API (HTTPS); 0 picks a free one.
    #[arg(long, default_value_t = 6443)]
    api_port: u16,
    /// Address the embedded Kubernetes API listens on.
    #[arg(long, default_value = "127.0.0.1")]
    api_bind: IpAddr,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Name of the edge node `kedge up` runs.
    #[arg(long, default_value = "kube-edge-1")]
    node_name: String,
    /// CloudHub WebSocket port.
    #[arg(long, default_value_t = 10000)]
    hub_port: u16,
    /// Join (certificate) server port.
    #[arg(long, default_value_t = 10002)]
    https_port: u16,
    /// Router REST port.
    #[arg(long, default_value_t = 9443)]
    router_port: u16,
    /// Port of the edge's MQTT broker.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1) for the cloud and the edge.
    #[arg(long, default_value_t = 9091)]
    metrics_port: u16,
    /// Also create the seed's counter model and device, and run the counter on the edge.
    #[arg(long)]
    demo: bool,
    /// The container runtime's CRI socket the edge runs pods with, or `none`; `auto`:
    /// containerd's socket if it exists, else none.
    #[arg(long, default_value = "auto")]
    cri_endpoint: String,
    /// First delay, in seconds, before a crashed container is restarted again (it doubles up to
    /// 300).
    #[arg(long, default_value_t = 10)]
    restart_backoff: u64,
}

#[derive(Args)]
struct TokenArgs {
    /// The cloud's data directory.
    #[arg(long, default_value = "./kedge-data", env = "KEDGE_DATA_DIR")]
    data_dir: PathBuf,
    /// How long the token is valid: a number with s, m, h or d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: std::time::Duration,
    /// First replace the key tokens are signed with: every token issued before stops working,
    /// in a running cloud too (edges already joined keep their certificates).
    #[arg(long)]
    rotate: bool,
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Args, Clone)]
struct HubArgs {
    /// CloudHub WebSocket port (edges connect here).
    #[arg(long, default_value_t = 10000)]
    hub_port: u16,
    /// Join (certificate) server port.
    #[arg(long, default_value_t = 10002)]
    https_port: u16,
    /// Lifetime of the node certificates the cloud signs (edges renew them at 70–90 % of it).
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    node_cert_ttl: std::time::Duration,
}

#[derive(Args)]
struct CloudArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    hub: HubArgs,
    /// Address CloudHub and the join server listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Names or addresses edges use to reach this cloud (repeatable; go into its certificate).
    #[arg(long = "advertise-address")]
    advertise: Vec<String>,
    /// Use the Kubernetes cluster in this kubeconfig instead of the embedded API.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1).
    #[arg(long, default_value_t = 9091)]
    metrics_port: u16,
    /// Router REST listener port (`/{node}/{namespace}/{path}`).
    #[arg(long, default_value_t = 9443)]
    router_port: u16,
    /// Address the router's REST listener listens on (loopback unless you open it: without
    /// `--router-token` anyone who reaches it can publish to edges).
    #[arg(long, default_value = "127.0.0.1")]
    router_bind: IpAddr,
    /// Require `Authorization: Bearer <token>` on the router's REST listener (off by default, as
    /// in KubeEdge).
    #[arg(long, env = "KEDGE_ROUTER_TOKEN", hide_env_values = true)]
    router_token: Option<String>,
    /// How long an edge app has to answer a routed request: a number with s, m or h.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    router_timeout: std::time::Duration,
}

#[derive(Args)]
struct EdgeArgs {
    /// Settings from a YAML file (`--print-default-config` shows them all); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print every setting with its default and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Where the edge keeps its identity and store [default: ./kedge-edge-data].
    #[arg(long, env = "KEDGE_EDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This node's name.
    #[arg(long)]
    node_name: Option<String>,
    /// The cloud's host name or address.
    #[arg(long)]
    cloud: Option<String>,
    /// CloudHub WebSocket port [default: 10000].
    #[arg(long)]
    hub_port: Option<u16>,
    /// Join (certificate) server port [default: 10002].
    #[arg(long)]
    https_port: Option<u16>,
    /// Join token from `kedge token` (needed until the edge holds its certificate).
    #[arg(long, env = "KEDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Port of /metrics and /healthz (plain HTTP on 127.0.0.1) [default: 10351].
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Port of the embedded MQTT broker [default: 1883].
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// Address the embedded MQTT broker listens on [default: 127.0.0.1].
    #[arg(long)]
    mqtt_bind: Option<IpAddr>,
    /// Use this MQTT broker instead of the embedded one: mqtt://[user:password@]host[:port],
    /// or mqtts://... for TLS.
    #[arg(long, env = "KEDGE_MQTT_URL", hide_env_values = true)]
    mqtt_url: Option<String>,
    /// For mqtts://: the CA (PEM) that signed the broker's certificate [default: system roots].
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// The container runtime's CRI socket, or `none` to run no pods
    /// [default: unix:///run/containerd/containerd.sock].
    #[arg(long)]
    cri_endpoint: Option<String>,
    /// First delay, in seconds, before a crashed container is restarted again (it doubles up to
    /// 300) [default: 10].
    #[arg(long)]
    restart_backoff: Option<u64>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(a) => up(a).await,
        Command::Cloud(a) => cloud(a).await,
        Command::Token(a) => token(a),
        Command::Edge(a) => edge(a).await,
        Command::Demo(Demo::Counter(a)) => crate::demo::counter(&a.mqtt_url, &a.device).await,
        Command::Version => {
            println!("kedge {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn token(a: TokenArgs) -> anyhow::Result<()> {
    let ca = kedge_pki::Ca::load_existing(&a.data_dir).with_context(|| {
        format!(
            "no cloud CA in {}: start `kedge cloud --data-dir {0}` (or `kedge up`) first",
            a.data_dir.display()
        )
    })?;
    if a.rotate {
        ca.rotate_token_key()?;
        eprintln!("join token key rotated: tokens issued before no longer work");
    }
    println!("{}", ca.token(a.ttl)?);
    Ok(())
}

async fn start_api(a: &ApiArgs) -> anyhow::Result<kedge_apiserver::ApiServer> {
    let mut cfg = kedge_apiserver::Config::new(&a.data_dir);
    cfg.bind = a.api_bind;
    cfg.port = a.api_port;
    kedge_apiserver::start(cfg)
        .await
        .context("starting the Kubernetes API")
}

async fn kube_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn cloud_config(
    data_dir: &std::path::Path,
    bind: IpAddr,
    hub: &HubArgs,
    names: Vec<String>,
    router: kedge_cloud::router::rest::RouterConfig,
    api: Option<&kedge_apiserver::ApiServer>,
) -> kedge_cloud::CloudConfig {
    kedge_cloud::CloudConfig {
        data_dir: data_dir.to_path_buf(),
        bind,
        hub_port: hub.hub_port,
        https_port: hub.https_port,
        names,
        hub: Default::default(),
        lifecycle: Default::default(),
        node_cert_ttl: hub.node_cert_ttl,
        router,
        leases: api.map(|a| {
            Arc::new(EmbeddedLeases(a.api.clone()))
                as Arc<dyn kedge_cloud::edgecontroller::leases::LeaseWriter>
        }),
    }
}

/// Node Lease renewals written straight into the embedded API's store, many per commit.
struct EmbeddedLeases(Arc<kedge_apiserver::Api>);

impl std::fmt::Debug for EmbeddedLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedLeases")
    }
}

impl kedge_cloud::edgecontroller::leases::LeaseWriter for EmbeddedLeases {
    fn renew(
        &self,
        nodes: &[String],
        spec_of: &dyn Fn(&str) -> serde_json::Value,
    ) -> Result<Vec<String>, String> {
        self.0
            .renew_node_leases(nodes, spec_of)
            .map_err(|e| e.message)
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    let api = start_api(&a.api).await?;
    let client = api.client();
    let hub_args = HubArgs {
        hub_port: a.hub_port,
        https_port: a.https_port,
        node_cert_ttl: kedge_pki::node::NODE_CERT_TTL,
    };
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let cloud = kedge_cloud::start(
        cloud_config(
            &a.api.data_dir,
            loopback,
            &hub_args,
            Vec::new(),
            kedge_cloud::router::rest::RouterConfig {
                addr: std::net::SocketAddr::new(loopback, a.router_port),
                ..Default::default()
            },
            Some(&api),
        ),
        client.clone(),
    )
    .await
    .context("starting the cloud")?;
    let token = cloud.ca.token(std::time::Duration::from_secs(600))?;
    let mut edge_cfg = kedge_edge::EdgeConfig::new(
        a.api.data_dir.join("edge"),
        &a.node_name,
        "127.0.0.1",
        &token,
    );
    edge_cfg.hub_port = cloud.hub_addr.port();
    edge_cfg.https_port = cloud.join_addr.port();
    edge_cfg.mqtt = kedge_edge::Mqtt::Embedded(std::net::SocketAddr::new(loopback, a.mqtt_port));
    edge_cfg.cri_endpoint = cri_endpoint_for_up(&a.cri_endpoint);
    edge_cfg.restart_backoff = std::time::Duration::from_secs(a.restart_backoff.max(1));
    let edge = kedge_edge::start(edge_cfg)
        .await
        .context("starting the edge")?;
    let (cloud_m, edge_m) = (cloud.metrics(), edge.metrics());
    let both: kedge_http::metrics::Source = std::sync::Arc::new(move || {
        let mut r = cloud_m();
        r.extend(edge_m());
        r
    });
    let metrics = serve_metrics(a.metrics_port, both).await?;
    if a.demo {
        start_demo(&client, &edge.mqtt.to_string(), &a.node_name).await?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "kedge is up")?;
    writeln!(out, "  Kubernetes API: {}", api.url)?;
    writeln!(out, "  kubeconfig:     {}", api.kubeconfig.display())?;
    writeln!(out, "  CloudHub:       wss://{}", cloud.hub_addr)?;
    writeln!(out, "  join server:    https://{}", cloud.join_addr)?;
    writeln!(out, "  edge node:      {}", a.node_name)?;
    writeln!(out, "  pods run with:  {}", edge.cri_endpoint)?;
    writeln!(out, "  MQTT broker:    {}", edge.mqtt)?;
    writeln!(out, "  router:         http://{}", cloud.router_addr)?;
    writeln!(out, "  metrics:        http://{metrics}/metrics")?;
    writeln!(out, "Next:")?;
    writeln!(out, "  export KUBECONFIG={}", api.kubeconfig.display())?;
    writeln!(out, "  kubectl get nodes")?;
    if a.demo {
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
    } else {
        writeln!(
            out,
            "  kubectl apply -f examples/devicemodel-counter.yaml -f examples/device-counter.yaml"
        )?;
    }
    out.flush()?;
    drop(out);
    wait_for_signal().await;
    cloud.shutdown().await;
    api.shutdown().await;
    Ok(())
}

/// The JSON patch that sets the counter's desired status to ON.
const DEMO_ON: &str = r#"[{"op":"replace","path":"/status/twins/0/desired/value","value":"ON"}]"#;

/// The seed's manifests, built in so `kedge up --demo` works from any directory.
const DEMO_MANIFESTS: [&str; 2] = [
    include_str!("../../../examples/devicemodel-counter.yaml"),
    include_str!("../../../examples/device-counter.yaml"),
];

/// Creates the counter model and device (bound to `node`) unless they exist, and runs the counter.
async fn start_demo(client: &kube::Client, broker: &str, node: &str) -> anyhow::Result<()> {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::ApiResource;
    for text in DEMO_MANIFESTS {
        let mut obj: serde_json::Value = serde_saphyr::from_str(text).context("demo manifest")?;
        if let Some(values) =
            obj.pointer_mut("/spec/nodeSelector/nodeSelectorTerms/0/matchExpressions/0/values")
        {
            *values = serde_json::json!([node]);
        }
        let obj: DynamicObject = serde_json::from_value(obj)?;
        let kind = obj
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let plural = format!("{}s", kind.to_lowercase());
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("devices.kubeedge.io", "v1alpha2", &kind),
            &plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context(format!("creating the demo {kind}")),
        }
    }
    let broker = broker.to_string();
    tokio::spawn(async move {
        if let Err(e) = crate::demo::counter(&broker, "default/counter").await {
            tracing::error!(error = %e, "demo counter stopped");
        }
    });
    Ok(())
}

async fn cloud(a: CloudArgs) -> anyhow::Result<()> {
    // With the embedded API the controllers call it in-process; a real cluster over HTTPS.
    let (api, kubeconfig, client) = match &a.kubeconfig {
        Some(k) => (None, k.clone(), kube_client(k).await?),
        None => {
            let api = start_api(&a.api).await?;
            let (k, c) = (api.kubeconfig.clone(), api.client());
            (Some(api), k, c)
        }
    };
    let cloud = kedge_cloud::start(
        cloud_config(
            &a.api.data_dir,
            a.bind,
            &a.hub,
            a.advertise.clone(),
            kedge_cloud::router::rest::RouterConfig {
                addr: std::net::SocketAddr::new(a.router_bind, a.router_port),
                token: a.router_token.clone(),
                timeout: a.router_timeout,
                ..Default::default()
            },
            api.as_ref(),
        ),
        client,
    )
    .await
    .context("starting the cloud")?;
    println!("kedge cloud");
    println!(
        "  Kubernetes API: {}",
        api.as_ref()
            .map_or_else(|| "(external)".to_string(), |a| a.url.clone())
    );
    println!("  kubeconfig:     {}", kubeconfig.display());
    println!("  CloudHub:       wss://{}", cloud.hub_addr);
    println!("  join server:    https://{}", cloud.join_addr);
    println!("  router:         http://{}", cloud.router_addr);
    let metrics = serve_metrics(a.metrics_port, cloud.metrics()).await?;
    println!("  metrics:        http://{metrics}/metrics");
    println!(
        "  join an edge:   kedge edge --node-name NODE --cloud HOST --token $(kedge token --data-dir {})",
        a.api.data_dir.display()
    );
    wait_for_signal().await;
    cloud.shutdown().await;
    if let Some(api) = api {
        api.shutdown().await;
    }
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
    use kedge_edge::config::{DEFAULT_CONFIG_YAML, FileConfig};
    if a.print_default_config {
        print!("{DEFAULT_CONFIG_YAML}");
        return Ok(());
    }
    let file = match &a.config {
        Some(p) => FileConfig::read(p)?,
        None => FileConfig::default(),
    };
    let flags = FileConfig {
        data_dir: a.data_dir,
        node_name: a.node_name,
        cloud: a.cloud,
        hub_port: a.hub_port,
        https_port: a.https_port,
        token: a.token,
        metrics_port: a.metrics_port,
        mqtt_port: a.mqtt_port,
        mqtt_bind: a.mqtt_bind,
        mqtt_url: a.mqtt_url,
        mqtt_ca: a.mqtt_ca,
        cri_endpoint: a.cri_endpoint,
        restart_backoff_seconds: a.restart_backoff,
        ..FileConfig::default()
    };
    let cfg = file.overlay(flags).resolve()?;
    let (node, cloud, metrics_port) = (cfg.node.clone(), cfg.cloud.clone(), cfg.metrics_port);
    let edge = kedge_edge::start(cfg).await.context("starting the edge")?;
    let metrics = serve_metrics(metrics_port, edge.metrics()).await?;
    println!("kedge edge: node {node} → cloud {cloud}");
    println!("  MQTT broker:    {}", edge.mqtt);
    println!("  metrics:        http://{metrics}/metrics");
    wait_for_signal().await;
    Ok(())
}

/// Serves `/metrics` and `/healthz` on 127.0.0.1:`port` (0 picks one).
async fn serve_metrics(
    port: u16,
    source: kedge_http::metrics::Source,
) -> anyhow::Result<std::net::SocketAddr> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
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
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
