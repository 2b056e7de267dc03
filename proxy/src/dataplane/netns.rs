//! The node's network namespaces, and running work inside each of them.
//!
//! Found two ways, merged:
//! - through the processes the socket hooks serve: every pid in the hooks'
//!   cgroup and the cgroups below it (`cgroup.procs`), then that process's
//!   `/proc/<pid>/ns/net`. This needs the node's pid namespace (`hostPID`)
//!   and, for processes of another user, `CAP_SYS_PTRACE`. Only these
//!   processes matter: a socket is aimed at a backend by the hooks only when
//!   its process is under their cgroup (on a node, the cgroup2 root: every
//!   process);
//! - through directories of pinned namespaces (`--netns-dir`): every nsfs
//!   file in them, such as the pods' namespaces that containerd and CRI-O pin
//!   in `/run/netns` (what `ip netns` lists). Opening them needs neither
//!   `hostPID` nor `CAP_SYS_PTRACE`.
//!
//! Namespaces are told apart by the nsfs file's device and inode (what
//! `ip netns identify` and `lsns` compare), so a pod's hundred processes, and
//! a namespace found both ways, cost one visit. Each change costs one `stat`
//! per process and per pinned file, and one `setns` plus one sock_diag dump
//! per distinct namespace.
//!
//! Entering a namespace is `setns(CLONE_NEWNET)` on one dedicated OS thread
//! that exists for that walk only; the daemon's other threads (the tokio
//! workers among them) never change namespace. `setns` into a namespace the
//! daemon did not create needs `CAP_SYS_ADMIN`; without it each foreign
//! namespace reports [`Visit::Denied`] and only the daemon's own is worked in.
//!
//! Must not: keep namespace files open between walks (a deleted pod's
//! namespace would live on), or enter a namespace on a shared thread.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io,
    os::{fd::AsFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use nix::{errno::Errno, sched::CloneFlags};

/// A network namespace's identity: its nsfs file's device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// A namespace to visit: its identity and an open handle on it (held for one
/// walk only, so the namespace cannot vanish or be swapped under us).
#[derive(Debug)]
pub struct Namespace {
    pub id: NetnsId,
    /// Where it was found (`/proc/<pid>/ns/net`), for logs.
    pub path: PathBuf,
    file: File,
}

/// What [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The daemon's own namespace.
    pub own: Option<NetnsId>,
    /// Every other namespace of a served process, each once, by identity.
    pub others: Vec<Namespace>,
    /// Processes listed but not open-able (exited meanwhile, or not ours to
    /// inspect without `CAP_SYS_PTRACE`).
    pub unreadable: usize,
    /// Processes of the cgroup that this daemon cannot name (another pid
    /// namespace), so neither their network namespaces.
    pub hidden: usize,
}

/// Errors finding namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot read the daemon's own network namespace {path}")]
    Own {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the processes of cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the pinned network namespaces in {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the namespace walker thread panicked")]
    Panicked,
}

/// What `cgroup.procs` files list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupPids {
    pub pids: BTreeSet<u32>,
    /// Processes listed as `0`: they belong to a pid namespace the reader
    /// cannot see into (a container without `hostPID`).
    pub hidden: usize,
}

impl CgroupPids {
    /// Adds the pids of one `cgroup.procs` file; garbage lines are skipped.
    pub fn parse(&mut self, text: &str) {
        for pid in text
            .lines()
            .filter_map(|line| line.trim().parse::<u32>().ok())
        {
            if pid == 0 {
                self.hidden += 1;
            } else {
                self.pids.insert(pid);
            }
        }
    }
}

/// Every pid in cgroup `dir` and the cgroups below it. A cgroup removed
/// during the walk is skipped; `dir` itself must be readable.
pub fn cgroup_pids(dir: &Path) -> Result<CgroupPids, NetnsError> {
    let mut out = CgroupPids::default();
    let procs = dir.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(|source| NetnsError::Cgroup {
        path: procs.clone(),
        source,
    })?;
    out.parse(&text);
    let mut pending: Vec<PathBuf> = subdirs(dir);
    while let Some(next) = pending.pop() {
        if let Ok(text) = fs::read_to_string(next.join("cgroup.procs")) {
            out.parse(&text);
        }
        pending.extend(subdirs(&next));
    }
    Ok(out)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces of the processes in `cgroup` (and below), and
/// those pinned in `pin_dirs`, each once, apart from the daemon's own.
/// `proc_root` is `/proc` (a parameter for tests). A pin directory that does
/// not exist holds nothing yet (the runtime makes it with the first pod); one
/// that cannot be listed otherwise is an error naming it (the caller logs it
/// and serves its own namespace).
pub fn discover(
    cgroup: &Path,
    pin_dirs: &[PathBuf],
    proc_root: &Path,
) -> Result<Discovery, NetnsError> {
    let own_path = proc_root.join("thread-self/ns/net");
    let own = fs::metadata(&own_path)
        .map(|m| NetnsId::of(&m))
        .map_err(|source| NetnsError::Own {
            path: own_path,
            source,
        })?;
    let mut seen = BTreeSet::from([own]);
    let mut found = Discovery {
        own: Some(own),
        ..Discovery::default()
    };
    let listed = cgroup_pids(cgroup)?;
    found.hidden = listed.hidden;
    for pid in listed.pids {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        // `stat` first, so a namespace already seen is not opened again.
        let Ok(metadata) = fs::metadata(&path) else {
            found.unreadable += 1;
            continue;
        };
        if seen.contains(&NetnsId::of(&metadata)) {
            continue;
        }
        // The pid may have been reused between `stat` and `open`: identify
        // the namespace by what was opened.
        let Some((file, id)) = File::open(&path)
            .and_then(|f| f.metadata().map(|m| (f, NetnsId::of(&m))))
            .ok()
        else {
            found.unreadable += 1;
            continue;
        };
        if seen.insert(id) {
            found.others.push(Namespace { id, path, file });
        }
    }
    for dir in pin_dirs {
        add_pinned(dir, &mut seen, &mut found)?;
    }
    Ok(found)
}

/// Adds the nsfs files in `dir` (pinned network namespaces) not yet `seen`.
/// Anything else in it (a regular file, a namespace unpinned meanwhile) is
/// skipped.
fn add_pinned(
    dir: &Path,
    seen: &mut BTreeSet<NetnsId>,
    found: &mut Discovery,
) -> Result<(), NetnsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NetnsError::PinDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let is_nsfs = nix::sys::statfs::fstatfs(&file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
        let Some(id) = is_nsfs
            .then(|| file.metadata().ok().map(|m| NetnsId::of(&m)))
            .flatten()
        else {
            continue;
        };
        if seen.insert(id) {
            found.others.push(Namespace { id, path, file });
        }
    }
    Ok(())
}

/// How a visit to one namespace went.
#[derive(Debug)]
pub enum Visit<T> {
    /// The work ran there and returned this.
    Done(T),
    /// `setns` was refused (`EPERM`: the daemon lacks `CAP_SYS_ADMIN`).
    Denied,
    /// `setns` failed otherwise.
    Failed(Errno),
}

/// Each namespace visited (`None`: the daemon's own) and how it went.
pub type Visits<T> = Vec<(Option<NetnsId>, Visit<T>)>;

/// Runs `work` in the daemon's own namespace, then inside each of `others`,
/// all on one new OS thread that ends with the walk. Results come in the
/// order visited, the own namespace first (as `None`).
pub fn visit_each<T: Send>(
    others: Vec<Namespace>,
    mut work: impl FnMut() -> T + Send,
) -> Result<Visits<T>, NetnsError> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut out = Vec::with_capacity(others.len() + 1);
                out.push((None, Visit::Done(work())));
                for ns in others {
                    let visit = match nix::sched::setns(ns.file.as_fd(), CloneFlags::CLONE_NEWNET) {
                        Ok(()) => Visit::Done(work()),
                        Err(Errno::EPERM) => Visit::Denied,
                        Err(errno) => Visit::Failed(errno),
                    };
                    out.push((Some(ns.id), visit));
                }
                // This thread is in the last namespace it entered; it ends
                // here and takes that with it.
                out
            })
            .join()
            .map_err(|_| NetnsError::Panicked)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_procs_count_zero_as_hidden_and_skip_garbage() {
        let mut listed = CgroupPids::default();
        listed.parse("12\n0\n\n 34 \nx\n0\n");
        assert_eq!(listed.pids.into_iter().collect::<Vec<_>>(), [12, 34]);
        assert_eq!(listed.hidden, 2);
    }

    #[test]
    fn pids_come_from_the_cgroup_and_every_cgroup_below() {
        let root = tempfile::tempdir().expect("tempdir");
        let a = root.path().join("a");
        let b = a.join("b");
        fs::create_dir_all(&b).expect("mkdir");
        fs::write(root.path().join("cgroup.procs"), "1\n").expect("write");
        fs::write(a.join("cgroup.procs"), "2\n3\n").expect("write");
        fs::write(b.join("cgroup.procs"), "3\n4\n0\n").expect("write");
        let listed = cgroup_pids(root.path()).expect("readable");
        assert_eq!(listed.pids.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(listed.hidden, 1);
    }

    #[test]
    fn a_missing_cgroup_is_an_error_naming_it() {
        let error = cgroup_pids(Path::new("/nonexistent/cgroup")).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/cgroup"), "{error}");
    }

    /// Against this machine's `/proc`: our own pid is in the fake cgroup,
    /// and our namespace is the daemon's own, so nothing else is visited.
    #[test]
    fn the_own_namespace_is_not_listed_among_the_others() {
        let cgroup = tempfile::tempdir().expect("tempdir");
        fs::write(
            cgroup.path().join("cgroup.procs"),
            format!("{}\n999999999\n", std::process::id()),
        )
        .expect("write");
        let found = discover(cgroup.path(), &[], Path::new("/proc")).expect("discover");
        assert!(found.own.is_some());
        assert!(found.others.is_empty(), "{:?}", found.others);
        assert_eq!(found.unreadable, 1, "the pid that does not exist");
    }

    /// A pin directory holding our own namespace (bind-mounting needs
    /// privileges, so the nsfs file is `/proc`'s, reached through a symlink)
    /// and a regular file: neither is another namespace.
    #[test]
    fn pinned_files_that_are_not_another_namespace_are_skipped() {
        let cgroup = tempfile::tempdir().expect("tempdir");
        fs::write(cgroup.path().join("cgroup.procs"), "").expect("write");
        let pins = tempfile::tempdir().expect("tempdir");
        fs::write(pins.path().join("not-a-namespace"), "x").expect("write");
        std::os::unix::fs::symlink("/proc/thread-self/ns/net", pins.path().join("own"))
            .expect("symlink");
        let found = discover(
            cgroup.path(),
            &[pins.path().to_path_buf()],
            Path::new("/proc"),
        )
        .expect("discover");
        assert!(found.others.is_empty(), "{:?}", found.others);
    }

    #[test]
    fn a_missing_pin_directory_holds_nothing_and_a_file_is_an_error_naming_it() {
        let cgroup = tempfile::tempdir().expect("tempdir");
        fs::write(cgroup.path().join("cgroup.procs"), "").expect("write");
        let found = discover(
            cgroup.path(),
            &[PathBuf::from("/nonexistent/netns")],
            Path::new("/proc"),
        )
        .expect("a missing directory is empty");
        assert!(found.others.is_empty());
        let file = cgroup.path().join("cgroup.procs");
        let error = discover(
            cgroup.path(),
            std::slice::from_ref(&file),
            Path::new("/proc"),
        )
        .expect_err("not a directory");
        assert!(
            error.to_string().contains(&*file.to_string_lossy()),
            "{error}"
        );
    }

    #[test]
    fn work_runs_in_the_own_namespace_first() {
        let visits = visit_each(Vec::new(), || 7).expect("no panic");
        assert!(matches!(visits.as_slice(), [(None, Visit::Done(7))]));
    }
}
