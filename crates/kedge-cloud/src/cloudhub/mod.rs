//! CloudHub: where edges join (HTTPS, port 10002) and connect (wss, port 10000).

pub mod downstream;
pub mod hub;
pub mod join;
