//! One daemon per pin path: an exclusive `flock` on the pin directory itself.
//!
//! Two daemons sharing pins overwrite each other's entries at every
//! reconcile. bpffs holds no regular files (a lock file cannot be created
//! there), but `flock` works on a directory's descriptor, on bpffs as
//! anywhere, and it is shared by every process that sees the same mount:
//! two pods with the host's `/sys/fs/bpf` conflict as they should. The lock
//! goes with the descriptor: it is released when the daemon exits, however it
//! exits (a `kill -9` included), so it can never go stale.
//!
//! `flock` does not say who holds a lock; `/proc/locks` does (the pid as this
//! process's pid namespace sees it, or 0 when it cannot).

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum PinLockError {
    #[error(
        "another proxy daemon{holder} already uses the pin path {path}: only one may \
         (stop it, or give this one another --pin-path)",
        holder = holder_text(*.holder)
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("cannot open the pin path {path} to lock it")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock the pin path {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// Held while the daemon uses the pins; dropping it releases them.
#[derive(Debug)]
pub struct PinLock {
    _lock: Flock<File>,
}

impl PinLock {
    /// Takes the exclusive lock on the directory `pin_path`, without waiting.
    pub fn acquire(pin_path: &Path) -> Result<Self, PinLockError> {
        let dir = File::open(pin_path).map_err(|source| PinLockError::Open {
            path: pin_path.to_path_buf(),
            source,
        })?;
        let id = dir.metadata().ok().map(|m| (m.dev(), m.ino()));
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(PinLockError::Held {
                path: pin_path.to_path_buf(),
                holder: id.and_then(|(dev, ino)| {
                    let locks = std::fs::read_to_string("/proc/locks").ok()?;
                    holder(&locks, dev, ino)
                }),
            }),
            Err((_, source)) => Err(PinLockError::Lock {
                path: pin_path.to_path_buf(),
                source,
            }),
        }
    }
}

/// The pid holding a `FLOCK` on the inode `ino` of device `dev`, from the
/// text of `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 25578 00:28:5007254 0
/// EOF`: the device as hex major:minor). `None` when no line matches or the
/// pid is not visible (0).
pub fn holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts `1: -> FLOCK`; only holders count.
        let (kind, pid, file) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        if *kind != "FLOCK" || !file.eq_ignore_ascii_case(&want) {
            return None;
        }
        pid.parse().ok().filter(|&pid| pid != 0)
    })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 11 00:28:42 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 12 00:28:42 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 13 fe:00:42 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 14 00:28:42 0 EOF\n";
        let dev = nix::sys::stat::makedev(0, 0x28);
        assert_eq!(holder(locks, dev, 42), Some(14));
        assert_eq!(holder(locks, dev, 43), None);
        let hidden = "1: FLOCK  ADVISORY  WRITE 0 00:28:42 0 EOF\n";
        assert_eq!(holder(hidden, dev, 42), None);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = PinLock::acquire(tmp.path()).unwrap();
        let error = PinLock::acquire(tmp.path()).unwrap_err();
        let PinLockError::Held { holder, .. } = &error else {
            panic!("expected Held, got {error:?}");
        };
        assert_eq!(*holder, Some(std::process::id()), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        drop(first);
        PinLock::acquire(tmp.path()).unwrap();
    }
}
