//! One leader among the cloud replicas for cluster-wide work (the stale-node sweep first), as
//! kube-controller-manager elects one: a coordination.k8s.io Lease (`kedge/kedge-cloud-leader`)
//! renewed every 2 s, taken over by another replica once it has seen the same record for the
//! Lease's 15 s — timed on its own monotonic clock, never by comparing its wall clock with the
//! holder's. A leader that cannot renew for 10 s stops leading before anyone can take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use crate::replicas::{OWNER_PEER, Owner};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "kedge";
const NAME: &str = "kedge-cloud-leader";

/// What a replica knows of the election: whether it leads, and where the leader is reached
/// (its peer address, from the Lease's annotation), so that followers can hand it their rule
/// counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub leads: bool,
    pub peer: Option<String>,
}

/// Whether this cloud does cluster-wide work now: always when it is the only one, else while
/// it leads. Controllers that write shared objects wait on it.
#[derive(Debug, Clone, Default)]
pub struct Gate(Option<watch::Receiver<Leadership>>);

impl Gate {
    /// The gate of a replica that follows `leader`.
    pub fn of(leader: watch::Receiver<Leadership>) -> Gate {
        Gate(Some(leader))
    }

    pub fn open(&self) -> bool {
        self.0.as_ref().is_none_or(|l| l.borrow().leads)
    }

    /// Resolves when leadership changes (never, for the only cloud).
    pub async fn changed(&mut self) {
        let ended = match &mut self.0 {
            Some(l) => l.changed().await.is_err(),
            None => true,
        };
        if ended {
            std::future::pending::<()>().await;
        }
    }
}

/// What a replica does about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by this replica.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// Its holder has not renewed within the duration: take it.
    Take,
    /// Another replica holds it.
    Follow(String),
}

/// What a replica remembers of the Lease between looks: the record it last saw and since when.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Decides at `now` given the Lease's holder and renew time (`None`: no Lease).
    pub fn decide(&mut self, lease: Option<(&str, &str)>, me: &str, now: Instant) -> Decision {
        let Some((holder, renewed)) = lease else {
            self.seen = None;
            return Decision::Create;
        };
        if holder == me {
            return Decision::Renew;
        }
        // Released (no holder): free at once.
        if holder.is_empty() {
            return Decision::Take;
        }
        let record = format!("{holder}@{renewed}");
        match &self.seen {
            Some((r, since)) if *r == record => {
                if now.duration_since(*since) >= LEASE_DURATION {
                    return Decision::Take;
                }
            }
            _ => self.seen = Some((record, now)),
        }
        Decision::Follow(holder.to_string())
    }
}

/// Runs the election as `me` for ever, telling `tx` whether this replica leads.
pub fn spawn(client: kube::Client, me: Owner, tx: watch::Sender<Leadership>) {
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
        let mut observer = Observer::default();
        let mut renewed_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(RETRY);
        loop {
            tick.tick().await;
            let ok = turn(&client, &api, &mut observer, &me).await;
            let now = Instant::now();
            let mut peer = tx.borrow().peer.clone();
            match ok {
                Ok((true, _)) => renewed_at = Some(now),
                Ok((false, holder)) => (renewed_at, peer) = (None, holder),
                Err(e) => tracing::debug!(error = %crate::objects::brief(&e), "leader election"),
            }
            let leads = renewed_at.is_some_and(|t| now.duration_since(t) < RENEW_DEADLINE);
            let now_known = Leadership {
                leads,
                peer: if leads { me.peer.clone() } else { peer },
            };
            if tx.borrow().leads != leads {
                tracing::info!(replica = %me.id, leads, "cluster-wide work: leadership changed");
            }
            tx.send_if_modified(|l| std::mem::replace(l, now_known.clone()) != now_known);
        }
    });
}

/// This replica's name in the election: the host's name and CloudHub's port (unique per
/// replica, also for several on one machine).
pub fn identity(hub_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kedge-cloud".into());
    format!("{host}-{hub_port}")
}

/// One look at the Lease: true when this replica holds it afterwards; else the holder's peer
/// address, if it gives one.
async fn turn(
    client: &kube::Client,
    api: &Api<Lease>,
    observer: &mut Observer,
    me: &Owner,
) -> Result<(bool, Option<String>), kube::Error> {
    let lease = api.get_opt(NAME).await?;
    let holder_peer = lease
        .as_ref()
        .and_then(|l| l.annotations().get(OWNER_PEER).cloned());
    let spec = lease
        .as_ref()
        .and_then(|l| l.spec.clone())
        .unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let seen = lease.as_ref().map(|_| (holder.as_str(), renewed.as_str()));
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mine = |transitions: i32, acquired: Option<MicroTime>| {
        let mut l = lease.clone().unwrap_or_default();
        l.metadata.name = Some(NAME.into());
        l.metadata.namespace = Some(NAMESPACE.into());
        let annotations = l.metadata.annotations.get_or_insert_default();
        match &me.peer {
            Some(p) => annotations.insert(OWNER_PEER.into(), p.clone()),
            None => annotations.remove(OWNER_PEER),
        };
        l.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(me.id.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            renew_time: Some(now.clone()),
            acquire_time: acquired.or(Some(now.clone())),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        l
    };
    let pp = PostParams::default();
    // A write that lost a race (409) means another replica holds it now.
    let written = match observer.decide(seen, &me.id, Instant::now()) {
        Decision::Follow(_) => return Ok((false, holder_peer)),
        Decision::Create => api.create(&pp, &mine(0, None)).await,
        Decision::Renew => {
            let l = mine(
                spec.lease_transitions.unwrap_or(0),
                spec.acquire_time.clone(),
            );
            api.replace(NAME, &pp, &l).await
        }
        Decision::Take => {
            let l = mine(spec.lease_transitions.unwrap_or(0) + 1, None);
            api.replace(NAME, &pp, &l).await
        }
    };
    match written {
        Ok(_) => Ok((true, None)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok((false, None)),
        // No namespace yet: made for the next turn.
        Err(kube::Error::Api(s)) if s.code == 404 && lease.is_none() => {
            crate::objects::create_namespace(client, NAMESPACE).await?;
            Ok((false, None))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_after_its_record_stood_still_for_the_duration() {
        let mut o = Observer::default();
        let t0 = Instant::now();
        assert_eq!(o.decide(None, "me", t0), Decision::Create);
        assert_eq!(o.decide(Some(("me", "r1")), "me", t0), Decision::Renew);
        let other = |r| Some(("other", r));
        assert_eq!(
            o.decide(other("r1"), "me", t0),
            Decision::Follow("other".into())
        );
        // Renewed in time: the clock starts again with each new record.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            o.decide(other("r2"), "me", t1),
            Decision::Follow("other".into())
        );
        let t2 = t1 + LEASE_DURATION - Duration::from_millis(1);
        assert_eq!(
            o.decide(other("r2"), "me", t2),
            Decision::Follow("other".into())
        );
        assert_eq!(
            o.decide(other("r2"), "me", t1 + LEASE_DURATION),
            Decision::Take
        );
        // An empty holder (released) is free at once.
        assert_eq!(o.decide(Some(("", "r3")), "me", t2), Decision::Take);
    }
}
