//! The `sock_egress` hook (`cgroup_skb/egress` on the socket hooks' cgroup):
//! `loadBalancerSourceRanges` for the clients the socket hooks translate
//! (see `proxy-ebpf/src/src_check.rs`).
//!
//! It runs for every packet the cgroup's sockets send, so it is attached
//! only while at least one frontend has source ranges ([`SourceCheck::want`],
//! which the datapath sets from the desired state before it writes the maps,
//! so the check is in place before any frontend says it has ranges), and
//! detached when none has. Like the other hooks, through a link pinned under
//! the cgroup's link directory, so a restarted daemon finds it: it keeps a
//! link that already runs its program, and replaces one that runs another
//! (a new link is attached before the old pin is replaced, so the check never
//! lapses). With `--socket-lb=false` it is never loaded nor attached.
//!
//! Must not: touch the other hooks' pins.

use std::{fs, path::Path};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use proxy_common::programs;

use crate::dataplane::{
    hooks::{Drift, HookAction, LoadError, link_error, pin_link, program_error},
    link_info,
};

/// The program's name (its pin's name too).
pub const NAME: &str = programs::SOCK_EGRESS;

/// Whether the hook should be attached, and what this daemon did to it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceCheck {
    /// Some frontend has source ranges.
    wanted: bool,
    /// This daemon attached (or kept) the link: its pin going missing is drift.
    attached: bool,
    /// `wanted` changed since the last [`SourceCheck::ensure`].
    dirty: bool,
}

/// Where `ensure` attaches: the cgroup, and the link directory.
pub struct Target<'a> {
    pub cgroup_file: &'a fs::File,
    pub cgroup: &'a Path,
    pub cgroup_id: u64,
    pub link_dir: &'a Path,
}

/// Loads (verifies) the program; attaches nothing.
pub fn load(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    program(ebpf)?
        .load()
        .map_err(|e| program_error(NAME, "verifier rejected it", e))
}

fn program(ebpf: &mut Ebpf) -> Result<&mut CgroupSkb, LoadError> {
    ebpf.program_mut(NAME)
        .ok_or(LoadError::MissingProgram(NAME))?
        .try_into()
        .map_err(|e| program_error(NAME, "has the wrong type", e))
}

impl SourceCheck {
    /// Records whether some frontend has source ranges; true when that
    /// changed (the caller then runs [`SourceCheck::ensure`]).
    pub fn want(&mut self, wanted: bool) -> bool {
        if self.wanted != wanted {
            self.wanted = wanted;
            self.dirty = true;
        }
        self.dirty
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Attaches the hook when wanted, detaches it when not. `None`: nothing
    /// attached and nothing to attach.
    pub fn ensure(
        &mut self,
        ebpf: &mut Ebpf,
        at: &Target<'_>,
    ) -> Result<Option<HookAction>, LoadError> {
        let pin = at.link_dir.join(NAME);
        let state =
            link_info::pinned_link(&pin).map_err(|e| link_error(NAME, "reading the pin", e))?;
        if !self.wanted {
            self.attached = false;
            self.dirty = false;
            if state.is_some() {
                // The pin holds the link: removing it detaches the program.
                fs::remove_file(&pin).map_err(|e| link_error(NAME, "removing the pin", e))?;
                tracing::info!(
                    program = NAME,
                    "no Service has loadBalancerSourceRanges: source check detached"
                );
            }
            return Ok(None);
        }
        let program = program(ebpf)?;
        let prog_id = program
            .info()
            .map_err(|e| program_error(NAME, "reading its id", e))?
            .id();
        let action = match state {
            Some(s) if s.attaches(prog_id, at.cgroup_id) => HookAction::Kept,
            Some(s) if s.attached_to(at.cgroup_id) && self.attached => {
                HookAction::Repaired(Drift::OtherProgram)
            }
            // A previous daemon's link: replaced by ours below.
            Some(s) if s.attached_to(at.cgroup_id) => HookAction::TookOver {
                from_version: proxy_common::LAYOUT_VERSION,
            },
            Some(_) => HookAction::Repaired(Drift::LinkDetached),
            None if self.attached => HookAction::Repaired(Drift::PinMissing),
            None => HookAction::Attached,
        };
        if action != HookAction::Kept {
            // bpf_link attachments coexist with other programs on the cgroup;
            // the kernel rejects any flag here, so `Single` (flags 0).
            let link_id = program
                .attach(
                    at.cgroup_file,
                    CgroupSkbAttachType::Egress,
                    CgroupAttachMode::Single,
                )
                .map_err(|e| {
                    program_error(NAME, &format!("attaching to {}", at.cgroup.display()), e)
                })?;
            let link = program
                .take_link(link_id)
                .map_err(|e| program_error(NAME, "taking the link", e))?;
            pin_link(link, NAME, &pin)?;
            if action == HookAction::Attached {
                tracing::info!(
                    program = NAME,
                    "a Service has loadBalancerSourceRanges: source check attached"
                );
            }
        }
        self.attached = true;
        self.dirty = false;
        Ok(Some(action))
    }
}
