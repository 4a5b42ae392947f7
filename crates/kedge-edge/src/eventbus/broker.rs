//! The embedded MQTT broker, when the edge runs its own (`Mqtt::Embedded`), and the address
//! EventBus dials either way.

use super::BrokerAddr;
use crate::config::Mqtt;

/// Starts the embedded broker (when the edge runs its own), admitting devices once `admission`
/// opens: the edge's EventBus subscribed.
pub async fn start(
    mqtt: &Mqtt,
    admission: kedge_broker::Admission,
) -> Result<(Option<kedge_broker::Broker>, BrokerAddr), kedge_broker::BindError> {
    match mqtt {
        Mqtt::External(b) => Ok((None, b.clone())),
        Mqtt::Embedded(addr) => {
            let cfg = kedge_broker::BrokerConfig {
                addr: *addr,
                admission: Some(admission),
                ..Default::default()
            };
            let broker = kedge_broker::Broker::start(cfg).await?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let dial = BrokerAddr {
                host,
                port: broker.addr.port(),
                username: None,
                password: None,
                tls: false,
                ca: None,
            };
            Ok((Some(broker), dial))
        }
    }
}
