//! Who receives a publish: the subscriptions of every connected client, and the retained
//! messages. Pure state, no I/O. Exact filters (most device subscriptions) are found by hash;
//! only wildcard filters are scanned.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::topic;

/// A connected client, as the broker numbers them.
pub type ClientKey = u64;

/// A retained message: the last one published with retain on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
}

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<(ClientKey, u8)>>,
    wild: Vec<(String, ClientKey, u8)>,
    retained: BTreeMap<String, Retained>,
}

fn upsert(list: &mut Vec<(ClientKey, u8)>, client: ClientKey, qos: u8) {
    match list.iter_mut().find(|(c, _)| *c == client) {
        Some(entry) => entry.1 = qos,
        None => list.push((client, qos)),
    }
}

impl Router {
    /// Adds (or replaces the QoS of) `client`'s subscription to the valid `filter`.
    pub fn subscribe(&mut self, client: ClientKey, filter: &str, qos: u8) {
        if topic::is_exact(filter) {
            upsert(
                self.exact.entry(filter.to_string()).or_default(),
                client,
                qos,
            );
        } else {
            match self
                .wild
                .iter_mut()
                .find(|(f, c, _)| *c == client && f == filter)
            {
                Some(entry) => entry.2 = qos,
                None => self.wild.push((filter.to_string(), client, qos)),
            }
        }
    }

    pub fn unsubscribe(&mut self, client: ClientKey, filter: &str) {
        if let Some(list) = self.exact.get_mut(filter) {
            list.retain(|(c, _)| *c != client);
            if list.is_empty() {
                self.exact.remove(filter);
            }
        }
        self.wild.retain(|(f, c, _)| !(*c == client && f == filter));
    }

    /// Drops every subscription of a client that went away.
    pub fn remove_client(&mut self, client: ClientKey) {
        self.exact.retain(|_, list| {
            list.retain(|(c, _)| *c != client);
            !list.is_empty()
        });
        self.wild.retain(|(_, c, _)| *c != client);
    }

    /// The clients subscribed to `topic`, once each, with the highest QoS they asked for.
    pub fn route(&self, topic_name: &str) -> Vec<(ClientKey, u8)> {
        let mut out: Vec<(ClientKey, u8)> = self.exact.get(topic_name).cloned().unwrap_or_default();
        for (f, c, q) in &self.wild {
            if topic::matches(topic_name, f) {
                match out.iter_mut().find(|(o, _)| o == c) {
                    Some(entry) => entry.1 = entry.1.max(*q),
                    None => out.push((*c, *q)),
                }
            }
        }
        out
    }

    /// Keeps `payload` as the topic's retained message; an empty payload clears it.
    pub fn retain(&mut self, topic_name: &str, payload: Bytes, qos: u8) {
        if payload.is_empty() {
            self.retained.remove(topic_name);
        } else {
            let r = Retained {
                topic: topic_name.to_string(),
                payload,
                qos,
            };
            self.retained.insert(topic_name.to_string(), r);
        }
    }

    /// Retained messages a new subscription to `filter` receives.
    pub fn retained_for(&self, filter: &str) -> Vec<Retained> {
        if topic::is_exact(filter) {
            return self.retained.get(filter).cloned().into_iter().collect();
        }
        self.retained
            .values()
            .filter(|r| topic::matches(&r.topic, filter))
            .cloned()
            .collect()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subscriber_gets_a_publish_once_at_its_highest_qos() {
        let mut r = Router::default();
        r.subscribe(1, "a/b", 0);
        r.subscribe(1, "a/+", 1);
        r.subscribe(2, "#", 0);
        r.subscribe(3, "x/y", 1);
        let mut got = r.route("a/b");
        got.sort();
        assert_eq!(got, [(1, 1), (2, 0)]);
        assert_eq!(r.route("x/y").len(), 2);
        assert!(r.route("$hw/x").is_empty(), "# does not see $ topics");
    }

    #[test]
    fn resubscribing_replaces_and_unsubscribing_removes() {
        let mut r = Router::default();
        r.subscribe(1, "a/+", 0);
        r.subscribe(1, "a/+", 1);
        r.subscribe(1, "a/b", 0);
        r.subscribe(1, "a/b", 1);
        assert_eq!(r.route("a/b"), [(1, 1)]);
        r.unsubscribe(1, "a/+");
        assert_eq!(r.route("a/c"), []);
        r.remove_client(1);
        assert_eq!(r.route("a/b"), []);
        assert!(r.exact.is_empty() && r.wild.is_empty());
    }

    #[test]
    fn retained_messages_are_kept_per_topic_and_cleared_by_an_empty_payload() {
        let mut r = Router::default();
        r.retain("$hw/d/1/delta", Bytes::from_static(b"on"), 1);
        r.retain("$hw/d/2/delta", Bytes::from_static(b"off"), 0);
        r.retain("$hw/d/1/delta", Bytes::from_static(b"off"), 1);
        assert_eq!(r.retained_for("$hw/d/1/delta")[0].payload, "off");
        assert_eq!(r.retained_for("$hw/d/+/delta").len(), 2);
        assert!(r.retained_for("#").is_empty());
        r.retain("$hw/d/1/delta", Bytes::new(), 0);
        assert_eq!(r.retained_count(), 1);
    }
}
