//! The edge's settings: every one with its default, written once here (`Settings::default`).
//! `kedge edge --print-default-config` prints them ([`default_yaml`]), `--config FILE` reads
//! them from YAML (unknown keys are an error, so a typo is reported instead of ignored), and
//! flags given on the command line win over the file ([`Settings::overlay`]). [`EdgeConfig`]
//! is what the edge runs with, resolved from them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kedge_core::settings::{Layered, Secret, SettingsError, commented_yaml};
use serde::{Deserialize, Serialize};

/// Every setting of `kedge edge`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub node_name: String,
    pub cloud: String,
    pub hub_port: u16,
    pub https_port: u16,
    pub token: Secret,
    pub heartbeat_seconds: u64,
    pub status_seconds: u64,
    pub metrics_port: u16,
    pub mqtt_port: u16,
    pub mqtt_bind: IpAddr,
    pub mqtt_url: Secret,
    pub mqtt_ca: PathBuf,
    pub cri_endpoint: String,
    pub restart_backoff_seconds: u64,
    pub dmi_socket: PathBuf,
    pub servicebus_port: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: "./kedge-edge-data".into(),
            node_name: String::new(),
            cloud: String::new(),
            hub_port: 10000,
            https_port: 10002,
            token: Secret::default(),
            heartbeat_seconds: crate::edgehub::client::DEFAULT_HEARTBEAT.as_secs(),
            status_seconds: 10,
            metrics_port: 10351,
            // The port devices expect.
            mqtt_port: 1883,
            mqtt_bind: IpAddr::from([127, 0, 0, 1]),
            mqtt_url: Secret::default(),
            mqtt_ca: PathBuf::new(),
            cri_endpoint: crate::edged::cri::DEFAULT_ENDPOINT.into(),
            // kubelet's first CrashLoopBackOff delay.
            restart_backoff_seconds: 10,
            dmi_socket: PathBuf::new(),
            // KubeEdge's serviceBus port.
            servicebus_port: 9060,
        }
    }
}

/// What each setting does, in the order `--print-default-config` shows them.
const DOCS: [(&str, &str); 17] = [
    (
        "dataDir",
        "Where the edge keeps its identity (pki/) and its store.",
    ),
    ("nodeName", "This node's name (a DNS subdomain). Required."),
    (
        "cloud",
        "The cloud's host name or address. Required. Several replicas: HOST[:PORT],HOST[:PORT],...\n\
         (PORT is CloudHub's, default hubPort); the edge starts at the one its name hashes to\n\
         and moves to the next when one fails.",
    ),
    ("hubPort", "CloudHub WebSocket port."),
    ("httpsPort", "The cloud's join (certificate) server port."),
    (
        "token",
        "Join token from `kedge token`, needed only until the edge holds its certificate.\n\
         Prefer the KEDGE_TOKEN environment variable, which keeps the token out of files.",
    ),
    (
        "heartbeatSeconds",
        "Keepalive period, in seconds (KubeEdge: 15). Hearing nothing from the cloud for this\n\
         long, the edge pings it, and reconnects when 10 s more pass in silence.",
    ),
    (
        "statusSeconds",
        "How often the node renews its Lease, in seconds (its full status goes when it changes,\n\
         and every 5 minutes, as kubelet does).",
    ),
    (
        "metricsPort",
        "Port of /metrics and /healthz (plain HTTP on 127.0.0.1).",
    ),
    (
        "mqttPort",
        "The embedded MQTT broker devices and apps use (MQTT 3.1.1), and the address it listens\n\
         on (loopback: only this host; 0.0.0.0 to let devices on the network in).",
    ),
    ("mqttBind", ""),
    (
        "mqttUrl",
        "An external broker instead of the embedded one: mqtt://[user:password@]host[:port], or\n\
         mqtts://... for TLS. Prefer the KEDGE_MQTT_URL environment variable when it carries a\n\
         password.",
    ),
    (
        "mqttCa",
        "For mqtts://: PEM file of the CA that signed the broker's certificate (default: system\n\
         roots).",
    ),
    (
        "criEndpoint",
        "The container runtime's CRI socket (containerd's by default); \"none\" runs no pods (a\n\
         node for devices and messages only).",
    ),
    (
        "restartBackoffSeconds",
        "First delay before a crashed container is restarted again, in seconds; it doubles up\n\
         to 300.",
    ),
    (
        "dmiSocket",
        "The unix socket DMI mappers register and report on (empty: <dataDir>/dmi.sock). Stock\n\
         KubeEdge mappers expect /etc/kubeedge/dmi.sock.",
    ),
    (
        "servicebusPort",
        "Where edge apps call cloud apps (servicebus→rest rules), on 127.0.0.1: POST\n\
         {\"method\",\"targetURL\",\"payload\"} as with KubeEdge; 0 picks a free port.",
    ),
];

/// What `kedge edge --print-default-config` prints: every setting, its default, and what it
/// does. It reads back as [`Settings::default`].
pub fn default_yaml() -> String {
    commented_yaml(
        "kedge edge configuration. Every setting is also a flag of `kedge edge`; flags win.",
        &Settings::default(),
        &DOCS,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{0} is required (as a flag or in the config file)")]
    Missing(&'static str),
    #[error("{0} must be at least 1 second")]
    Zero(&'static str),
    #[error(transparent)]
    MqttUrl(#[from] crate::eventbus::UrlError),
    #[error("cloud (--cloud): {0}")]
    Cloud(#[from] crate::edgehub::servers::ServersError),
}

impl Layered for Settings {}

impl Settings {
    /// What the edge runs with; node name and cloud are required.
    pub fn resolve(self) -> Result<EdgeConfig, ConfigError> {
        if self.node_name.is_empty() {
            return Err(ConfigError::Missing("nodeName (--node-name)"));
        }
        if self.cloud.is_empty() {
            return Err(ConfigError::Missing("cloud (--cloud)"));
        }
        crate::edgehub::servers::parse(&self.cloud, self.hub_port)?;
        let secs = |s: u64, name| match s {
            0 => Err(ConfigError::Zero(name)),
            s => Ok(Duration::from_secs(s)),
        };
        let mqtt = match self.mqtt_url.0.as_str() {
            "" => Mqtt::Embedded(SocketAddr::new(self.mqtt_bind, self.mqtt_port)),
            url => {
                let mut b = crate::eventbus::parse_url(url)?;
                b.ca = Some(self.mqtt_ca).filter(|p| !p.as_os_str().is_empty());
                Mqtt::External(b)
            }
        };
        let cri_endpoint = match self.cri_endpoint.as_str() {
            "" => Settings::default().cri_endpoint,
            e => e.to_string(),
        };
        Ok(EdgeConfig {
            node: self.node_name,
            cloud: self.cloud,
            hub_port: self.hub_port,
            https_port: self.https_port,
            token: self.token.0,
            heartbeat: secs(self.heartbeat_seconds, "heartbeatSeconds")?,
            status_every: secs(self.status_seconds, "statusSeconds")?,
            metrics_port: self.metrics_port,
            mqtt,
            cri_endpoint,
            restart_backoff: secs(self.restart_backoff_seconds, "restartBackoffSeconds")?,
            dmi_socket: match self.dmi_socket.as_os_str().is_empty() {
                true => self.data_dir.join("dmi.sock"),
                false => self.dmi_socket,
            },
            servicebus: SocketAddr::from(([127, 0, 0, 1], self.servicebus_port)),
            data_dir: self.data_dir,
        })
    }
}

/// What the edge runs with.
#[derive(Clone)]
pub struct EdgeConfig {
    pub data_dir: PathBuf,
    pub node: String,
    /// The cloud's host name or address, or several (`HOST[:PORT],...`; see [`EdgeConfig::clouds`]).
    pub cloud: String,
    pub hub_port: u16,
    pub https_port: u16,
    /// Join token; needed only until the edge holds a certificate.
    pub token: String,
    /// Keepalive period.
    pub heartbeat: Duration,
    /// How often the node's Lease is renewed (its status goes on change, or every 5 min).
    pub status_every: Duration,
    /// Port of `/metrics` and `/healthz` (served by the binary on loopback).
    pub metrics_port: u16,
    /// The unix socket DMI mappers use.
    pub dmi_socket: PathBuf,
    /// Where ServiceBus takes edge apps' servicebus→rest requests (loopback).
    pub servicebus: SocketAddr,
    /// The MQTT broker devices and apps use.
    pub mqtt: Mqtt,
    /// The CRI runtime's socket, or `none` (no pods).
    pub cri_endpoint: String,
    /// First CrashLoopBackOff delay.
    pub restart_backoff: Duration,
}

/// Where the edge's MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mqtt {
    /// kedge's embedded broker, listening here (port 0 picks one).
    Embedded(SocketAddr),
    /// A broker the user runs (mosquitto, say).
    External(crate::eventbus::BrokerAddr),
}

impl std::fmt::Debug for EdgeConfig {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("data_dir", &self.data_dir)
            .field("node", &self.node)
            .field("cloud", &self.cloud)
            .field("hub_port", &self.hub_port)
            .field("https_port", &self.https_port)
            .field("token", &Secret(self.token.clone()))
            .field("heartbeat", &self.heartbeat)
            .field("status_every", &self.status_every)
            .field("metrics_port", &self.metrics_port)
            .field("mqtt", &self.mqtt_display())
            .field("cri_endpoint", &self.cri_endpoint)
            .field("restart_backoff", &self.restart_backoff)
            .field("dmi_socket", &self.dmi_socket)
            .field("servicebus", &self.servicebus)
            .finish()
    }
}

impl EdgeConfig {
    /// The default settings for `node`, except three that suit tests and embedding: the
    /// embedded broker and ServiceBus on free loopback ports, and no container runtime.
    pub fn new(data_dir: impl Into<PathBuf>, node: &str, cloud: &str, token: &str) -> EdgeConfig {
        let s = Settings {
            data_dir: data_dir.into(),
            node_name: node.into(),
            cloud: cloud.into(),
            token: Secret(token.into()),
            mqtt_port: 0,
            servicebus_port: 0,
            cri_endpoint: crate::edged::NO_RUNTIME.into(),
            ..Settings::default()
        };
        // Non-empty names and non-zero periods: the defaults resolve.
        match s.resolve() {
            Ok(cfg) => cfg,
            Err(e) => unreachable!("the default edge settings resolve: {e}"),
        }
    }

    /// The broker, without its password.
    pub fn mqtt_display(&self) -> String {
        match &self.mqtt {
            Mqtt::Embedded(a) => format!("embedded on {a}"),
            Mqtt::External(b) => b.to_string(),
        }
    }

    /// The cloud replicas `cloud` lists (`HOST[:PORT][,HOST[:PORT]...]`, PORT CloudHub's).
    pub fn clouds(&self) -> Result<Vec<crate::edgehub::servers::Cloud>, ConfigError> {
        Ok(crate::edgehub::servers::parse(&self.cloud, self.hub_port)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn the_printed_default_reads_back_as_the_default() {
        let printed = default_yaml();
        let parsed = Settings::parse(&printed, Path::new("default")).expect("parses");
        assert_eq!(parsed, Settings::default());
        let keys: Vec<String> = serde_json::to_value(Settings::default())
            .expect("json")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        let documented: Vec<&str> = DOCS.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, documented, "every setting printed, in order");
    }

    #[test]
    fn flags_win_typos_and_gaps_are_errors() {
        let file =
            Settings::parse("nodeName: a\ncloud: c\nhubPort: 1\n", Path::new("f")).expect("parses");
        let cfg = file
            .overlay(json!({"hubPort": 2, "httpsPort": null}))
            .expect("overlay")
            .resolve()
            .expect("ok");
        assert_eq!((cfg.hub_port, cfg.https_port), (2, 10002));
        let typo = Settings::parse("nodename: a\n", Path::new("f")).expect_err("unknown key");
        assert!(typo.to_string().contains("nodename"), "{typo}");
        let missing = Settings::default().resolve().expect_err("missing");
        assert!(missing.to_string().contains("nodeName"), "{missing}");
        let zero = Settings::parse(
            "nodeName: a\ncloud: c\nheartbeatSeconds: 0\n",
            Path::new("f"),
        )
        .expect("parses");
        assert!(zero.resolve().is_err());
        let external = Settings::parse(
            "nodeName: a\ncloud: c\nmqttUrl: mqtt://u:pw@broker:1884\n",
            Path::new("f"),
        )
        .expect("parses");
        assert!(
            !format!("{external:?}").contains("pw"),
            "no password in logs"
        );
        let external = external.resolve().expect("ok");
        assert!(matches!(&external.mqtt, Mqtt::External(b) if b.port == 1884));
        assert!(
            !format!("{external:?}").contains("pw"),
            "no password in logs"
        );
        let bad = Settings::parse("nodeName: a\ncloud: c\nmqttUrl: http://x\n", Path::new("f"))
            .expect("parses")
            .resolve()
            .expect_err("bad URL");
        assert!(bad.to_string().contains("mqtt://"), "{bad}");
    }

    #[test]
    fn the_token_never_prints() {
        let cfg = EdgeConfig::new("d", "n", "c", "s3cr3t.token");
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        let s = Settings {
            token: Secret("s3cr3t".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
