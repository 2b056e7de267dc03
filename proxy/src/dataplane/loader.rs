//! Loads the embedded eBPF object, pins its maps, and attaches the socket hooks
//! to a cgroup through pinned bpf_links.
//!
//! What survives the daemon: maps are pinned under `<pin>/maps` and links under
//! `<pin>/links`, so services keep working while the daemon restarts or is
//! upgraded, and a new daemon picks up the maps' contents. A new daemon takes
//! over a pinned link in place with `BPF_LINK_UPDATE` (atomic: at no moment is
//! nothing attached). `proxy cleanup` removes both.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        cgroup_sock_addr::CgroupSockAddrLink,
        links::{FdLink, PinnedLink},
    },
};
use proxy_common::programs;

use crate::dataplane::{
    bpffs::{self, BpffsError},
    kernel::KernelMaps,
    maps::MapError,
};

/// The kernel object built by `build.rs` (see `proxy-ebpf`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proxy-ebpf"));

/// Every socket hook, in attach order.
pub const SOCKET_HOOKS: [&str; 8] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::RECVMSG4,
    programs::RECVMSG6,
    programs::GETPEERNAME4,
    programs::GETPEERNAME6,
];

/// Errors while loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error("loading the eBPF object (pins under {pin_dir})")]
    Object {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {program}: {action}")]
    Program {
        program: &'static str,
        action: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {program}: link {action}")]
    Link {
        program: &'static str,
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Maps(#[from] MapError),
}

/// Where things live under the pin path.
#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    /// Links attached to one cgroup live in a directory named for the cgroup's
    /// id (its inode number on cgroup2), so a daemon started on another cgroup
    /// never takes over the wrong links. (bpffs holds no plain files.)
    pub fn links_for(&self, cgroup_id: u64) -> PathBuf {
        self.links().join(format!("cgroup-{cgroup_id}"))
    }
}

/// The loaded dataplane. Dropping it leaves the pinned links attached and the
/// pinned maps in place (see the module docs).
pub struct Dataplane {
    _ebpf: Ebpf,
    pub maps: KernelMaps,
    pub attached: Vec<AttachedHook>,
    /// Reader of the programs' aya-log records; `run` forwards them to tracing.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// One attached hook, for logs and `inspect status`.
#[derive(Clone, Debug)]
pub struct AttachedHook {
    pub program: &'static str,
    /// True when an existing pinned link was updated in place.
    pub took_over: bool,
}

/// Map sizes that differ from the object's defaults (`proxy_common::capacity`).
/// They apply when a map is created; a pinned map keeps its size.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSizes {
    /// Entries of each service map (`SVC_V4`, `SVC_V6`): frontends and their slots.
    pub services: Option<u32>,
}

/// Loads the object, pins maps, and attaches every socket hook to `cgroup`.
pub fn load(pins: &PinLayout, cgroup: &Path, sizes: MapSizes) -> Result<Dataplane, LoadError> {
    bpffs::ensure(&pins.root)?;
    bpffs::create_dir(&pins.maps())?;
    bpffs::create_dir(&pins.links())?;

    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pins.maps());
    if let Some(entries) = sizes.services {
        loader.map_max_entries(proxy_common::names::SVC_V4, entries);
        loader.map_max_entries(proxy_common::names::SVC_V6, entries);
    }
    let mut ebpf = loader.load(OBJECT).map_err(|source| LoadError::Object {
        pin_dir: pins.maps(),
        source: Box::new(source),
    })?;

    let cgroup_file = fs::File::open(cgroup).map_err(|source| LoadError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let cgroup_id = cgroup_file
        .metadata()
        .map_err(|source| LoadError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?
        .ino();
    let link_dir = pins.links_for(cgroup_id);
    bpffs::create_dir(&link_dir)?;

    let mut attached = Vec::new();
    for name in SOCKET_HOOKS {
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|e| program_error(name, "has the wrong type", e))?;
        program
            .load()
            .map_err(|e| program_error(name, "verifier rejected it", e))?;

        let pin = link_dir.join(name);
        let existing = open_pinned(&pin);
        let took_over = existing.is_some();
        let link_id = match existing {
            Some(link) => program
                .attach_to_link(link)
                .map_err(|e| program_error(name, "updating the pinned link", e))?,
            // bpf_link attachments always coexist with other programs on the
            // cgroup; the kernel rejects any flag here, so `Single` (flags 0).
            None => program
                .attach(&cgroup_file, CgroupAttachMode::Single)
                .map_err(|e| {
                    program_error(name, &format!("attaching to {}", cgroup.display()), e)
                })?,
        };
        let link = program
            .take_link(link_id)
            .map_err(|e| program_error(name, "taking the link", e))?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            link_error(
                name,
                "is not an fd link",
                std::io::Error::other(e.to_string()),
            )
        })?;
        replace_pin(name, fd_link, &pin)?;
        attached.push(AttachedHook {
            program: name,
            took_over,
        });
    }
    detach_other_cgroups(pins, &link_dir);

    // The programs log only on rare paths (map inconsistencies); a missing
    // logger is not fatal, it only loses those lines.
    let logger = aya_log::EbpfLogger::init(&mut ebpf)
        .inspect_err(|error| tracing::warn!(error = %error, "kernel-side logging unavailable"))
        .ok();
    let maps = KernelMaps::take_from(&mut ebpf)?;
    Ok(Dataplane {
        _ebpf: ebpf,
        maps,
        attached,
        logger,
    })
}

fn open_pinned(pin: &Path) -> Option<CgroupSockAddrLink> {
    let pinned = PinnedLink::from_pin(pin).ok()?;
    CgroupSockAddrLink::try_from(FdLink::from(pinned)).ok()
}

/// Pins `link` at `pin`, replacing any older pin atomically (pin a temporary
/// name, then rename over), so the hook is never left without a reference.
fn replace_pin(name: &'static str, link: FdLink, pin: &Path) -> Result<(), LoadError> {
    // bpffs names may not contain '.'.
    let tmp = pin.with_file_name(format!("{name}_new"));
    let _ = fs::remove_file(&tmp);
    let pinned = link
        .pin(&tmp)
        .map_err(|e| link_error(name, "pinning", std::io::Error::other(e.to_string())))?;
    fs::rename(&tmp, pin).map_err(|e| link_error(name, "renaming the pin", e))?;
    // The pin holds the link now; dropping our handle leaves it attached.
    drop(pinned);
    Ok(())
}

/// Links pinned for another cgroup (the daemon was moved): now that ours are
/// attached, drop theirs, which detaches them.
fn detach_other_cgroups(pins: &PinLayout, keep: &Path) {
    let Ok(entries) = fs::read_dir(pins.links()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir != keep {
            match remove_tree(&dir) {
                Ok(removed) => {
                    tracing::info!(dir = %dir.display(), links = removed.len(), "detached hooks from a previous cgroup")
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), error = %error, "could not remove old link pins")
                }
            }
        }
    }
}

/// Removes every pin: the hooks detach and the maps are freed once nothing
/// else holds them. Missing pins are fine.
pub fn cleanup(pins: &PinLayout) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in [pins.links(), pins.maps()] {
        if dir.exists() {
            removed.extend(remove_tree(&dir)?);
        }
    }
    let _ = fs::remove_dir(&pins.root);
    Ok(removed)
}

/// Removes a directory of pins (one level of subdirectories), returning the pins removed.
fn remove_tree(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            removed.extend(remove_tree(&path)?);
        } else {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    fs::remove_dir(dir)?;
    Ok(removed)
}

fn program_error(program: &'static str, action: &str, e: aya::programs::ProgramError) -> LoadError {
    LoadError::Program {
        program,
        action: action.to_owned(),
        source: Box::new(e),
    }
}

fn link_error(program: &'static str, action: &str, e: std::io::Error) -> LoadError {
    LoadError::Link {
        program,
        action: action.to_owned(),
        source: e,
    }
}
