//! The node's own addresses as a source: every address of this network
//! namespace's interfaces (which no ClusterIP, and under
//! `--external-ip-guard=strict` no ExternalIP, may take) and the NodePort
//! addresses among them (`--nodeport-addresses`, [`crate::nodeport`]), kept up
//! to date in the Index while the daemon runs.
//!
//! It re-reads the addresses after each burst of rtnetlink link and address
//! notifications (`dataplane::devices::watch_links`, shared with the tc
//! path), and at every `period` as a safety net (a notification can be lost
//! when the socket's buffer overflows). A change is logged and bumps the sync
//! loop: NodePorts on an address the node gained are served at once, and
//! those on an address it lost are withdrawn.
//!
//! As a gate input ([`super::gate`]), its first bump comes after the first
//! read, so the first sync already has the NodePorts. A read that fails is
//! logged and bumps all the same (the rest must not wait for NodePorts); the
//! addresses already in the Index stay until a read succeeds.
//!
//! Must not: write anything but the interface and nodeport addresses into the
//! Index.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    model::Index,
    nodeport::{self, Cidr},
};

/// Starts following. `events` bumps after link or address changes (none:
/// only the periodic re-read).
pub fn start(
    filter: Vec<Cidr>,
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    events: Option<watch::Receiver<u64>>,
    period: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(follow(filter, index, changes, events, period, shutdown))
}

async fn follow(
    filter: Vec<Cidr>,
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    mut events: Option<watch::Receiver<u64>>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let changed = match nodeport::interface_addresses().await {
            Ok(all) => update(&index, &all, nodeport::select(all.clone(), &filter), first),
            Err(error) => {
                tracing::warn!(
                    error = %format!("{:#}", anyhow::Error::from(error)),
                    "cannot list this node's addresses: NodePort addresses not updated"
                );
                false
            }
        };
        if changed || first {
            changes.send_modify(|v| *v += 1);
        }
        first = false;
        let event = async {
            match events.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        // The watcher is gone: the period alone from now on.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = event => {}
            () = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Sets the addresses in the Index; whether they changed. The NodePort ones
/// are logged when they changed, and always the first time.
fn update(index: &Mutex<Index>, all: &[IpAddr], addresses: Vec<IpAddr>, first: bool) -> bool {
    let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
    let interfaces_changed = index.set_interface_addresses(all.iter().copied());
    let changed = index.set_nodeport_addresses(addresses.clone());
    drop(index);
    if first {
        tracing::info!(addresses = ?addresses, "NodePort addresses");
    } else if changed {
        tracing::info!(addresses = ?addresses, "NodePort addresses changed");
    }
    changed || interfaces_changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeInfo;

    #[test]
    fn a_change_is_reported_once() {
        let index = Mutex::new(Index::new(NodeInfo::named("n1".to_owned())));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let c: IpAddr = "192.0.2.3".parse().expect("ip");
        assert!(update(&index, &[a, c], vec![a], true));
        assert!(!update(&index, &[a, c], vec![a], false));
        assert!(update(&index, &[a, b, c], vec![a, b], false));
        assert!(update(&index, &[b, c], vec![b], false));
        assert!(
            update(&index, &[b], vec![b], false),
            "an interface address went"
        );
        let node = index.lock().expect("lock").node().clone();
        assert_eq!(node.nodeport_addresses, vec![b]);
        assert_eq!(node.interface_addresses, vec![b]);
    }

    /// The first read bumps even with nothing to set, so the gate opens; a
    /// link event makes it read again.
    #[tokio::test(flavor = "current_thread")]
    async fn bumps_after_the_first_read_and_on_events() {
        let index = Arc::new(Mutex::new(Index::new(NodeInfo::named("n1".to_owned()))));
        let (changes_tx, mut changes_rx) = watch::channel(0u64);
        let (events_tx, events_rx) = watch::channel(0u64);
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        // A filter that matches nothing of this machine's: the addresses stay
        // empty, so only the first read bumps.
        let filter = vec!["203.0.113.255/32".parse().expect("cidr")];
        let task = start(
            filter,
            index.clone(),
            changes_tx,
            Some(events_rx),
            Duration::from_secs(3600),
            shutdown_rx,
        );
        tokio::time::timeout(Duration::from_secs(5), changes_rx.changed())
            .await
            .expect("a first bump")
            .expect("sender alive");
        events_tx.send_modify(|v| *v += 1);
        let again = tokio::time::timeout(Duration::from_millis(300), changes_rx.changed()).await;
        assert!(again.is_err(), "an unchanged read must not bump");
        task.abort();
    }
}
