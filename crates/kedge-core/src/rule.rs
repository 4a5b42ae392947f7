//! Router rules (`rules.kubeedge.io/v1` RuleEndpoint and Rule) as a routing table, and the checks
//! KubeEdge's admission webhook makes. Pure: the cloud's router builds the table from the objects
//! it watches and asks it where a request or an edge message goes.
//!
//! - rest → eventbus: `POST /{node}/{namespace}/{path}` → MQTT topic `<topic>[/<rest of path>]` on
//!   that node's broker.
//! - eventbus → rest: MQTT `<namespace>/<topic>` on node `node_name` → POST to the target URL.
//! - rest → servicebus: `/{node}/{namespace}/{path}` → `http://127.0.0.1:<service_port><path>…`
//!   on the node.
//! - servicebus → rest: an app on node `node_name` asks the edge's ServiceBus for `target_url`
//!   → the cloud calls the rule's target URL and answers with what it said.
//!
//! A request path matches a rule whose path is a whole-segment prefix of it; the longest wins.

use std::collections::{BTreeMap, HashMap};

/// A RuleEndpoint's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointType {
    Rest,
    EventBus,
    ServiceBus,
}

impl EndpointType {
    pub fn parse(s: &str) -> Option<EndpointType> {
        match s {
            "rest" => Some(EndpointType::Rest),
            "eventbus" => Some(EndpointType::EventBus),
            "servicebus" => Some(EndpointType::ServiceBus),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    pub kind: EndpointType,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub namespace: String,
    pub name: String,
    pub source: String,
    pub source_resource: BTreeMap<String, String>,
    pub target: String,
    pub target_resource: BTreeMap<String, String>,
}

fn strings(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    use serde_json::Value;
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect()
}

fn text(v: &serde_json::Value, path: &str) -> Option<String> {
    v.pointer(path).and_then(|x| x.as_str()).map(String::from)
}

impl Endpoint {
    /// A RuleEndpoint object (JSON, with its metadata).
    pub fn from_object(v: &serde_json::Value) -> Option<Endpoint> {
        Some(Endpoint {
            namespace: text(v, "/metadata/namespace")?,
            name: text(v, "/metadata/name")?,
            kind: EndpointType::parse(&text(v, "/spec/ruleEndpointType")?)?,
            properties: strings(v.pointer("/spec/properties")),
        })
    }
}

impl Rule {
    /// A Rule object (JSON, with its metadata).
    pub fn from_object(v: &serde_json::Value) -> Option<Rule> {
        Some(Rule {
            namespace: text(v, "/metadata/namespace")?,
            name: text(v, "/metadata/name")?,
            source: text(v, "/spec/source")?,
            source_resource: strings(v.pointer("/spec/sourceResource")),
            target: text(v, "/spec/target")?,
            target_resource: strings(v.pointer("/spec/targetResource")),
        })
    }
}

/// The admission check for a new `rule`, given the endpoints and the other rules of its
/// namespace. What can never be valid is refused with the reason: an unsupported pair of
/// endpoint types, a source or target resource missing a key its endpoint type needs, a source
/// another rule already uses. A rule whose endpoints do not exist yet is accepted (unlike
/// KubeEdge's webhook, so manifests apply in any order): it takes effect when they appear, and
/// its status says what it waits for meanwhile.
pub fn admit(rule: &Rule, endpoints: &[Endpoint], others: &[Rule]) -> Result<(), RuleError> {
    let find = |name: &str| {
        endpoints
            .iter()
            .find(|e| e.namespace == rule.namespace && e.name == name)
    };
    let (source, target) = (find(&rule.source), find(&rule.target));
    // Nothing about the source is known yet (every endpoint type can be a target).
    let Some(source) = source else {
        return Ok(());
    };
    let key = source_key(rule, source.kind, target.map(|t| t.kind))?;
    if target.is_some() {
        compile(rule, endpoints)?;
    }
    let others: Vec<Rule> = others
        .iter()
        .filter(|o| !(o.namespace == rule.namespace && o.name == rule.name))
        .cloned()
        .collect();
    let (table, _) = RuleTable::build(endpoints, &others);
    match key {
        SourceKey::Path(path) => {
            let taken = table
                .rest
                .get(&rule.namespace)
                .and_then(|routes| routes.iter().find(|(p, _)| *p == path));
            match taken {
                Some((_, other)) => Err(RuleError::Duplicate(other.rule.clone(), "source path")),
                None => Ok(()),
            }
        }
        SourceKey::Topic { node, topic } => match table.bus.get(&(node, topic)) {
            Some(other) => Err(RuleError::Duplicate(
                other.rule.clone(),
                "source topic and node",
            )),
            None => Ok(()),
        },
        SourceKey::Url { node, url } => match table.service.get(&(node, url)) {
            Some(other) => Err(RuleError::Duplicate(
                other.rule.clone(),
                "target_url and node",
            )),
            None => Ok(()),
        },
    }
}

/// What identifies a rule's source: a REST path in its namespace, a topic on a node, or a
/// servicebus `target_url` on a node (in every namespace: the edge app names no namespace).
enum SourceKey {
    Path(String),
    Topic { node: String, topic: String },
    Url { node: String, url: String },
}

/// The source's key, checked against what its endpoint type needs (the target's type, when
/// known, only for the name of an unsupported pair).
fn source_key(
    rule: &Rule,
    source: EndpointType,
    target: Option<EndpointType>,
) -> Result<SourceKey, RuleError> {
    let s = &rule.source_resource;
    match source {
        EndpointType::Rest => Ok(SourceKey::Path(normalise(get(s, "path")?))),
        EndpointType::EventBus => Ok(SourceKey::Topic {
            node: get(s, "node_name")?.to_string(),
            topic: format!("{}/{}", rule.namespace, get(s, "topic")?.trim_matches('/')),
        }),
        EndpointType::ServiceBus => match target {
            None | Some(EndpointType::Rest) => Ok(SourceKey::Url {
                node: get(s, "node_name")?.to_string(),
                url: get(s, "target_url")?.to_string(),
            }),
            Some(t) => Err(RuleError::Unsupported {
                from: "servicebus".into(),
                to: format!("{t:?}").to_lowercase(),
            }),
        },
    }
}

/// Where a REST request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestTarget {
    /// Publish the body on this topic (plus the rest of the path) at the node.
    EventBus { topic: String },
    /// Call `http://127.0.0.1:<port><path><rest of path>` at the node.
    ServiceBus { port: u16, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRoute {
    /// `namespace/name` of the rule.
    pub rule: String,
    pub target: RestTarget,
}

/// Where an edge's MQTT message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRoute {
    pub rule: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule endpoint {0} does not exist in the rule's namespace")]
    NoEndpoint(String),
    #[error(
        "{from} → {to} is not a supported route (rest→eventbus, eventbus→rest, rest→servicebus, servicebus→rest)"
    )]
    Unsupported { from: String, to: String },
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("service_port {0:?} of the servicebus endpoint is not a port (1-65535)")]
    Port(String),
    #[error("another rule ({0}) already uses this {1}")]
    Duplicate(String, &'static str),
}

/// `a/b/` and `/a/b` both become `a/b`.
fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &'static str) -> Result<&'a str, RuleError> {
    m.get(key)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or(RuleError::Missing(key))
}

enum Compiled {
    Rest {
        path: String,
        route: RestRoute,
    },
    Bus {
        node: String,
        topic: String,
        route: BusRoute,
    },
    Service {
        node: String,
        url: String,
        route: BusRoute,
    },
}

fn compile(rule: &Rule, endpoints: &[Endpoint]) -> Result<Compiled, RuleError> {
    let find = |name: &str| {
        endpoints
            .iter()
            .find(|e| e.namespace == rule.namespace && e.name == name)
            .ok_or_else(|| RuleError::NoEndpoint(name.to_string()))
    };
    let (source, target) = (find(&rule.source)?, find(&rule.target)?);
    let id = format!("{}/{}", rule.namespace, rule.name);
    let (s, t) = (&rule.source_resource, &rule.target_resource);
    match (source.kind, target.kind) {
        (EndpointType::Rest, EndpointType::EventBus) => Ok(Compiled::Rest {
            path: normalise(get(s, "path")?),
            route: RestRoute {
                rule: id,
                target: RestTarget::EventBus {
                    topic: get(t, "topic")?.trim_matches('/').to_string(),
                },
            },
        }),
        (EndpointType::Rest, EndpointType::ServiceBus) => {
            let port = target
                .properties
                .get("service_port")
                .cloned()
                .unwrap_or_default();
            let port = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(RuleError::Port(port))?;
            Ok(Compiled::Rest {
                path: normalise(get(s, "path")?),
                route: RestRoute {
                    rule: id,
                    target: RestTarget::ServiceBus {
                        port,
                        path: format!("/{}", normalise(get(t, "path")?)),
                    },
                },
            })
        }
        (EndpointType::EventBus, EndpointType::Rest) => Ok(Compiled::Bus {
            node: get(s, "node_name")?.to_string(),
            topic: format!("{}/{}", rule.namespace, get(s, "topic")?.trim_matches('/')),
            route: BusRoute {
                rule: id,
                url: get(t, "resource")?.to_string(),
            },
        }),
        (EndpointType::ServiceBus, EndpointType::Rest) => Ok(Compiled::Service {
            node: get(s, "node_name")?.to_string(),
            url: get(s, "target_url")?.to_string(),
            route: BusRoute {
                rule: id,
                url: get(t, "resource")?.to_string(),
            },
        }),
        (a, b) => Err(RuleError::Unsupported {
            from: format!("{a:?}").to_lowercase(),
            to: format!("{b:?}").to_lowercase(),
        }),
    }
}

/// Adds `route` under `key`, unless an earlier rule holds that key: then it is refused, the
/// duplicated `what` named.
fn add_keyed(
    map: &mut HashMap<(String, String), BusRoute>,
    key: (String, String),
    route: BusRoute,
    what: &'static str,
    refused: &mut Vec<(String, RuleError)>,
) {
    match map.get(&key) {
        Some(other) => {
            let why = RuleError::Duplicate(other.rule.clone(), what);
            refused.push((route.rule, why));
        }
        None => {
            map.insert(key, route);
        }
    }
}

/// The rules in effect.
#[derive(Debug, Default)]
pub struct RuleTable {
    /// namespace → (normalised path, route), longest path first.
    rest: HashMap<String, Vec<(String, RestRoute)>>,
    /// (node, `<namespace>/<topic>`) → route.
    bus: HashMap<(String, String), BusRoute>,
    /// (node, servicebus `target_url`) → route.
    service: HashMap<(String, String), BusRoute>,
}

impl RuleTable {
    /// Builds the table; rules that cannot route (or duplicate an earlier rule's source) are
    /// left out and returned with the reason, for the rule's status.
    pub fn build(endpoints: &[Endpoint], rules: &[Rule]) -> (RuleTable, Vec<(String, RuleError)>) {
        let mut table = RuleTable::default();
        let mut refused = Vec::new();
        let mut sorted: Vec<&Rule> = rules.iter().collect();
        sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for rule in sorted {
            let id = format!("{}/{}", rule.namespace, rule.name);
            match compile(rule, endpoints) {
                Err(e) => refused.push((id, e)),
                Ok(Compiled::Rest { path, route }) => {
                    let routes = table.rest.entry(rule.namespace.clone()).or_default();
                    if let Some((_, other)) = routes.iter().find(|(p, _)| *p == path) {
                        refused.push((id, RuleError::Duplicate(other.rule.clone(), "source path")));
                    } else {
                        routes.push((path, route));
                        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
                    }
                }
                Ok(Compiled::Bus { node, topic, route }) => {
                    let what = "source topic and node";
                    add_keyed(&mut table.bus, (node, topic), route, what, &mut refused);
                }
                Ok(Compiled::Service { node, url, route }) => {
                    let what = "target_url and node";
                    add_keyed(&mut table.service, (node, url), route, what, &mut refused);
                }
            }
        }
        (table, refused)
    }

    /// The route for a request to `path` (after `/{node}/{namespace}/`) in `namespace`, and the
    /// rest of the path after the rule's (`""` or `/x/y`).
    pub fn rest<'a>(&self, namespace: &str, path: &'a str) -> Option<(&RestRoute, &'a str)> {
        let path = path.trim_start_matches('/');
        self.rest.get(namespace)?.iter().find_map(|(p, route)| {
            let rest = if p.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(p.as_str())
            }?;
            (rest.is_empty() || rest.starts_with('/') || p.is_empty())
                .then(|| (route, rest.trim_end_matches('/')))
        })
    }

    /// The route for a message `node` published on `topic`.
    pub fn bus(&self, node: &str, topic: &str) -> Option<&BusRoute> {
        self.bus.get(&(node.to_string(), topic.to_string()))
    }

    /// The route for servicebus `target_url` asked for on `node`.
    pub fn service(&self, node: &str, target_url: &str) -> Option<&BusRoute> {
        self.service
            .get(&(node.to_string(), target_url.to_string()))
    }

    /// The eventbus- and servicebus-source rules (`namespace/name`) that name `node`, sorted:
    /// the node is given them, to subscribe their topics and allow their target URLs.
    pub fn bus_rules(&self, node: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .bus
            .iter()
            .chain(&self.service)
            .filter(|((n, _), _)| n == node)
            .map(|(_, r)| r.rule.clone())
            .collect();
        v.sort();
        v
    }

    /// Every node some eventbus- or servicebus-source rule names.
    pub fn bus_nodes(&self) -> std::collections::BTreeSet<String> {
        let nodes = self.bus.keys().chain(self.service.keys());
        nodes.map(|(n, _)| n.clone()).collect()
    }

    /// The MQTT topics `node` must subscribe to for eventbus sources, sorted.
    pub fn subscriptions(&self, node: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .bus
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, t)| t.clone())
            .collect();
        v.sort();
        v
    }
}

/// The operation of a rest→eventbus message (KubeEdge's).
pub const OP_PUBLISH: &str = "publish";

/// A message body as envelope content: a JSON string when it is UTF-8 (as KubeEdge sends it),
/// else `{"base64": …}` so that any body arrives byte for byte.
pub fn body_to_content(body: &[u8]) -> serde_json::Value {
    use base64::Engine;
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => {
            serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(body)})
        }
    }
}

/// The body [`body_to_content`] encoded (other JSON is taken as its text).
pub fn content_to_body(content: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    match content {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        serde_json::Value::Object(m)
            if m.len() == 1 && m.get("base64").is_some_and(|b| b.is_string()) =>
        {
            let b64 = m.get("base64").and_then(|b| b.as_str()).unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|_| b64.as_bytes().to_vec())
        }
        other => other.to_string().into_bytes(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ep(name: &str, kind: EndpointType, props: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            namespace: "default".into(),
            name: name.into(),
            kind,
            properties: map(props),
        }
    }

    fn rule(
        name: &str,
        source: &str,
        sr: &[(&str, &str)],
        target: &str,
        tr: &[(&str, &str)],
    ) -> Rule {
        Rule {
            namespace: "default".into(),
            name: name.into(),
            source: source.into(),
            source_resource: map(sr),
            target: target.into(),
            target_resource: map(tr),
        }
    }

    /// The seed's endpoints and rules.
    fn seed() -> (Vec<Endpoint>, Vec<Rule>) {
        let eps = vec![
            ep("my-rest", EndpointType::Rest, &[]),
            ep("my-eventbus", EndpointType::EventBus, &[]),
            ep(
                "my-servicebus",
                EndpointType::ServiceBus,
                &[("service_port", "6666")],
            ),
        ];
        let rules = vec![
            rule(
                "my-rule",
                "my-rest",
                &[("path", "/a")],
                "my-eventbus",
                &[("topic", "test")],
            ),
            rule(
                "my-rule-eventbus-rest",
                "my-eventbus",
                &[("topic", "test"), ("node_name", "kube-edge-1")],
                "my-rest",
                &[("resource", "http://127.0.0.1:8080/b")],
            ),
            rule(
                "my-rule-rest-servicebus",
                "my-rest",
                &[("path", "/source")],
                "my-servicebus",
                &[("path", "/target")],
            ),
        ];
        (eps, rules)
    }

    #[test]
    fn bodies_travel_byte_for_byte() {
        for body in [
            &b"{\"message\": \"123\"}"[..],
            b"",
            &[0xff, 0x00, 0xfe],
            "ü".as_bytes(),
        ] {
            assert_eq!(content_to_body(&body_to_content(body)), body);
        }
        assert_eq!(body_to_content(b"hi"), serde_json::json!("hi"));
    }

    #[test]
    fn the_seed_rules_route_as_the_seed_says() {
        let (eps, rules) = seed();
        let (t, refused) = RuleTable::build(&eps, &rules);
        assert!(refused.is_empty(), "{refused:?}");
        let (r, rest) = t.rest("default", "a").expect("rest→eventbus");
        assert_eq!(
            r.target,
            RestTarget::EventBus {
                topic: "test".into()
            }
        );
        assert_eq!(rest, "");
        let (r, rest) = t.rest("default", "source/x/y").expect("rest→servicebus");
        assert_eq!(
            r.target,
            RestTarget::ServiceBus {
                port: 6666,
                path: "/target".into()
            }
        );
        assert_eq!(rest, "/x/y");
        assert_eq!(
            t.bus("kube-edge-1", "default/test").map(|b| b.url.as_str()),
            Some("http://127.0.0.1:8080/b")
        );
        assert_eq!(t.bus("other-node", "default/test"), None);
        assert_eq!(t.subscriptions("kube-edge-1"), ["default/test"]);
        assert_eq!(
            t.bus_rules("kube-edge-1"),
            ["default/my-rule-eventbus-rest"]
        );
        assert_eq!(
            t.bus_nodes().into_iter().collect::<Vec<_>>(),
            ["kube-edge-1"]
        );
    }

    #[test]
    fn paths_match_whole_segments_and_the_longest_rule_wins() {
        let (mut eps, _) = seed();
        eps.push(ep("bus2", EndpointType::EventBus, &[]));
        let rules = vec![
            rule(
                "short",
                "my-rest",
                &[("path", "a")],
                "my-eventbus",
                &[("topic", "t1")],
            ),
            rule(
                "long",
                "my-rest",
                &[("path", "a/b/")],
                "bus2",
                &[("topic", "t2")],
            ),
        ];
        let (t, _) = RuleTable::build(&eps, &rules);
        assert_eq!(
            t.rest("default", "a/b/c")
                .map(|(r, p)| (r.rule.as_str(), p)),
            Some(("default/long", "/c"))
        );
        assert_eq!(
            t.rest("default", "a/x").map(|(r, p)| (r.rule.as_str(), p)),
            Some(("default/short", "/x"))
        );
        assert_eq!(t.rest("default", "ab"), None, "not a segment prefix");
        assert_eq!(t.rest("other", "a"), None, "another namespace");
    }

    #[test]
    fn admission_checks_the_rule_against_its_namespace() {
        let (eps, rules) = seed();
        let again = rule(
            "copy",
            "my-rest",
            &[("path", "a")],
            "my-eventbus",
            &[("topic", "x")],
        );
        assert_eq!(
            admit(&again, &eps, &rules),
            Err(RuleError::Duplicate(
                "default/my-rule".into(),
                "source path"
            ))
        );
        assert_eq!(
            admit(&rules[0], &eps, &rules),
            Ok(()),
            "a rule does not clash with itself"
        );
        // Endpoints that do not exist yet: accepted (they may be applied next).
        let no_source = rule("m", "nope", &[], "my-eventbus", &[]);
        assert_eq!(admit(&no_source, &eps, &rules), Ok(()));
        let no_target = rule("m", "my-rest", &[("path", "z")], "nope", &[]);
        assert_eq!(admit(&no_target, &eps, &rules), Ok(()));
        // What can be checked is checked: the source's keys, its uniqueness, the pair.
        let no_path = rule("m", "my-rest", &[], "nope", &[]);
        assert_eq!(
            admit(&no_path, &eps, &rules),
            Err(RuleError::Missing("path"))
        );
        let taken = rule("m", "my-rest", &[("path", "/a/")], "nope", &[]);
        assert!(matches!(
            admit(&taken, &eps, &rules),
            Err(RuleError::Duplicate(..))
        ));
        let pair = rule(
            "m",
            "my-eventbus",
            &[("topic", "t2"), ("node_name", "n")],
            "my-servicebus",
            &[("path", "/x")],
        );
        assert!(matches!(
            admit(&pair, &eps, &rules),
            Err(RuleError::Unsupported { .. })
        ));
        let sb = [("target_url", "http://app/x"), ("node_name", "n")];
        let to_eventbus = rule("m", "my-servicebus", &sb, "my-eventbus", &[("topic", "t")]);
        assert!(matches!(
            admit(&to_eventbus, &eps, &rules),
            Err(RuleError::Unsupported { .. })
        ));
        let no_node = rule(
            "m",
            "my-servicebus",
            &sb[..1],
            "my-rest",
            &[("resource", "u")],
        );
        assert_eq!(
            admit(&no_node, &eps, &rules),
            Err(RuleError::Missing("node_name"))
        );
        let obj = serde_json::json!({"metadata": {"name": "r", "namespace": "default"},
            "spec": {"source": "my-rest", "sourceResource": {"path": "/q"}, "target": "my-eventbus", "targetResource": {"topic": "t"}}});
        let parsed = Rule::from_object(&obj).expect("rule");
        assert_eq!(
            parsed.source_resource.get("path").map(String::as_str),
            Some("/q")
        );
        assert_eq!(admit(&parsed, &eps, &rules), Ok(()));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let (eps, _) = seed();
        let cases = [
            (
                rule(
                    "r1",
                    "nope",
                    &[("path", "a")],
                    "my-eventbus",
                    &[("topic", "t")],
                ),
                "does not exist",
            ),
            (
                rule(
                    "r2",
                    "my-eventbus",
                    &[("topic", "t"), ("node_name", "n")],
                    "my-servicebus",
                    &[("path", "/x")],
                ),
                "not a supported route",
            ),
            (
                rule("r3", "my-rest", &[], "my-eventbus", &[("topic", "t")]),
                "path is required",
            ),
            (
                rule(
                    "r4",
                    "my-eventbus",
                    &[("topic", "t")],
                    "my-rest",
                    &[("resource", "http://x")],
                ),
                "node_name is required",
            ),
        ];
        for (r, why) in cases {
            let (_, refused) = RuleTable::build(&eps, &[r]);
            assert_eq!(refused.len(), 1);
            assert!(
                refused[0].1.to_string().contains(why),
                "{} vs {why}",
                refused[0].1
            );
        }
        let bad_port = vec![
            ep("my-rest", EndpointType::Rest, &[]),
            ep("sb", EndpointType::ServiceBus, &[("service_port", "99999")]),
        ];
        let (_, refused) = RuleTable::build(
            &bad_port,
            &[rule(
                "r5",
                "my-rest",
                &[("path", "s")],
                "sb",
                &[("path", "/t")],
            )],
        );
        assert!(matches!(refused[0].1, RuleError::Port(_)));
        let dup = vec![
            rule(
                "first",
                "my-rest",
                &[("path", "/a")],
                "my-eventbus",
                &[("topic", "t")],
            ),
            rule(
                "second",
                "my-rest",
                &[("path", "a/")],
                "my-eventbus",
                &[("topic", "u")],
            ),
        ];
        let (t, refused) = RuleTable::build(&eps, &dup);
        assert_eq!(
            refused,
            [(
                "default/second".to_string(),
                RuleError::Duplicate("default/first".into(), "source path")
            )]
        );
        assert_eq!(
            t.rest("default", "a").map(|(r, _)| r.rule.as_str()),
            Some("default/first")
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any body arrives byte for byte, UTF-8 or not.
            #[test]
            fn bodies_round_trip(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                prop_assert_eq!(content_to_body(&body_to_content(&body)), body);
            }

            /// Any request path: no panic, and a match is a rule's path followed by `/…`.
            #[test]
            fn rest_matching_never_panics(ns in "[a-z/]{0,12}", path in "\\PC{0,64}") {
                let (eps, rules) = seed();
                let (t, _) = RuleTable::build(&eps, &rules);
                if let Some((route, rest)) = t.rest(&ns, &path) {
                    prop_assert!(rest.is_empty() || rest.starts_with('/'), "{rest:?}");
                    prop_assert!(path.contains(rest));
                    prop_assert!(!route.rule.is_empty());
                }
            }

            /// Rules and endpoints from arbitrary JSON: refused or built, never a panic.
            #[test]
            fn rule_objects_from_any_json(v in arbitrary_json()) {
                let _ = Rule::from_object(&v);
                let _ = Endpoint::from_object(&v);
            }
        }
    }

    /// Arbitrary JSON values (nested objects and arrays), for property tests.
    pub(crate) fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("spec".to_string()),
                Just("metadata".to_string()),
                Just("source".to_string()),
                Just("target".to_string()),
                Just("sourceResource".to_string()),
                Just("ruleEndpointType".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn servicebus_to_rest_routes_a_target_url_on_a_node_to_the_rest_target() {
        let (mut eps, mut rules) = seed();
        let sb = [
            ("target_url", "http://127.0.0.1:9000/echo"),
            ("node_name", "kube-edge-1"),
        ];
        let to = [("resource", "http://cloud-app:8080/in")];
        rules.push(rule("sb-rest", "my-servicebus", &sb, "my-rest", &to));
        let (t, refused) = RuleTable::build(&eps, &rules);
        assert!(refused.is_empty(), "{refused:?}");
        let r = t
            .service("kube-edge-1", "http://127.0.0.1:9000/echo")
            .expect("route");
        assert_eq!(
            (r.rule.as_str(), r.url.as_str()),
            ("default/sb-rest", "http://cloud-app:8080/in")
        );
        assert!(
            t.service("kube-edge-2", "http://127.0.0.1:9000/echo")
                .is_none()
        );
        assert!(
            t.service("kube-edge-1", "http://127.0.0.1:9000/other")
                .is_none()
        );
        assert!(
            t.bus_rules("kube-edge-1")
                .contains(&"default/sb-rest".to_string())
        );
        assert!(t.bus_nodes().contains("kube-edge-1"));

        // The same target_url and node again, even in another namespace, is refused.
        let again = rule("sb-rest-2", "my-servicebus", &sb, "my-rest", &to);
        assert_eq!(
            admit(&again, &eps, &rules),
            Err(RuleError::Duplicate(
                "default/sb-rest".into(),
                "target_url and node"
            ))
        );
        for e in eps.clone() {
            eps.push(Endpoint {
                namespace: "other".into(),
                ..e
            });
        }
        rules.push(Rule {
            namespace: "other".into(),
            ..again
        });
        let (_, refused) = RuleTable::build(&eps, &rules);
        assert_eq!(
            refused,
            [(
                "other/sb-rest-2".to_string(),
                RuleError::Duplicate("default/sb-rest".into(), "target_url and node")
            )]
        );
    }
}
