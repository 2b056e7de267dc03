//! Watches a manifest directory with inotify (through `notify`) and feeds the
//! Index. A burst of file events is debounced into one rescan; a periodic
//! rescan is the safety net for lost events.
//!
//! Reading and parsing run on tokio's blocking pool, never on a runtime
//! worker: a slow file (bounded by the parse limits, but still seconds for
//! megabytes) must not stall `/healthz`, `/livez` or the sync loop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode},
};
use tokio::sync::{mpsc, watch};

use super::dir::{Changes, DirError, ManifestDir};
use crate::{
    config,
    model::{Index, SourceId},
};

/// Errors starting the watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("reading the manifests panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("cannot watch {dir}")]
    Notify {
        dir: String,
        #[source]
        source: notify::Error,
    },
}

/// Reads the directory once, feeds the Index, and returns a task that keeps it
/// up to date until `shutdown`. The first bump of `changes` happens before this
/// returns, so the first sync sees the complete directory.
pub async fn start(
    mut dir: ManifestDir,
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error may mean lost events: rescan.
        if event.as_ref().map_or(true, |e| may_change(&e.kind)) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError::Notify {
        dir: dir.path().display().to_string(),
        source,
    })?;
    watcher
        .watch(dir.path(), RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            dir: dir.path().display().to_string(),
            source,
        })?;

    let changes = Arc::new(changes);
    let (mut dir, scanned) = {
        let (index, changes) = (index.clone(), changes.clone());
        tokio::task::spawn_blocking(move || {
            let scanned = dir.scan();
            if scanned.is_ok() {
                publish(&dir, &index, &changes);
            }
            (dir, scanned)
        })
        .await
        .map_err(WatchError::Panicked)?
    };
    scanned?;

    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropping it stops the inotify watch
        let mut rescan = tokio::time::interval(config::MANIFEST_RESCAN_INTERVAL);
        rescan.reset();
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() { return }
                    debounce(&mut rx, config::MANIFEST_DEBOUNCE).await;
                }
                _ = rescan.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (index, changes) = (index.clone(), changes.clone());
            let job = tokio::task::spawn_blocking(move || {
                match dir.scan() {
                    Ok(changed) if changed.is_empty() => {}
                    Ok(changed) => publish_changes(&dir, &changed, &index, &changes),
                    Err(error) => {
                        tracing::error!(error = %error, "manifest rescan failed; keeping the current state")
                    }
                }
                dir
            });
            dir = tokio::select! {
                joined = job => match joined {
                    Ok(dir) => dir,
                    Err(error) => {
                        tracing::error!(error = %error, "manifest rescan panicked; no longer watching");
                        return;
                    }
                },
                _ = shutdown.changed() => return,
            };
        }
    }))
}

/// Whether an event may mean changed contents. Opening or reading a file (or
/// the directory) does not; the rescan itself opens both, so reacting to
/// those would rescan forever, every debounce period.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Swallows further events until none arrives for `quiet`.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>, quiet: Duration) {
    while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
}

/// Hands the Index what a rescan changed, object by object, so a change to
/// one file costs in proportion to that file, not to the directory.
fn publish_changes(
    dir: &ManifestDir,
    changed: &Changes,
    index: &Mutex<Index>,
    changes: &watch::Sender<u64>,
) {
    let mut index = index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for duplicate in dir.duplicates(changed) {
        duplicate.warn();
    }
    let mut any = false;
    for id in &changed.services {
        any |= match dir.service(id) {
            Some(service) => index.apply_service(SourceId::Manifests, service.clone()),
            None => index.delete_service(SourceId::Manifests, id),
        };
    }
    for id in &changed.slices {
        any |= match dir.slice(id) {
            Some(slice) => index.apply_slice(SourceId::Manifests, slice.clone()),
            None => index.delete_slice(SourceId::Manifests, id),
        };
    }
    drop(index);
    if any {
        changes.send_modify(|v| *v += 1);
    }
}

fn publish(dir: &ManifestDir, index: &Mutex<Index>, changes: &watch::Sender<u64>) {
    let (services, slices) = dir.objects();
    // Only the manifests' own objects are replaced; the Index applies label
    // selection and lets Kubernetes objects of the same name win.
    let mut index = index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    index.reset(SourceId::Manifests, services, slices);
    drop(index);
    changes.send_modify(|v| *v += 1);
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn reads_and_opens_are_not_changes_but_writes_and_renames_are() {
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Any),
        ] {
            assert!(!may_change(&quiet), "{quiet:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(may_change(&change), "{change:?}");
        }
    }
}
