//! EdgeHub: the edge's link to CloudHub.

pub mod certificate;
pub mod client;
pub mod outbox;
