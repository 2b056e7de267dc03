//! The readiness gate between the sources and the sync loop.
//!
//! The sync loop programs nothing before the first bump of its `changes` watch,
//! and then trusts the Index to be complete: a restarted daemon prunes whatever
//! the Index does not explain. With several sources that bump must wait for
//! **every** source's first complete state, or the first sync would delete the
//! entries of a source still listing.
//!
//! So each source gets its own `watch::Sender<u64>` ([`Gate::input`]) and keeps
//! the usual contract: bump after each change to the Index, the first bump
//! meaning "my initial state is complete" (the manifest source after its first
//! scan, the Kubernetes source after both initial lists). The gate forwards
//! bumps to the sync loop's `changes` only once every input has bumped at least
//! once; the bump that completes the set is forwarded too, so the sync loop's
//! first pass sees all sources. Sources keep writing to the Index before then;
//! that is harmless, since nothing reads it for programming until the gate opens.
//!
//! A source that ends before its first bump keeps the gate closed: programming
//! a partial state would be worse than programming nothing (the datapath pinned
//! by a previous daemon keeps serving meanwhile).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{sync::watch, task::JoinHandle};

/// Collects the sources' inputs; [`Gate::start`] spawns the forwarding.
pub struct Gate {
    out: watch::Sender<u64>,
    inputs: Vec<(&'static str, watch::Receiver<u64>)>,
}

impl Gate {
    /// A gate in front of the sync loop's `changes`.
    pub fn new(out: watch::Sender<u64>) -> Self {
        Self {
            out,
            inputs: Vec::new(),
        }
    }

    /// A new input for the source called `name` (used in logs).
    pub fn input(&mut self, name: &'static str) -> watch::Sender<u64> {
        let (tx, rx) = watch::channel(0);
        self.inputs.push((name, rx));
        tx
    }

    /// Forwards until `shutdown`. One small task per input.
    pub fn start(self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let waiting: BTreeSet<&'static str> = self.inputs.iter().map(|(name, _)| *name).collect();
        tracing::info!(sources = ?waiting, "waiting for every source's first complete state before programming");
        let waiting = Arc::new(Mutex::new(waiting));
        self.inputs
            .into_iter()
            .map(|(name, rx)| {
                tokio::spawn(forward(
                    name,
                    rx,
                    self.out.clone(),
                    waiting.clone(),
                    shutdown.clone(),
                ))
            })
            .collect()
    }
}

async fn forward(
    name: &'static str,
    mut rx: watch::Receiver<u64>,
    out: watch::Sender<u64>,
    waiting: Arc<Mutex<BTreeSet<&'static str>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let open = {
            let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.remove(name) {
                if waiting.is_empty() {
                    tracing::info!(source = name, "all sources ready; programming starts");
                } else {
                    tracing::info!(source = name, still_waiting = ?*waiting, "source ready");
                }
            }
            waiting.is_empty()
        };
        if open {
            out.send_modify(|v| *v += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn bumped(rx: &mut watch::Receiver<u64>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), rx.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn opens_only_when_every_source_is_ready() {
        let (out, mut changes) = watch::channel(0);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let mut gate = Gate::new(out);
        let manifests = gate.input("manifests");
        let kube = gate.input("kubernetes");
        let _tasks = gate.start(shutdown);

        manifests.send_modify(|v| *v += 1);
        manifests.send_modify(|v| *v += 1);
        assert!(
            !bumped(&mut changes).await,
            "gate opened with kubernetes still listing"
        );

        kube.send_modify(|v| *v += 1);
        assert!(
            bumped(&mut changes).await,
            "the completing bump is forwarded"
        );

        manifests.send_modify(|v| *v += 1);
        assert!(bumped(&mut changes).await, "later bumps are forwarded");
        kube.send_modify(|v| *v += 1);
        assert!(bumped(&mut changes).await, "later bumps are forwarded");
    }

    #[tokio::test]
    async fn a_single_source_passes_through() {
        let (out, mut changes) = watch::channel(0);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let mut gate = Gate::new(out);
        let only = gate.input("manifests");
        let _tasks = gate.start(shutdown);
        only.send_modify(|v| *v += 1);
        assert!(bumped(&mut changes).await);
        assert_eq!(*changes.borrow(), 1);
    }

    #[tokio::test]
    async fn a_source_that_ends_unready_keeps_it_closed() {
        let (out, mut changes) = watch::channel(0);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let mut gate = Gate::new(out);
        let manifests = gate.input("manifests");
        drop(gate.input("kubernetes"));
        let _tasks = gate.start(shutdown);
        manifests.send_modify(|v| *v += 1);
        assert!(!bumped(&mut changes).await);
        assert_eq!(*changes.borrow(), 0);
    }
}
