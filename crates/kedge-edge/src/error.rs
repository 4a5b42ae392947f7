//! Why the edge could not start.

use std::path::PathBuf;

use crate::edgehub::certificate::JoinError;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("joining the cloud: {0}")]
    Join(#[from] JoinError),
    #[error(transparent)]
    Pki(#[from] kedge_pki::PkiError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Meta(#[from] crate::metamanager::MetaError),
    #[error(transparent)]
    Outbox(#[from] crate::edgehub::outbox::OutboxError),
    #[error(transparent)]
    Broker(#[from] kedge_broker::BindError),
    #[error(transparent)]
    MqttTls(#[from] crate::eventbus::TlsError),
    #[error(transparent)]
    DeviceTwin(#[from] crate::devicetwin::DeviceTwinError),
    #[error(transparent)]
    Cri(#[from] crate::edged::cri::CriError),
    #[error(transparent)]
    Dmi(#[from] crate::devicetwin::dmi::DmiError),
    #[error(transparent)]
    DmiSocket(#[from] crate::devicetwin::dmi::server::SocketError),
    #[error(transparent)]
    ServiceBus(#[from] crate::servicebus::server::BindError),
    #[error(
        "{0} is in use by another kedge edge (it holds edge.lock there); stop it, or give this one its own --data-dir"
    )]
    Locked(PathBuf),
    #[error("edge database {path}: {cause}{hint}")]
    Db {
        path: PathBuf,
        cause: rusqlite::Error,
        /// What to do when the file is damaged.
        hint: &'static str,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}
