//! `kedge edge --config FILE`: the edge's settings as YAML. Flags given on the command line win
//! over the file. Unknown keys are an error, so a typo is reported instead of ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::EdgeConfig;

/// What `kedge edge --print-default-config` prints: every setting, its default, and what it does.
pub const DEFAULT_CONFIG_YAML: &str = r#"# kedge edge configuration. Every setting is also a flag of `kedge edge`; flags win.
# Where the edge keeps its identity (pki/) and its store.
dataDir: ./kedge-edge-data
# This node's name (a DNS subdomain). Required.
nodeName: ""
# The cloud's host name or address. Required.
cloud: ""
# CloudHub WebSocket port.
hubPort: 10000
# The cloud's join (certificate) server port.
httpsPort: 10002
# Join token from `kedge token`, needed only until the edge holds its certificate.
# Prefer the KEDGE_TOKEN environment variable, which keeps the token out of files.
token: ""
# Keepalive period, in seconds (KubeEdge: 15).
heartbeatSeconds: 15
# How often the node renews its Lease, in seconds (its full status goes when it changes, and
# every 5 minutes, as kubelet does).
statusSeconds: 10
# Port of /metrics and /healthz (plain HTTP on 127.0.0.1).
metricsPort: 10351
# The embedded MQTT broker devices and apps use (MQTT 3.1.1), and the address it listens on
# (loopback: only this host; 0.0.0.0 to let devices on the network in).
mqttPort: 1883
mqttBind: 127.0.0.1
# An external broker instead of the embedded one: mqtt://[user:password@]host[:port], or
# mqtts://... for TLS. Prefer the KEDGE_MQTT_URL environment variable when it carries a password.
mqttUrl: ""
# For mqtts://: PEM file of the CA that signed the broker's certificate (default: system roots).
mqttCa: ""
# The container runtime's CRI socket (containerd's by default); "none" runs no pods (a node for
# devices and messages only).
criEndpoint: unix:///run/containerd/containerd.sock
# First delay before a crashed container is restarted again, in seconds; it doubles up to 300.
restartBackoffSeconds: 10
"#;

/// The MQTT port devices expect.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// The file's settings; every key optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub node_name: Option<String>,
    pub cloud: Option<String>,
    pub hub_port: Option<u16>,
    pub https_port: Option<u16>,
    pub token: Option<String>,
    pub heartbeat_seconds: Option<u64>,
    pub status_seconds: Option<u64>,
    pub metrics_port: Option<u16>,
    pub mqtt_port: Option<u16>,
    pub mqtt_bind: Option<std::net::IpAddr>,
    pub mqtt_url: Option<String>,
    pub mqtt_ca: Option<PathBuf>,
    pub cri_endpoint: Option<String>,
    pub restart_backoff_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Parse { path: PathBuf, cause: String },
    #[error("{0} is required (as a flag or in the config file)")]
    Missing(&'static str),
    #[error("{0} must be at least 1 second")]
    Zero(&'static str),
    #[error("{0}")]
    MqttUrl(#[from] crate::eventbus::UrlError),
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            cause: e.to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.into(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Lays `over` (the flags that were given) on top of `self` (the file).
    pub fn overlay(self, over: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: over.data_dir.or(self.data_dir),
            node_name: over.node_name.or(self.node_name),
            cloud: over.cloud.or(self.cloud),
            hub_port: over.hub_port.or(self.hub_port),
            https_port: over.https_port.or(self.https_port),
            token: over.token.or(self.token),
            heartbeat_seconds: over.heartbeat_seconds.or(self.heartbeat_seconds),
            status_seconds: over.status_seconds.or(self.status_seconds),
            metrics_port: over.metrics_port.or(self.metrics_port),
            mqtt_port: over.mqtt_port.or(self.mqtt_port),
            mqtt_bind: over.mqtt_bind.or(self.mqtt_bind),
            mqtt_url: over.mqtt_url.or(self.mqtt_url),
            mqtt_ca: over.mqtt_ca.or(self.mqtt_ca),
            cri_endpoint: over.cri_endpoint.or(self.cri_endpoint),
            restart_backoff_seconds: over
                .restart_backoff_seconds
                .or(self.restart_backoff_seconds),
        }
    }

    /// The settings, with defaults for what is missing; node name and cloud are required.
    pub fn resolve(self) -> Result<EdgeConfig, ConfigError> {
        let node = self
            .node_name
            .filter(|n| !n.is_empty())
            .ok_or(ConfigError::Missing("nodeName (--node-name)"))?;
        let cloud = self
            .cloud
            .filter(|c| !c.is_empty())
            .ok_or(ConfigError::Missing("cloud (--cloud)"))?;
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./kedge-edge-data"));
        let mut cfg = EdgeConfig::new(data_dir, &node, &cloud, self.token.as_deref().unwrap_or(""));
        if let Some(p) = self.hub_port {
            cfg.hub_port = p;
        }
        if let Some(p) = self.https_port {
            cfg.https_port = p;
        }
        if let Some(p) = self.metrics_port {
            cfg.metrics_port = p;
        }
        let secs = |v: Option<u64>, name, default: Duration| match v {
            Some(0) => Err(ConfigError::Zero(name)),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
        cfg.mqtt = match self.mqtt_url.filter(|u| !u.is_empty()) {
            Some(url) => {
                let mut b = crate::eventbus::parse_url(&url)?;
                b.ca = self.mqtt_ca.filter(|p| !p.as_os_str().is_empty());
                crate::Mqtt::External(b)
            }
            None => crate::Mqtt::Embedded(std::net::SocketAddr::new(
                self.mqtt_bind.unwrap_or([127, 0, 0, 1].into()),
                self.mqtt_port.unwrap_or(DEFAULT_MQTT_PORT),
            )),
        };
        cfg.heartbeat = secs(self.heartbeat_seconds, "heartbeatSeconds", cfg.heartbeat)?;
        cfg.status_every = secs(self.status_seconds, "statusSeconds", cfg.status_every)?;
        cfg.cri_endpoint = self
            .cri_endpoint
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| crate::edged::cri::DEFAULT_ENDPOINT.into());
        cfg.restart_backoff = secs(
            self.restart_backoff_seconds,
            "restartBackoffSeconds",
            cfg.restart_backoff,
        )?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_is_the_real_default() {
        let file = FileConfig::parse(DEFAULT_CONFIG_YAML, Path::new("default")).expect("parses");
        let flags = FileConfig {
            node_name: Some("n1".into()),
            cloud: Some("c".into()),
            ..FileConfig::default()
        };
        let from_file = file.overlay(flags).resolve().expect("resolves");
        let mut builtin = EdgeConfig::new("./kedge-edge-data", "n1", "c", "");
        // The two defaults that differ for the library (tests pick free ports, and run no pods).
        builtin.mqtt = crate::Mqtt::Embedded("127.0.0.1:1883".parse().expect("addr"));
        builtin.cri_endpoint = crate::edged::cri::DEFAULT_ENDPOINT.into();
        assert_eq!(format!("{from_file:?}"), format!("{builtin:?}"));
    }

    #[test]
    fn flags_win_typos_and_gaps_are_errors() {
        let file = FileConfig::parse("nodeName: a\ncloud: c\nhubPort: 1\n", Path::new("f"))
            .expect("parses");
        let cfg = file
            .overlay(FileConfig {
                hub_port: Some(2),
                ..FileConfig::default()
            })
            .resolve()
            .expect("ok");
        assert_eq!(cfg.hub_port, 2);
        let typo = FileConfig::parse("nodename: a\n", Path::new("f")).expect_err("unknown key");
        assert!(typo.to_string().contains("nodename"), "{typo}");
        let missing = FileConfig::default().resolve().expect_err("missing");
        assert!(missing.to_string().contains("nodeName"), "{missing}");
        let zero = FileConfig::parse(
            "nodeName: a\ncloud: c\nheartbeatSeconds: 0\n",
            Path::new("f"),
        )
        .expect("parses");
        assert!(zero.resolve().is_err());
        let external = FileConfig::parse(
            "nodeName: a\ncloud: c\nmqttUrl: mqtt://u:pw@broker:1884\n",
            Path::new("f"),
        )
        .expect("parses")
        .resolve()
        .expect("ok");
        assert!(matches!(&external.mqtt, crate::Mqtt::External(b) if b.port == 1884));
        assert!(
            !format!("{external:?}").contains("pw"),
            "no password in logs"
        );
        let bad = FileConfig::parse("nodeName: a\ncloud: c\nmqttUrl: http://x\n", Path::new("f"))
            .expect("parses")
            .resolve()
            .expect_err("bad URL");
        assert!(bad.to_string().contains("mqtt://"), "{bad}");
    }
}
