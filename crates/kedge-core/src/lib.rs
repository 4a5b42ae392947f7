//! kedge's cloud–edge message model, shared by the cloud and the edge. Pure: no sockets, no files.
//!
//! - [`envelope`]: the beehive message that travels on the CloudHub ⇄ EdgeHub WebSocket, exactly
//!   as KubeEdge encodes it, so a stock edgecore could talk to kedge.
//! - [`resource`]: the resource strings in message routes (`node/<id>/<ns>/<type>/<name>` in the
//!   cloud, `<ns>/<type>/<name>` on the wire).
//! - [`delivery`]: the cloud→edge at-least-once queue of one node; [`throttle`]: the token bucket
//!   that slows a node that floods.
//! - [`twin`]: device twins — payloads, type checks, the edge's merge rules, the cloud's report.

pub mod clock;
pub mod delivery;
pub mod devices;
pub mod dialect;
pub mod envelope;
pub mod hostport;
pub mod json;
pub mod labels;
pub mod names;
pub mod resource;
pub mod rule;
pub mod servicebus;
pub mod settings;
pub mod stream;
pub mod throttle;
pub mod twin;
