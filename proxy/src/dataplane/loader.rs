//! Loads the embedded eBPF object with its maps pinned, and attaches the
//! socket hooks to a cgroup through pinned bpf_links.
//!
//! What survives the daemon: maps are pinned under `<pin>/v<N>/maps` and links
//! under `<pin>/v<N>/links` (N is [`LAYOUT_VERSION`], see `pins`), so services
//! keep working while the daemon restarts or is upgraded, and a new daemon
//! adopts the maps' contents. [`load`] loads and verifies the programs but
//! attaches nothing; [`SocketHooks::ensure`] does, once the sync loop has
//! written the first complete state into the maps. It takes over a pinned link
//! in place with `BPF_LINK_UPDATE` (atomic: at no moment is nothing attached),
//! and later re-attaches a hook it finds detached (drift). `proxy cleanup`
//! removes everything.
//!
//! Layout versions: pins of this version are adopted as they are. Pins of an
//! older version are migrated: this daemon's maps are new, the first sync
//! programs them in full from the desired state, then each hook's program is
//! swapped onto the old link (which from then on runs a program that uses the
//! new maps), and only then are the old pins removed. A crash at any step
//! leaves the old pins in place, and the next start resumes. Pins of a newer
//! version make [`load`] fail before anything is changed.
//!
//! The tc programs (`tc`) are loaded with the socket hooks and attached with
//! them, by the same `ensure`, to the devices `--devices`/`--pod-devices`
//! select. With `--socket-lb=false` the socket hooks are neither loaded nor
//! attached, and links a previous daemon left on a cgroup are dropped.

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
use proxy_common::{LAYOUT_VERSION, programs};

pub use crate::dataplane::pins::PinLayout;
use crate::dataplane::{
    bpffs,
    hooks::{
        AttachedHook, Drift, HookAction, HookReport, LoadError, link_error, pin_link, program_error,
    },
    kernel::KernelMaps,
    link_info, migrate,
    pins::{self, CGROUP_LINKS_PREFIX, FoundLayout, Inventory},
    source_check::{self, SourceCheck},
    tc::{TcHooks, TcSettings},
};
use crate::{error_chain::error_chain, plan::Applied};

/// The kernel object built by `build.rs` (see `proxy-ebpf`). Public so the
/// packet-level tests (`tests/tests/tc_packets.rs`) run exactly these programs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proxy-ebpf"));

/// Every socket hook, in attach order: the reverse path (`recvmsg`,
/// `getpeername`) before the forward one (`connect`, `sendmsg`), so no socket
/// is ever translated while the hooks that show it the VIP are missing.
pub const SOCKET_HOOKS: [&str; 8] = [
    programs::RECVMSG4,
    programs::RECVMSG6,
    programs::GETPEERNAME4,
    programs::GETPEERNAME6,
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
];

/// The loaded dataplane: the maps for the writer, and the hooks, loaded and
/// verified but not attached yet (see [`SocketHooks::ensure`]).
pub struct Dataplane {
    pub maps: KernelMaps,
    pub hooks: SocketHooks,
    /// Reader of the programs' aya-log records; `run` forwards them to tracing.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Versions of the older layouts found, which the first
    /// [`SocketHooks::ensure`] migrates away from.
    pub migrating_from: Vec<u32>,
}

/// Map sizes that differ from the object's defaults (`proxy_common::capacity`).
/// They apply when a map is created; a pinned map keeps its size.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSizes {
    /// Entries of each service map (`SVC_V4`, `SVC_V6`): frontends and their slots.
    pub services: Option<u32>,
    /// Entries of each backend map (`BACKEND_V4`, `BACKEND_V6`).
    pub backends: Option<u32>,
}

/// The tc path's settings for [`load`].
#[derive(Clone, Debug)]
pub struct TcOptions {
    pub settings: TcSettings,
    /// True when a tc program the verifier rejects should only be logged,
    /// leaving the socket hooks to serve (`--mode auto` with socket LB on);
    /// false makes it a load error.
    pub optional: bool,
}

/// The socket hooks of the loaded object and where they attach, and the tc
/// programs ([`TcHooks`]). Dropping it leaves the pinned links attached (see
/// the module docs).
pub struct SocketHooks {
    ebpf: Ebpf,
    /// `--socket-lb`: false when the socket hooks are not used at all.
    socket_lb: bool,
    /// The tc programs, when loaded.
    tc: Option<TcHooks>,
    /// An `ensure` has attached the tc programs once.
    tc_settled: bool,
    cgroup: PathBuf,
    cgroup_file: fs::File,
    cgroup_id: u64,
    pins: PinLayout,
    /// Layouts older than ours, newest first, until the migration is done.
    older: Vec<FoundLayout>,
    /// True once an `ensure` has succeeded: from then on, anything it has to
    /// fix is drift.
    settled: bool,
    /// The `sock_egress` source check (attached only while wanted).
    source_check: SourceCheck,
}

/// Loads the object (maps pinned, created with `sizes`, or adopted from their pins) and verifies
/// every socket hook, attaching none. Refuses pins of a newer layout version
/// before it changes anything.
pub fn load(
    pins: &PinLayout,
    cgroup: &Path,
    sizes: MapSizes,
    tc: Option<TcOptions>,
) -> Result<Dataplane, LoadError> {
    bpffs::ensure(&pins.root)?;
    let inventory = Inventory::read(pins)?;
    inventory.check(pins)?;
    for path in &inventory.unknown {
        tracing::warn!(path = %path.display(), "not a pin layout of this proxy; left alone");
    }
    let older = inventory.older();
    for layout in &older {
        tracing::warn!(
            found = layout.version,
            expected = LAYOUT_VERSION,
            pin_path = %pins.root.display(),
            "pins of an older layout version: migrating (new maps, programmed in full from the \
             desired state; then the programs are swapped onto the existing links; then the old \
             pins are removed)"
        );
    }
    bpffs::create_dir(&pins.maps())?;
    bpffs::create_dir(&pins.links())?;

    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pins.maps());
    if let Some(entries) = sizes.services {
        loader.map_max_entries(proxy_common::names::SVC_V4, entries);
        loader.map_max_entries(proxy_common::names::SVC_V6, entries);
    }
    if let Some(entries) = sizes.backends {
        loader.map_max_entries(proxy_common::names::BACKEND_V4, entries);
        loader.map_max_entries(proxy_common::names::BACKEND_V6, entries);
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

    // Verify every program now: a rejection fails the start, not a later sync.
    let socket_lb = tc.as_ref().is_none_or(|tc| tc.settings.socket_lb);
    if socket_lb {
        for name in SOCKET_HOOKS {
            socket_hook(&mut ebpf, name)?
                .load()
                .map_err(|e| program_error(name, "verifier rejected it", e))?;
        }
        source_check::load(&mut ebpf)?;
    }
    let tc = match tc {
        None => None,
        Some(options) => match TcHooks::load(&mut ebpf).and_then(|()| {
            let hooks = TcHooks::new(options.settings);
            hooks.load_xdp(&mut ebpf).map(|()| hooks)
        }) {
            Ok(hooks) => Some(hooks),
            Err(error) if options.optional => {
                tracing::error!(
                    error = %error_chain(&error),
                    "the tc programs cannot be loaded: no per-packet path (NodePort, \
                     ExternalIPs, LoadBalancer IPs are not served); the socket hooks still serve"
                );
                None
            }
            Err(error) => return Err(error),
        },
    };

    // The programs log only on rare paths (map inconsistencies); a missing
    // logger is not fatal, it only loses those lines.
    let logger = aya_log::EbpfLogger::init(&mut ebpf)
        .inspect_err(|error| tracing::warn!(error = %error, "kernel-side logging unavailable"))
        .ok();
    let maps = KernelMaps::take_from(&mut ebpf)?;
    Ok(Dataplane {
        maps,
        migrating_from: older.iter().map(|l| l.version).collect(),
        hooks: SocketHooks {
            ebpf,
            socket_lb,
            tc,
            tc_settled: false,
            cgroup: cgroup.to_path_buf(),
            cgroup_file,
            cgroup_id,
            pins: pins.clone(),
            older,
            settled: false,
            source_check: SourceCheck::default(),
        },
        logger,
    })
}

/// Where a hook's link was found.
enum Found {
    /// Pinned at `pin` (of layout `version`) and attached to our cgroup, with
    /// another program: take it over.
    Attached { pin: PathBuf, version: u32 },
    /// Pinned, but detached from our cgroup.
    Detached,
    /// Not pinned; `settled` tells whether it should have been.
    Nothing,
}

impl SocketHooks {
    /// The cgroup the hooks attach to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Makes every hook attached to the cgroup, through a link pinned in this
    /// layout, running this daemon's program.
    ///
    /// The first call takes over the links a previous daemon pinned (in this
    /// layout or an older one) with `BPF_LINK_UPDATE`, attaches new links
    /// where there were none, then drops links pinned for other cgroups and
    /// removes the pins of older layouts (the end of a migration). Later calls
    /// repair: a hook found detached, unpinned or running another program is
    /// attached again, and reported as [`HookAction::Repaired`].
    ///
    /// A migration from layout [`migrate::READS_VERSION`] copies the old
    /// layout's conntrack, affinity and socket rev-NAT entries into the new
    /// maps (translated against `applied`, the writer's state) before the
    /// swap, and again after it for entries the old programs made meanwhile;
    /// only then are the old pins removed.
    pub fn ensure(&mut self, applied: &Applied) -> Result<HookReport, LoadError> {
        let link_dir = self.pins.links_for(self.cgroup_id);
        let mut report = HookReport::default();
        let mut copies = if self.settled {
            Vec::new()
        } else {
            self.migrate(applied, migrate::Pass::BeforeSwap)
        };
        if self.socket_lb {
            bpffs::create_dir(&link_dir)?;
            for name in SOCKET_HOOKS {
                let action = self.ensure_one(name, &link_dir)?;
                report.hooks.push(AttachedHook {
                    program: name,
                    device: None,
                    action,
                });
            }
            if let Some(action) = self.ensure_source_check()? {
                report.hooks.push(AttachedHook {
                    program: source_check::NAME,
                    device: None,
                    action,
                });
            }
        }
        if let Some(tc) = self.tc.as_mut() {
            report
                .hooks
                .extend(tc.ensure(&mut self.ebpf, &self.pins, self.tc_settled)?);
            self.tc_settled = true;
        }
        if !self.settled {
            let again = self.migrate(applied, migrate::Pass::AfterSwap);
            for (total, more) in copies.iter_mut().zip(&again) {
                total.0.add(&more.0);
                total.1 += more.0.copied;
            }
            for (copy, after_swap) in &copies {
                tracing::info!(
                    map = copy.map,
                    copied = copy.copied,
                    copied_after_swap = after_swap,
                    dropped = copy.dropped,
                    kept_new = copy.kept_new,
                    "layout migration: entries copied into the new map"
                );
            }
            report.migration = copies.into_iter().map(|(copy, _)| copy).collect();
            if self.socket_lb {
                remove_strays(&link_dir);
            }
            // Without socket LB, this drops every cgroup's links (ours too).
            detach_other_cgroups(
                &self.pins.links(),
                self.socket_lb.then_some(link_dir.as_path()),
            );
            for layout in std::mem::take(&mut self.older) {
                match layout.remove() {
                    Ok(removed) => {
                        tracing::info!(
                            from = layout.version,
                            to = LAYOUT_VERSION,
                            pins = removed.len(),
                            "layout migration complete: the old pins are removed"
                        );
                        report.migrated_from.push(layout.version);
                    }
                    Err(error) => tracing::warn!(
                        version = layout.version,
                        error = %error,
                        "could not remove every pin of the older layout; the next start retries"
                    ),
                }
            }
            self.settled = true;
        }
        Ok(report)
    }

    /// One pass of the LRU copy from the newest older layout, if it is one a
    /// migration reads (layout 0 and 1 pins start the new maps empty). A
    /// failure is logged: the flows it would have kept are re-balanced, as
    /// before migrations copied anything. Returns each map's counts, with
    /// the pass's copied count.
    fn migrate(&self, applied: &Applied, pass: migrate::Pass) -> Vec<(migrate::MapCopy, u64)> {
        let Some(layout) = self.older.first() else {
            return Vec::new();
        };
        let Some(old_maps) = layout.maps.as_deref() else {
            return Vec::new();
        };
        if layout.version != migrate::READS_VERSION {
            if pass == migrate::Pass::BeforeSwap {
                tracing::warn!(
                    from = layout.version,
                    "layout migration: conntrack, affinity and socket rev-NAT of this layout are                      not read; they start empty"
                );
            }
            return Vec::new();
        }
        match migrate::copy(old_maps, &self.pins.maps(), applied, pass) {
            Ok(copies) => copies.into_iter().map(|c| (c, c.copied)).collect(),
            Err(error) => {
                tracing::error!(
                    from = layout.version,
                    ?pass,
                    error = %error_chain(&error),
                    "layout migration: cannot copy conntrack, affinity and socket rev-NAT;                      the flows they held start over"
                );
                Vec::new()
            }
        }
    }

    /// Attaches the `sock_egress` source check when `wanted` (some frontend
    /// has `loadBalancerSourceRanges`) and detaches it when not, at once if
    /// that changed (see `source_check`). Nothing without socket LB.
    pub fn want_source_check(&mut self, wanted: bool) -> Result<Option<HookAction>, LoadError> {
        if !self.socket_lb || !self.source_check.want(wanted) {
            return Ok(None);
        }
        self.ensure_source_check()
    }

    fn ensure_source_check(&mut self) -> Result<Option<HookAction>, LoadError> {
        let link_dir = self.pins.links_for(self.cgroup_id);
        bpffs::create_dir(&link_dir)?;
        let target = source_check::Target {
            cgroup_file: &self.cgroup_file,
            cgroup: &self.cgroup,
            cgroup_id: self.cgroup_id,
            link_dir: &link_dir,
        };
        self.source_check.ensure(&mut self.ebpf, &target)
    }

    /// The tc programs, when loaded.
    pub fn tc(&self) -> Option<&TcHooks> {
        self.tc.as_ref()
    }

    fn ensure_one(&mut self, name: &'static str, link_dir: &Path) -> Result<HookAction, LoadError> {
        let pin = link_dir.join(name);
        let prog_id = socket_hook(&mut self.ebpf, name)?
            .info()
            .map_err(|e| program_error(name, "reading its id", e))?
            .id();
        let state = link_info::pinned_link(&pin)
            .map_err(|e| link_error(name, "reading the pinned link", e))?;
        let found = match state {
            Some(s) if s.attaches(prog_id, self.cgroup_id) => return Ok(HookAction::Kept),
            Some(s) if s.attached_to(self.cgroup_id) => Found::Attached {
                pin: pin.clone(),
                version: LAYOUT_VERSION,
            },
            Some(_) => Found::Detached,
            None if !self.settled => self.older_link(name).unwrap_or(Found::Nothing),
            None => Found::Nothing,
        };
        let program = socket_hook(&mut self.ebpf, name)?;
        if let Found::Attached {
            pin: source,
            version,
        } = &found
        {
            match take_over(program, name, source, &pin) {
                Ok(()) if self.settled => return Ok(HookAction::Repaired(Drift::OtherProgram)),
                Ok(()) => {
                    return Ok(HookAction::TookOver {
                        from_version: *version,
                    });
                }
                Err(error) => tracing::warn!(
                    program = name,
                    link = %source.display(),
                    error = %error,
                    "could not take the pinned link over; attaching a new one"
                ),
            }
        }
        attach_new(program, name, &self.cgroup_file, &self.cgroup, &pin)?;
        Ok(match found {
            Found::Detached => HookAction::Repaired(Drift::LinkDetached),
            Found::Nothing if self.settled => HookAction::Repaired(Drift::PinMissing),
            Found::Attached { .. } if self.settled => HookAction::Repaired(Drift::OtherProgram),
            Found::Nothing | Found::Attached { .. } => HookAction::Attached,
        })
    }

    /// A link for `name` that an older layout pinned and that is still
    /// attached to our cgroup (newest layout first).
    fn older_link(&self, name: &str) -> Option<Found> {
        self.older.iter().find_map(|layout| {
            let pin = layout.links_for(self.cgroup_id)?.join(name);
            let state = link_info::pinned_link(&pin).ok()??;
            state
                .attached_to(self.cgroup_id)
                .then_some(Found::Attached {
                    pin,
                    version: layout.version,
                })
        })
    }
}

fn socket_hook<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, "has the wrong type", e))
}

/// Swaps `program` into the link pinned at `source` (`BPF_LINK_UPDATE`:
/// atomic), and pins that link at `pin`.
fn take_over(
    program: &mut CgroupSockAddr,
    name: &'static str,
    source: &Path,
    pin: &Path,
) -> Result<(), LoadError> {
    let link = PinnedLink::from_pin(source).map_err(|e| {
        link_error(
            name,
            "opening the pin",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let link = CgroupSockAddrLink::try_from(FdLink::from(link)).map_err(|e| {
        link_error(
            name,
            "is not a cgroup link",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|e| program_error(name, "updating the pinned link", e))?;
    take_and_pin(program, name, link_id, pin)
}

/// Attaches `program` to the cgroup through a new link, pinned at `pin`
/// (replacing whatever was pinned there).
fn attach_new(
    program: &mut CgroupSockAddr,
    name: &'static str,
    cgroup_file: &fs::File,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), LoadError> {
    // bpf_link attachments always coexist with other programs on the
    // cgroup; the kernel rejects any flag here, so `Single` (flags 0).
    let link_id = program
        .attach(cgroup_file, CgroupAttachMode::Single)
        .map_err(|e| program_error(name, &format!("attaching to {}", cgroup.display()), e))?;
    take_and_pin(program, name, link_id, pin)
}

/// Takes the link `link_id` out of `program` and pins it at `pin`.
fn take_and_pin(
    program: &mut CgroupSockAddr,
    name: &'static str,
    link_id: aya::programs::cgroup_sock_addr::CgroupSockAddrLinkId,
    pin: &Path,
) -> Result<(), LoadError> {
    let link = program
        .take_link(link_id)
        .map_err(|e| program_error(name, "taking the link", e))?;
    pin_link(link, name, pin)
}

/// Pins in our link directory that are no hook of ours: a temporary pin left
/// by a crash, or a hook an earlier version had. Removing them detaches them.
fn remove_strays(link_dir: &Path) {
    let Ok(entries) = fs::read_dir(link_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if SOCKET_HOOKS.iter().any(|h| name == *h) || name == source_check::NAME {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            pins::remove_tree(&path).map(drop)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::info!(pin = %path.display(), "removed a stray link pin"),
            Err(error) => {
                tracing::warn!(pin = %path.display(), error = %error, "could not remove a stray link pin")
            }
        }
    }
}

/// Links pinned for another cgroup (the daemon was moved): now that ours are
/// attached, drop theirs, which detaches them. The tc programs' directories
/// (`tc-<ifindex>`) are not cgroups'.
fn detach_other_cgroups(links: &Path, keep: Option<&Path>) {
    let Ok(entries) = fs::read_dir(links) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_cgroup = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(CGROUP_LINKS_PREFIX));
        if is_cgroup && Some(dir.as_path()) != keep {
            match pins::remove_tree(&dir) {
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

/// Removes every pin of every layout version: the hooks detach and the maps
/// are freed once nothing else holds them. Missing pins are fine.
pub fn cleanup(pins: &PinLayout) -> std::io::Result<Vec<PathBuf>> {
    pins::remove_all(pins)
}
