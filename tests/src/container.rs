//! [`Confinement`]: what a container runtime does to a process before it
//! starts, as far as one machine without a runtime allows, so a test can run
//! the proxy as the DaemonSet would have it run:
//!
//! - only the listed capabilities (bounding, permitted and effective sets; no
//!   inheritable or ambient ones), as `capabilities: {drop: [ALL], add: […]}`
//!   gives a process running as uid 0;
//! - `no_new_privs`, as `allowPrivilegeEscalation: false`;
//! - a read-only root filesystem, as `readOnlyRootFilesystem: true`: `/` is
//!   remounted read-only in a mount namespace of the process's own (other
//!   mounts, like the sandbox's bpffs, keep their flags, as volumes do);
//! - read-only bind mounts, as `readOnly: true` volume mounts.
//!
//! Not emulated: the image's own root filesystem (the process sees the
//! host's, read-only), seccomp and AppArmor profiles, cgroup limits, other
//! namespaces than the mount namespace (the network namespace is the
//! sandbox's, entered by the caller).
//!
//! Everything is applied in the child between `fork` and `exec`, so the test
//! process keeps its own mounts and capabilities; the mount namespace dies
//! with the child.

use std::{
    ffi::CString,
    io,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use crate::Error;

/// Capability names in number order (`include/uapi/linux/capability.h`).
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of a capability named as in a Kubernetes `securityContext`
/// (`NET_ADMIN`; a `CAP_` prefix is accepted, as runtimes do).
pub fn capability_number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    CAPABILITIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .and_then(|n| u32::try_from(n).ok())
}

/// How to confine a process; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Confinement {
    /// Capability names, as in `securityContext.capabilities.add`.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub read_only_root: bool,
    /// `(source, target)`: `source` bind-mounted read-only on `target`, an
    /// existing directory.
    pub read_only_binds: Vec<(PathBuf, PathBuf)>,
    /// Directories that stay writable under a read-only root, as an
    /// `emptyDir` volume is (each is bind-mounted on itself, so the root's
    /// read-only remount does not reach it).
    pub writable_dirs: Vec<PathBuf>,
}

/// What the child needs, computed before `fork` (no allocation after it).
struct Prepared {
    keep: u64,
    last_cap: u32,
    no_new_privs: bool,
    read_only_root: bool,
    binds: Vec<(CString, CString)>,
    writable: Vec<CString>,
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{} holds a NUL byte", path.display())))
}

impl Confinement {
    /// Makes `command` apply this confinement to its child before `exec`.
    pub fn apply_to(&self, command: &mut Command) -> Result<(), Error> {
        let mut keep = 0u64;
        for name in &self.capabilities {
            let n = capability_number(name)
                .ok_or_else(|| Error::Usage(format!("unknown capability {name:?}")))?;
            keep |= 1 << n;
        }
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .map_err(|e| Error::io("reading the last capability", "/proc/sys/kernel", e))?
            .trim()
            .parse::<u32>()
            .map_err(|e| Error::Usage(format!("cap_last_cap: {e}")))?;
        let binds = self
            .read_only_binds
            .iter()
            .map(|(source, target)| Ok((c_path(source)?, c_path(target)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let writable = self
            .writable_dirs
            .iter()
            .map(|dir| c_path(dir))
            .collect::<Result<Vec<_>, Error>>()?;
        let prepared = Prepared {
            keep,
            last_cap,
            no_new_privs: self.no_new_privs,
            read_only_root: self.read_only_root,
            binds,
            writable,
        };
        // SAFETY: `confine` makes only system calls (async-signal-safe) on
        // data prepared before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || confine(&prepared));
        }
        Ok(())
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child, between `fork` and `exec`.
fn confine(p: &Prepared) -> io::Result<()> {
    let root = c"/";
    // SAFETY: plain system calls on NUL-terminated strings that outlive them
    // and on stack structs of the kernel's layout.
    unsafe {
        if p.read_only_root || !p.binds.is_empty() || !p.writable.is_empty() {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing done below may reach the test's mount namespace.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
        }
        for (source, target) in &p.binds {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ))?;
        }
        for dir in &p.writable {
            check(libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        if p.read_only_root {
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ))?;
        }
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        for cap in 0..=p.last_cap {
            if p.keep & (1 << cap) == 0 {
                check(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
        }
        // uid 0 gets its bounding set as permitted and effective at exec;
        // set them now too, so no_new_privs (which caps what exec may grant
        // to what the process already has) keeps exactly these.
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let low = (p.keep & 0xffff_ffff) as u32;
        let high = (p.keep >> 32) as u32;
        let data = [
            CapData {
                effective: low,
                permitted: low,
                inheritable: 0,
            },
            CapData {
                effective: high,
                permitted: high,
                inheritable: 0,
            },
        ];
        let result = libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        );
        check(if result == 0 { 0 } else { -1 })?;
        if p.no_new_privs {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_numbered_as_the_kernel_does() {
        assert_eq!(capability_number("NET_ADMIN"), Some(12));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("PERFMON"), Some(38));
        assert_eq!(capability_number("bpf"), Some(39));
        assert_eq!(capability_number("NOPE"), None);
    }
}
