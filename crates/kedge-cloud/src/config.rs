//! `kedge cloud`'s settings, every one with its default written once (`Settings::default`,
//! which takes the components' own defaults where they have them). `--print-default-config`
//! prints them ([`default_yaml`]), `--config FILE` reads them from YAML (unknown keys are an
//! error), and flags given on the command line win over the file ([`Settings::overlay`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kedge_core::clock::{format_duration, parse_duration};
use kedge_core::settings::{Layered, Secret, SettingsError, commented_yaml};
use serde::{Deserialize, Serialize};

use crate::router::rest::RouterConfig;

/// Every setting of `kedge cloud`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub api_port: u16,
    pub api_bind: IpAddr,
    pub kubeconfig: PathBuf,
    pub bind: IpAddr,
    pub hub_port: u16,
    pub https_port: u16,
    pub advertise_addresses: Vec<String>,
    pub node_cert_ttl: String,
    pub metrics_port: u16,
    pub metrics_bind: IpAddr,
    pub router_port: u16,
    pub router_bind: IpAddr,
    pub router_token: Secret,
    pub router_timeout: String,
    pub device_api_version: String,
    pub kubelet_client_ca: PathBuf,
    pub kubelet_port: u16,
    pub kubelet_address: String,
    pub kubelet_client_names: Vec<String>,
    pub pki_secret: String,
    pub peer_port: u16,
    pub peer_address: String,
    pub dashboard_port: u16,
    pub dashboard_bind: IpAddr,
}

/// Where replicas on a real cluster keep their one CA, unless told otherwise.
pub const DEFAULT_PKI_SECRET: &str = "kedge/kedge-cloud-pki";

impl Default for Settings {
    fn default() -> Self {
        let router = RouterConfig::default();
        Settings {
            data_dir: "./kedge-data".into(),
            api_port: 6443,
            api_bind: IpAddr::from([127, 0, 0, 1]),
            kubeconfig: PathBuf::new(),
            // Edges dial in from other machines.
            bind: IpAddr::from([0, 0, 0, 0]),
            hub_port: 10000,
            https_port: 10002,
            advertise_addresses: Vec::new(),
            node_cert_ttl: format_duration(kedge_pki::node::NODE_CERT_TTL),
            metrics_port: 9091,
            metrics_bind: IpAddr::from([127, 0, 0, 1]),
            router_port: router.addr.port(),
            router_bind: router.addr.ip(),
            router_token: Secret::default(),
            router_timeout: format_duration(router.timeout),
            device_api_version: kedge_core::devices::V1ALPHA2.into(),
            kubelet_client_ca: PathBuf::new(),
            // The port edgecore's own stream server advertises.
            kubelet_port: 10350,
            kubelet_address: String::new(),
            // kubeadm's name for kube-apiserver's kubelet client certificate.
            kubelet_client_names: vec!["kube-apiserver-kubelet-client".into()],
            pki_secret: DEFAULT_PKI_SECRET.into(),
            peer_port: 10005,
            peer_address: String::new(),
            dashboard_port: crate::dashboard::DEFAULT_PORT,
            dashboard_bind: IpAddr::from([127, 0, 0, 1]),
        }
    }
}

/// What each setting does, in the order `--print-default-config` shows them.
const DOCS: [(&str, &str); 25] = [
    (
        "dataDir",
        "Where the cloud keeps its CA (pki/), the embedded API's store and the kubeconfig.",
    ),
    (
        "apiPort",
        "Port of the embedded Kubernetes API (HTTPS); 0 picks a free one.",
    ),
    ("apiBind", "Address the embedded Kubernetes API listens on."),
    (
        "kubeconfig",
        "A real cluster's kubeconfig to use instead of the embedded API (apply deploy/crds/ there\n\
         first); empty for the embedded API.",
    ),
    ("bind", "Address CloudHub and the join server listen on."),
    ("hubPort", "CloudHub WebSocket port (edges connect here)."),
    ("httpsPort", "Join (certificate) server port."),
    (
        "advertiseAddresses",
        "Names or addresses edges use to reach this cloud (they go into its certificate).",
    ),
    (
        "nodeCertTtl",
        "Lifetime of the node certificates the cloud signs (edges renew them at 70-90 % of it):\n\
         a number with s, m, h or d.",
    ),
    (
        "metricsPort",
        "Port of /metrics and /healthz (plain HTTP on 127.0.0.1).",
    ),
    (
        "metricsBind",
        "Address /metrics and /healthz listen on (loopback unless opened: a kubelet probes a\n\
         pod's own address).",
    ),
    (
        "routerPort",
        "Router REST listener port (/{node}/{namespace}/{path}).",
    ),
    (
        "routerBind",
        "Address the router's REST listener listens on (loopback unless you open it: without a\n\
         routerToken anyone who reaches it can publish to edges).",
    ),
    (
        "routerToken",
        "Require `Authorization: Bearer <token>` on the router's REST listener (off when empty,\n\
         as in KubeEdge). Prefer the KEDGE_ROUTER_TOKEN environment variable.",
    ),
    (
        "routerTimeout",
        "How long an edge app has to answer a routed request: a number with s, m or h.",
    ),
    (
        "deviceApiVersion",
        "The preferred version of devices.kubeedge.io in the embedded API (v1alpha2 or v1beta1):\n\
         the one kubectl uses when a command names none (the seed's `kubectl patch device`\n\
         needs v1alpha2). Both are served either way; a real cluster decides for itself.",
    ),
    (
        "kubeletClientCa",
        "With a real cluster (kubeconfig): serve the kubelet API for edge nodes, so\n\
         `kubectl logs/exec/attach/port-forward` reach their pods through kube-apiserver, to\n\
         clients whose certificate this CA file (PEM) signed: the authority of kube-apiserver's\n\
         --kubelet-client-certificate. Empty: off (docs/streams.md).",
    ),
    (
        "kubeletPort",
        "Port of the kubelet API for edge nodes (on `bind`); their Nodes advertise it.",
    ),
    (
        "kubeletAddress",
        "The name or address kube-apiserver reaches this cloud by: every edge Node's Hostname\n\
         address. Empty: the first advertiseAddress.",
    ),
    (
        "kubeletClientNames",
        "Common names of the client certificates allowed to call the kubelet API (the CA may\n\
         sign others: users'); empty: any certificate the CA signed.",
    ),
    (
        "pkiSecret",
        "With a real cluster (kubeconfig): the Secret (NAMESPACE/NAME) that holds the cloud's CA\n\
         and join-token key, created once by the first replica and adopted by the others, so\n\
         every replica serves one CA and accepts the same tokens. Empty: the data directory's\n\
         CA alone (one replica).",
    ),
    (
        "peerPort",
        "With a real cluster (kubeconfig): port of the listener replicas call each other on (on\n\
         `bind`; mutual TLS with the shared CA): router calls for a node another replica holds\n\
         are forwarded there. 0 picks one.",
    ),
    (
        "peerAddress",
        "The name or address other replicas reach this one by (a pod's IP on Kubernetes).\n\
         Empty: the first advertiseAddress.",
    ),
    (
        "dashboardPort",
        "Port of the web dashboard (HTTPS with the cloud's certificate; sign in with a token the\n\
         Kubernetes API accepts). 0 picks a free one.",
    ),
    (
        "dashboardBind",
        "Address the dashboard listens on (loopback unless opened).",
    ),
];

/// What `kedge cloud --print-default-config` prints; it reads back as [`Settings::default`].
pub fn default_yaml() -> String {
    commented_yaml(
        "kedge cloud configuration. Every setting is also a flag of `kedge cloud`; flags win.",
        &Settings::default(),
        &DOCS,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{key}: {why}")]
    Value { key: &'static str, why: String },
}

/// The settings resolved into what the parts of `kedge cloud` run with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub data_dir: PathBuf,
    /// The embedded API's address; `None` with a real cluster (`kubeconfig`).
    pub api: Option<SocketAddr>,
    pub kubeconfig: Option<PathBuf>,
    pub bind: IpAddr,
    pub hub_port: u16,
    pub https_port: u16,
    pub names: Vec<String>,
    pub node_cert_ttl: Duration,
    pub metrics_port: u16,
    pub metrics_bind: IpAddr,
    pub router: RouterConfig,
    /// The embedded API's preferred devices.kubeedge.io version.
    pub device_api_version: String,
    /// The kubelet API for edge nodes, when served.
    pub cloudstream: Option<crate::cloudstream::CloudStreamConfig>,
    /// The Secret replicas share their CA through (a real cluster only).
    pub pki_secret: Option<crate::pkisecret::SecretRef>,
    /// How other replicas reach this one (a real cluster only).
    pub replica: Option<crate::ReplicaConfig>,
    /// Where the dashboard listens.
    pub dashboard: SocketAddr,
}

impl Layered for Settings {}

impl Settings {
    pub fn resolve(self) -> Result<Resolved, ConfigError> {
        let duration =
            |key, text: &str| parse_duration(text).map_err(|why| ConfigError::Value { key, why });
        let kubeconfig = Some(self.kubeconfig.clone()).filter(|k| !k.as_os_str().is_empty());
        let cloudstream = self.cloudstream(kubeconfig.is_some())?;
        let pki_secret = match (&kubeconfig, self.pki_secret.as_str()) {
            (None, _) | (_, "") => None,
            (Some(_), at) => Some(at.parse().map_err(|e: crate::pkisecret::PkiSecretError| {
                ConfigError::Value {
                    key: "pkiSecret",
                    why: e.to_string(),
                }
            })?),
        };
        let router_token = Some(self.router_token.0).filter(|t| !t.is_empty());
        let versions = [kedge_core::devices::V1ALPHA2, kedge_core::devices::V1BETA1];
        if !versions.contains(&self.device_api_version.as_str()) {
            return Err(ConfigError::Value {
                key: "deviceApiVersion",
                why: format!("{:?} is not v1alpha2 or v1beta1", self.device_api_version),
            });
        }
        let replica = kubeconfig.is_some().then(|| crate::ReplicaConfig {
            peer_port: self.peer_port,
            peer_address: Some(self.peer_address.clone())
                .filter(|a| !a.is_empty())
                .or_else(|| self.advertise_addresses.first().cloned()),
        });
        Ok(Resolved {
            cloudstream,
            pki_secret,
            replica,
            device_api_version: self.device_api_version,
            api: kubeconfig
                .is_none()
                .then(|| SocketAddr::new(self.api_bind, self.api_port)),
            kubeconfig,
            node_cert_ttl: duration("nodeCertTtl", &self.node_cert_ttl)?,
            router: RouterConfig {
                addr: SocketAddr::new(self.router_bind, self.router_port),
                token: router_token,
                timeout: duration("routerTimeout", &self.router_timeout)?,
                ..RouterConfig::default()
            },
            data_dir: self.data_dir,
            bind: self.bind,
            hub_port: self.hub_port,
            https_port: self.https_port,
            names: self.advertise_addresses,
            metrics_port: self.metrics_port,
            metrics_bind: self.metrics_bind,
            dashboard: SocketAddr::new(self.dashboard_bind, self.dashboard_port),
        })
    }
}

impl Settings {
    /// The kubelet API's settings: off without a client CA; with one, only for a real cluster
    /// (the embedded API reaches edge pods itself) and with an address kube-apiserver can dial.
    fn cloudstream(
        &self,
        real_cluster: bool,
    ) -> Result<Option<crate::cloudstream::CloudStreamConfig>, ConfigError> {
        if self.kubelet_client_ca.as_os_str().is_empty() {
            return Ok(None);
        }
        let why = |why: &str| ConfigError::Value {
            key: "kubeletClientCa",
            why: why.into(),
        };
        if !real_cluster {
            return Err(why(
                "the kubelet API is for a real cluster (kubeconfig): the embedded API reaches \
                 edge pods itself",
            ));
        }
        let address = Some(self.kubelet_address.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| self.advertise_addresses.first().cloned())
            .ok_or_else(|| {
                why(
                    "give kubeletAddress (or an advertiseAddress): the name kube-apiserver \
                     reaches this cloud by",
                )
            })?;
        Ok(Some(crate::cloudstream::CloudStreamConfig {
            addr: SocketAddr::new(self.bind, self.kubelet_port),
            address,
            client_ca: self.kubelet_client_ca.clone(),
            client_names: self.kubelet_client_names.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn the_printed_default_reads_back_as_the_default() {
        let parsed = Settings::parse(&default_yaml(), Path::new("default")).expect("parses");
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
        let r = Settings::default().resolve().expect("the defaults resolve");
        assert_eq!(r.node_cert_ttl, kedge_pki::node::NODE_CERT_TTL);
        assert_eq!(r.router.timeout, RouterConfig::default().timeout);
        assert_eq!(r.router.addr, RouterConfig::default().addr);
        assert!(
            r.router.addr.ip().is_loopback(),
            "the router is not open by default"
        );
    }

    #[test]
    fn flags_win_and_bad_values_name_their_key() {
        let file =
            Settings::parse("hubPort: 1\nrouterTimeout: 5s\n", Path::new("f")).expect("yaml");
        let r = file
            .overlay(json!({"hubPort": 2, "kubeconfig": "/k", "routerToken": "t"}))
            .expect("overlay")
            .resolve()
            .expect("resolves");
        assert_eq!(r.hub_port, 2);
        assert_eq!(r.router.timeout, Duration::from_secs(5));
        assert_eq!(r.router.token.as_deref(), Some("t"));
        assert!(r.api.is_none(), "a real cluster: no embedded API");
        let typo = Settings::parse("hubport: 1\n", Path::new("f")).expect_err("unknown key");
        assert!(typo.to_string().contains("hubport"), "{typo}");
        let bad = Settings::parse("routerTimeout: soon\n", Path::new("f"))
            .expect("yaml")
            .resolve()
            .expect_err("bad duration");
        assert!(bad.to_string().starts_with("routerTimeout:"), "{bad}");
        let no_address =
            Settings::parse("kubeletClientCa: /ca.pem\nkubeconfig: /k\n", Path::new("f"))
                .expect("yaml")
                .resolve()
                .expect_err("no address for kube-apiserver");
        assert!(
            no_address.to_string().contains("kubeletAddress"),
            "{no_address}"
        );
        let embedded = Settings::parse(
            "kubeletClientCa: /ca.pem\nkubeletAddress: c\n",
            Path::new("f"),
        )
        .expect("yaml")
        .resolve()
        .expect_err("the embedded API needs no kubelet API");
        assert!(embedded.to_string().contains("real cluster"), "{embedded}");
        let cs = Settings::parse(
            "kubeletClientCa: /ca.pem\nkubeconfig: /k\nadvertiseAddresses: [cloud.example]\n",
            Path::new("f"),
        )
        .expect("yaml")
        .resolve()
        .expect("resolves")
        .cloudstream
        .expect("served");
        assert_eq!(cs.address, "cloud.example");
        assert_eq!(cs.addr.port(), 10350);
        assert_eq!(cs.client_names, ["kube-apiserver-kubelet-client"]);
        let s = Settings {
            router_token: Secret("s3cret".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
