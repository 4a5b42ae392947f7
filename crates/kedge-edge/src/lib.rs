//! kedge's edge side. Modules are named as in KubeEdge: `edgehub` (joining the cloud and, next,
//! the WebSocket to CloudHub), then `metamanager`, `devicetwin`, `eventbus`, `servicebus`,
//! `edged`.

pub mod edgehub;
