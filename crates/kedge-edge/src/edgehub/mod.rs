//! EdgeHub: the edge's link to CloudHub.

pub mod certificate;
