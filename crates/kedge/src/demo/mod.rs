//! Demo devices: `counter` (the seed's counter, over MQTT) and `mapper` (a DMI mapper of
//! virtual devices, the v1beta1 counterpart).

pub mod counter;
pub mod mapper;

pub use counter::counter;
