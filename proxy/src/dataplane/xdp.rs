//! `xdp_ingress` on the external tc devices (`--xdp`): the established
//! flows' fast path ahead of tc (see the program's docs in `proxy-ebpf`).
//!
//! Attached after a device's tc programs, through an XDP link pinned in the
//! device's tc link directory, named for its mode: `xdp-native` (driver
//! mode) or `xdp-generic` (SKB mode). `proxy inspect status` lists it with
//! the tc links, and removing the directory (a device no longer selected,
//! `proxy cleanup`) detaches it. `--xdp=native` fails when the driver
//! cannot; `--xdp=auto` uses native mode on NICs, generic mode on virtual
//! devices (a link kind: veth, bridge...; a native veth redirects only to
//! peers that run XDP or GRO, which the proxy cannot check), and generic
//! where native fails.
//! `--xdp=off` removes any XDP link it finds.
//!
//! Must not: attach to a device the tc programs are not on.

use std::{fs, path::Path};

use aya::{
    Ebpf,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode as AyaMode},
    },
};
use proxy_common::programs;

use crate::dataplane::{
    devices::Device,
    hooks::{AttachedHook, Drift, HookAction, LoadError, link_error, pin_link, program_error},
    link_info,
};

/// `--xdp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// No XDP program (any found is removed).
    #[default]
    Off,
    /// Driver mode, or an error.
    Native,
    /// Driver mode on NICs, generic (SKB) mode otherwise.
    Auto,
}

/// An attach mode and its pin's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    Native,
    Generic,
}

impl Attach {
    const ALL: [Attach; 2] = [Attach::Native, Attach::Generic];

    fn pin_name(self) -> &'static str {
        match self {
            Attach::Native => "xdp-native",
            Attach::Generic => "xdp-generic",
        }
    }

    fn aya(self) -> AyaMode {
        match self {
            Attach::Native => AyaMode::Driver,
            Attach::Generic => AyaMode::Skb,
        }
    }
}

/// Whether `name` in the pin directory is an XDP link's pin.
pub fn is_xdp_pin(name: &str) -> bool {
    Attach::ALL.iter().any(|a| a.pin_name() == name)
}

/// The modes to try on `device`, in order.
fn modes(mode: XdpMode, device: &Device) -> &'static [Attach] {
    match mode {
        XdpMode::Off => &[],
        XdpMode::Native => &[Attach::Native],
        XdpMode::Auto if device.virtual_kind => &[Attach::Generic],
        XdpMode::Auto => &[Attach::Native, Attach::Generic],
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let name = programs::XDP_INGRESS;
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, "has the wrong type", e))
}

/// Loads (verifies) `xdp_ingress`.
pub fn load(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    program(ebpf)?
        .load()
        .map_err(|e| program_error(programs::XDP_INGRESS, "verifier rejected it", e))
}

/// Makes `device` run `xdp_ingress` in a mode `mode` allows (none for
/// `Off`, or for a device that is not external), its link pinned in `dir`.
/// `known`: an earlier `ensure` attached it, so a missing link is drift.
pub fn ensure(
    ebpf: &mut Ebpf,
    dir: &Path,
    device: &Device,
    mode: XdpMode,
    known: bool,
) -> Result<Option<AttachedHook>, LoadError> {
    let wanted = if device.external {
        modes(mode, device)
    } else {
        &[]
    };
    let name = programs::XDP_INGRESS;
    let mut kept = None;
    for attach in Attach::ALL {
        let pin = dir.join(attach.pin_name());
        let state = link_info::pinned_link(&pin)
            .map_err(|e| link_error(name, "reading the pinned link", e))?;
        match state {
            Some(s) if wanted.contains(&attach) && s.attached_to_device(device.index) => {
                kept = Some((attach, s.prog_id));
            }
            Some(_) => remove(&pin)?,
            None => {}
        }
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let program = program(ebpf)?;
    let prog_id = program
        .info()
        .map_err(|e| program_error(name, "reading its id", e))?
        .id();
    let action = match kept {
        Some((_, id)) if id == prog_id => HookAction::Kept,
        Some((attach, _)) => {
            take_over(program, &dir.join(attach.pin_name()))?;
            if known {
                HookAction::Repaired(Drift::OtherProgram)
            } else {
                HookAction::TookOver {
                    from_version: proxy_common::LAYOUT_VERSION,
                }
            }
        }
        None => {
            let attach = attach_new(program, dir, device, wanted)?;
            tracing::info!(device = %device.name, mode = attach.pin_name(), "XDP attached");
            if known {
                HookAction::Repaired(Drift::LinkDetached)
            } else {
                HookAction::Attached
            }
        }
    };
    Ok(Some(AttachedHook {
        program: name,
        device: Some(device.name.clone()),
        action,
    }))
}

/// Removes a pin (its link detaches unless something else holds it).
fn remove(pin: &Path) -> Result<(), LoadError> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(link_error(programs::XDP_INGRESS, "removing the pin", e)),
    }
}

/// Attaches in the first of `modes` the device takes, pinned under the
/// mode's name; the mode used.
fn attach_new(
    program: &mut Xdp,
    dir: &Path,
    device: &Device,
    modes: &[Attach],
) -> Result<Attach, LoadError> {
    let name = programs::XDP_INGRESS;
    let mut last = None;
    for &attach in modes {
        match program.attach(device.index, attach.aya()) {
            Ok(link_id) => {
                let link = program
                    .take_link(link_id)
                    .map_err(|e| program_error(name, "taking the link", e))?;
                pin_link(link, name, &dir.join(attach.pin_name()))?;
                return Ok(attach);
            }
            Err(error) => {
                tracing::warn!(device = %device.name, mode = attach.pin_name(), error = %error,
                    "XDP attach failed");
                last = Some((attach, error));
            }
        }
    }
    let (attach, error) = last.ok_or(LoadError::MissingProgram(name))?;
    Err(program_error(
        name,
        &format!(
            "attaching to {} in {} mode (the driver may not support it; --xdp=auto falls back to generic mode)",
            device.name,
            attach.pin_name()
        ),
        error,
    ))
}

/// Swaps `program` into the XDP link pinned at `pin` (`BPF_LINK_UPDATE`).
fn take_over(program: &mut Xdp, pin: &Path) -> Result<(), LoadError> {
    let name = programs::XDP_INGRESS;
    let other = |action: &str, e: String| link_error(name, action, std::io::Error::other(e));
    let link = PinnedLink::from_pin(pin).map_err(|e| other("opening the pin", e.to_string()))?;
    let link = XdpLink::try_from(FdLink::from(link))
        .map_err(|e| other("is not an XDP link", e.to_string()))?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|e| program_error(name, "updating the pinned link", e))?;
    let link = program
        .take_link(link_id)
        .map_err(|e| program_error(name, "taking the link", e))?;
    drop(link);
    Ok(())
}
