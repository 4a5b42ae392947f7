//! What the edge owes each mapper (pure): the devices and models that should be on it, compared
//! with what it took (the sync records). Level-based, as the cloud→edge delivery: whatever was
//! missed — a mapper down, the edge restarted, a call that failed — is simply still owed.

use std::collections::BTreeMap;

/// Devices and models, which DMI handles with different calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Model,
    Device,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "devicemodel",
            Kind::Device => "device",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "devicemodel" => Some(Kind::Model),
            "device" => Some(Kind::Device),
            _ => None,
        }
    }
}

/// An object on a mapper: its kind, `<ns>/<name>` and the mapper's protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub kind: Kind,
    pub key: String,
    pub protocol: String,
}

/// What to call on a mapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// RegisterDevice / CreateDeviceModel.
    Add(Slot),
    /// UpdateDevice / UpdateDeviceModel.
    Update(Slot),
    /// RemoveDevice / RemoveDeviceModel.
    Remove(Slot),
}

/// The calls that bring `synced` (slot → hash of what the mapper took) to `wanted` (slot → hash
/// of what it should hold), for the protocols a mapper has registered. Models go before the
/// devices that use them, and leave after.
pub fn plan(
    wanted: &BTreeMap<Slot, u64>,
    synced: &BTreeMap<Slot, u64>,
    registered: impl Fn(&str) -> bool,
) -> Vec<Action> {
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for (slot, hash) in wanted.iter().filter(|(s, _)| registered(&s.protocol)) {
        match synced.get(slot) {
            None => adds.push(Action::Add(slot.clone())),
            Some(h) if h != hash => adds.push(Action::Update(slot.clone())),
            Some(_) => {}
        }
    }
    for slot in synced.keys().filter(|s| registered(&s.protocol)) {
        if !wanted.contains_key(slot) {
            removes.push(Action::Remove(slot.clone()));
        }
    }
    // Slots sort models first: adds keep that order, removes go the other way.
    removes.reverse();
    adds.extend(removes);
    adds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: Kind, key: &str, protocol: &str) -> Slot {
        Slot {
            kind,
            key: key.into(),
            protocol: protocol.into(),
        }
    }

    #[test]
    fn owed_calls_in_order_for_registered_mappers_only() {
        let m = slot(Kind::Model, "default/m", "virtual");
        let d1 = slot(Kind::Device, "default/d1", "virtual");
        let d2 = slot(Kind::Device, "default/d2", "virtual");
        let gone = slot(Kind::Device, "default/old", "virtual");
        let old_model = slot(Kind::Model, "default/old-m", "virtual");
        let other = slot(Kind::Device, "default/x", "modbus");
        let wanted = BTreeMap::from([
            (m.clone(), 1),
            (d1.clone(), 2),
            (d2.clone(), 3),
            (other.clone(), 4),
        ]);
        let synced = BTreeMap::from([
            (d1.clone(), 9),
            (d2.clone(), 3),
            (gone.clone(), 1),
            (old_model.clone(), 1),
        ]);
        let actions = plan(&wanted, &synced, |p| p == "virtual");
        assert_eq!(
            actions,
            [
                Action::Add(m),
                Action::Update(d1),
                Action::Remove(gone),
                Action::Remove(old_model),
            ]
        );
        assert!(plan(&wanted, &wanted, |_| true).is_empty(), "nothing owed");
    }

    #[test]
    fn a_device_that_changes_protocol_leaves_one_mapper_for_the_other() {
        let a = slot(Kind::Device, "default/d", "a");
        let b = slot(Kind::Device, "default/d", "b");
        let actions = plan(
            &BTreeMap::from([(b.clone(), 1)]),
            &BTreeMap::from([(a.clone(), 1)]),
            |_| true,
        );
        assert_eq!(actions, [Action::Add(b), Action::Remove(a)]);
    }
}
