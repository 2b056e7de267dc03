//! What loading and attaching the programs report, shared by the socket
//! hooks (`loader`) and the tc programs (`tc`): the errors ([`LoadError`]) and
//! what was done to each hook ([`HookAction`], [`Drift`], [`HookReport`]).
//!
//! Both `loader` and `tc` import this module, and it imports neither, so the
//! edges between them point one way (`loader` → `tc`).
//!
//! Must not: load, attach or touch anything (types only).

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;

use crate::dataplane::{bpffs::BpffsError, devices::DeviceError, maps::MapError, pins::PinsError};

/// Errors while loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error(transparent)]
    Pins(#[from] PinsError),
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
    #[error("finding the tc devices")]
    Devices(#[source] DeviceError),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("writing map {map}")]
    TcMap {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// What `SocketHooks::ensure` did to one hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// Attached with this daemon's program already; nothing done.
    Kept,
    /// A link that a previous daemon pinned (in layout `from_version`) was
    /// updated in place to this daemon's program.
    TookOver { from_version: u32 },
    /// Nothing was pinned (a first start): a new link was attached.
    Attached,
    /// The hook was not attached as it should be, and now is (drift).
    Repaired(Drift),
}

/// How a hook was found when it had to be repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drift {
    /// Its link's pin was gone (removed by hand: the link went with it).
    PinMissing,
    /// Its link was pinned but detached from the cgroup (`BPF_LINK_DETACH`).
    LinkDetached,
    /// Its link ran another program.
    OtherProgram,
}

impl Drift {
    pub const fn as_str(self) -> &'static str {
        match self {
            Drift::PinMissing => "pin_missing",
            Drift::LinkDetached => "link_detached",
            Drift::OtherProgram => "other_program",
        }
    }
}

/// One hook and what was done to it, for logs.
#[derive(Clone, Debug)]
pub struct AttachedHook {
    pub program: &'static str,
    /// The device, for a tc program; `None` for a socket hook.
    pub device: Option<String>,
    pub action: HookAction,
}

/// What one `SocketHooks::ensure` did.
#[derive(Clone, Debug, Default)]
pub struct HookReport {
    pub hooks: Vec<AttachedHook>,
    /// Older layouts whose pins this call removed (a finished migration).
    pub migrated_from: Vec<u32>,
    /// What the migration copied into each LRU map (both passes).
    pub migration: Vec<crate::dataplane::migrate::MapCopy>,
}

impl HookReport {
    /// Hooks that had to be repaired.
    pub fn repaired(&self) -> impl Iterator<Item = (&'static str, Drift)> + '_ {
        self.hooks.iter().filter_map(|h| match h.action {
            HookAction::Repaired(drift) => Some((h.program, drift)),
            _ => None,
        })
    }
}

pub(super) fn program_error(
    program: &'static str,
    action: &str,
    e: aya::programs::ProgramError,
) -> LoadError {
    LoadError::Program {
        program,
        action: action.to_owned(),
        source: Box::new(e),
    }
}

pub(super) fn link_error(program: &'static str, action: &str, e: std::io::Error) -> LoadError {
    LoadError::Link {
        program,
        action: action.to_owned(),
        source: e,
    }
}

/// Pins a program's `link` (taken from its program) at `pin`, replacing any
/// older pin atomically: a temporary name is pinned, then renamed over, so
/// the hook is never left without a reference. `name`: the program, for
/// errors. Every hook we attach (socket hooks, source check, tc, XDP) is
/// pinned through here.
pub(crate) fn pin_link<L>(link: L, name: &'static str, pin: &Path) -> Result<(), LoadError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let link = FdLink::try_from(link).map_err(|e| {
        link_error(
            name,
            "is not an fd link",
            std::io::Error::other(e.to_string()),
        )
    })?;
    // bpffs names may not contain '.'.
    let file = pin
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = pin.with_file_name(format!("{file}_new"));
    let _ = fs::remove_file(&tmp);
    let pinned = link
        .pin(&tmp)
        .map_err(|e| link_error(name, "pinning", std::io::Error::other(e.to_string())))?;
    fs::rename(&tmp, pin).map_err(|e| link_error(name, "renaming the pin", e))?;
    // The pin holds the link now; dropping our handle leaves it attached.
    drop(pinned);
    Ok(())
}
