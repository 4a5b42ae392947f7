//! DeviceTwin's MQTT topics (KubeEdge v1.17+: device id `<namespace>/<name>`).

/// What the edge subscribes to for DeviceTwin.
pub const SUBSCRIPTIONS: [&str; 3] = [
    "$hw/events/device/+/+/twin/+",
    "$hw/events/device/+/+/state/update",
    "$hw/events/node/+/membership/get",
];

const DEVICE: &str = "$hw/events/device/";
const NODE: &str = "$hw/events/node/";

/// An inbound DeviceTwin topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    TwinUpdate { id: String },
    TwinGet { id: String },
    StateUpdate { id: String },
    Updated { id: String },
    MembershipGet { node: String },
}

/// Parses an inbound topic; `None` for topics DeviceTwin publishes itself (results, deltas…)
/// or does not handle.
pub fn parse(topic: &str) -> Option<Inbound> {
    if let Some(rest) = topic.strip_prefix(DEVICE) {
        let mut parts = rest.splitn(3, '/');
        let (ns, name, action) = (parts.next()?, parts.next()?, parts.next()?);
        if ns.is_empty() || name.is_empty() {
            return None;
        }
        let id = format!("{ns}/{name}");
        return match action {
            "twin/update" => Some(Inbound::TwinUpdate { id }),
            "twin/get" => Some(Inbound::TwinGet { id }),
            "state/update" => Some(Inbound::StateUpdate { id }),
            "updated" => Some(Inbound::Updated { id }),
            _ => None,
        };
    }
    let node = topic.strip_prefix(NODE)?.strip_suffix("/membership/get")?;
    (!node.is_empty() && !node.contains('/')).then(|| Inbound::MembershipGet {
        node: node.to_string(),
    })
}

/// `$hw/events/device/<id>/<suffix>`, e.g. `twin/update/delta`.
pub fn device(id: &str, suffix: &str) -> String {
    format!("{DEVICE}{id}/{suffix}")
}

/// `$hw/events/node/<node>/membership/<suffix>`.
pub fn membership(node: &str, suffix: &str) -> String {
    format!("{NODE}{node}/membership/{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_topics_parse_and_outbound_ones_do_not() {
        let id = || "default/counter".to_string();
        assert_eq!(
            parse("$hw/events/device/default/counter/twin/update"),
            Some(Inbound::TwinUpdate { id: id() })
        );
        assert_eq!(
            parse("$hw/events/device/default/counter/twin/get"),
            Some(Inbound::TwinGet { id: id() })
        );
        assert_eq!(
            parse("$hw/events/device/default/counter/state/update"),
            Some(Inbound::StateUpdate { id: id() })
        );
        assert_eq!(
            parse("$hw/events/node/kube-edge-1/membership/get"),
            Some(Inbound::MembershipGet {
                node: "kube-edge-1".into()
            })
        );
        for own in [
            "$hw/events/device/default/counter/twin/update/delta",
            "$hw/events/device/default/counter/twin/get/result",
            "$hw/events/device/default/counter/twin/update/result",
            "$hw/events/device/counter/twin/update",
            "$hw/events/node/n/membership/updated",
            "default/test",
        ] {
            assert_eq!(parse(own), None, "{own}");
        }
        assert_eq!(
            device("default/counter", "twin/update/delta"),
            "$hw/events/device/default/counter/twin/update/delta"
        );
        assert_eq!(
            membership("n1", "get/result"),
            "$hw/events/node/n1/membership/get/result"
        );
    }
}
