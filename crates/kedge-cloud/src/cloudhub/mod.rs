//! CloudHub: where edges join (HTTPS, port 10002) and connect (wss, port 10000), the delivery of
//! objects to them (`downstream`) and the record of what each acknowledged (`records`).

pub mod dialect;
pub mod downstream;
pub mod hub;
pub mod join;
pub mod records;
