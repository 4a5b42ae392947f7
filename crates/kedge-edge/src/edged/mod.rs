//! Edged: the node itself (and, with issue #6, its pods).

pub mod nodestatus;
