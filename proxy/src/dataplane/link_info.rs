//! What aya does not say about a pinned link: whether it is still attached,
//! to which cgroup, and with which program. `BPF_OBJ_GET` on the pin, then
//! `BPF_OBJ_GET_INFO_BY_FD` (raw `bpf(2)` calls, as in `batch.rs`).
//!
//! A cgroup link detached by hand (`BPF_LINK_DETACH`, `bpftool link detach`)
//! stays pinned but reports cgroup id 0; a link whose pin was removed is gone.
//! The same holds for tcx links (the tc programs), which report ifindex 0
//! once detached (by hand, or because their device went away). Read-only.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// `enum bpf_cmd` values (uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
/// `file_flags` of `BPF_OBJ_GET`: a descriptor that can read the object but
/// not change it (the kernel refuses updates and deletes through it).
const BPF_F_RDONLY: u32 = 1 << 3;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_CGROUP` from `enum bpf_link_type`.
const BPF_LINK_TYPE_CGROUP: u32 = 3;
/// `BPF_LINK_TYPE_TCX`.
const BPF_LINK_TYPE_TCX: u32 = 11;
/// `BPF_LINK_TYPE_XDP`.
const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_XDP` from `enum bpf_attach_type` (an XDP link's, which its info
/// does not carry).
pub const BPF_XDP: u32 = 37;

/// The `BPF_OBJ_*` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// The `info` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` as far as cgroup links go: `type`,
/// `id`, `prog_id`, then (8-aligned) the `cgroup` member of the union. The
/// union's `tcx` member (`ifindex`, `attach_type`, two `u32`s) lies over
/// `cgroup_id`. The buffer is larger than the kernel's struct, and zeroed,
/// as the kernel asks.
#[repr(C)]
struct LinkInfoBuf {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 57],
}

/// A pinned link as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub link_id: u32,
    pub prog_id: u32,
    /// `None` when it is no cgroup link; `Some(0)` once detached.
    pub cgroup_id: Option<u64>,
    /// `enum bpf_attach_type` (cgroup and tcx links; `proxy inspect status`).
    pub attach_type: u32,
    /// `None` when it is no tcx link; `Some(0)` once detached.
    pub ifindex: Option<u32>,
}

impl LinkState {
    /// True when the link attaches program `prog_id` to cgroup `cgroup_id`.
    pub fn attaches(&self, prog_id: u32, cgroup_id: u64) -> bool {
        self.prog_id == prog_id && self.cgroup_id == Some(cgroup_id)
    }

    /// True when the link is still attached to cgroup `cgroup_id` (whatever
    /// program it runs): it can be taken over with `BPF_LINK_UPDATE`.
    pub fn attached_to(&self, cgroup_id: u64) -> bool {
        self.cgroup_id == Some(cgroup_id)
    }

    /// True when the tcx link is attached to device `ifindex` (whatever
    /// program it runs).
    pub fn attached_to_device(&self, ifindex: u32) -> bool {
        ifindex != 0 && self.ifindex == Some(ifindex)
    }
}

/// The state of the link pinned at `pin`; `Ok(None)` when nothing is pinned there.
pub fn pinned_link(pin: &Path) -> io::Result<Option<LinkState>> {
    // Links refuse read-only descriptors (EINVAL): an ordinary one, which
    // this module only ever reads through.
    let fd = match obj_get(pin, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    link_state(&fd).map(Some)
}

/// `BPF_OBJ_GET` with `BPF_F_RDONLY`: a new file descriptor on the map
/// pinned at `pin`, through which the kernel lets nothing be written. What
/// `proxy inspect` and `proxy diff` read the maps through.
pub fn obj_get_read_only(pin: &Path) -> io::Result<OwnedFd> {
    obj_get(pin, BPF_F_RDONLY)
}

/// `BPF_OBJ_GET`: a new file descriptor on the object pinned at `pin`, with
/// `file_flags`.
fn obj_get(pin: &Path, file_flags: u32) -> io::Result<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        file_flags,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` for BPF_OBJ_GET; `pathname` points
    // at a NUL-terminated string that outlives the call; the kernel only reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjAttr,
            std::mem::size_of::<ObjAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd (with O_CLOEXEC) and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
fn link_state(fd: &OwnedFd) -> io::Result<LinkState> {
    // SAFETY: all-zero bytes are a valid `LinkInfoBuf` (integers only).
    let mut info: LinkInfoBuf = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfoBuf>() as u32,
        info: &mut info as *mut LinkInfoBuf as u64,
    };
    // SAFETY: `attr` is a valid `bpf_attr` for BPF_OBJ_GET_INFO_BY_FD; `info`
    // points at `info_len` zeroed, writable bytes that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(decode(&info))
}

fn decode(info: &LinkInfoBuf) -> LinkState {
    let union = info.cgroup_id.to_ne_bytes();
    let word = |i: usize| u32::from_ne_bytes([union[i], union[i + 1], union[i + 2], union[i + 3]]);
    let tcx = info.link_type == BPF_LINK_TYPE_TCX;
    // An XDP link's union member is its `ifindex` alone.
    let xdp = info.link_type == BPF_LINK_TYPE_XDP;
    LinkState {
        link_id: info.id,
        prog_id: info.prog_id,
        cgroup_id: (info.link_type == BPF_LINK_TYPE_CGROUP).then_some(info.cgroup_id),
        attach_type: match (tcx, xdp) {
            (true, _) => word(4),
            (_, true) => BPF_XDP,
            _ => info.attach_type,
        },
        ifindex: (tcx || xdp).then(|| word(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_member_sits_where_the_kernel_puts_it() {
        assert_eq!(std::mem::offset_of!(LinkInfoBuf, prog_id), 8);
        assert_eq!(std::mem::offset_of!(LinkInfoBuf, cgroup_id), 16);
        assert_eq!(std::mem::offset_of!(LinkInfoBuf, attach_type), 24);
        assert_eq!(std::mem::size_of::<ObjAttr>(), 24);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
    }

    #[test]
    fn a_tcx_link_reads_its_ifindex_and_attach_type_from_the_union() {
        // SAFETY: all-zero bytes are a valid `LinkInfoBuf`.
        let mut info: LinkInfoBuf = unsafe { std::mem::zeroed() };
        info.link_type = BPF_LINK_TYPE_TCX;
        info.id = 9;
        info.prog_id = 4;
        let mut union = [0u8; 8];
        union[..4].copy_from_slice(&7u32.to_ne_bytes());
        union[4..].copy_from_slice(&46u32.to_ne_bytes());
        info.cgroup_id = u64::from_ne_bytes(union);
        let state = decode(&info);
        assert_eq!(state.ifindex, Some(7));
        assert_eq!(state.attach_type, 46);
        assert_eq!(state.cgroup_id, None);
        assert!(state.attached_to_device(7));
        assert!(!state.attached_to_device(8));
        info.cgroup_id = 0;
        assert!(!decode(&info).attached_to_device(0), "detached");
        info.link_type = BPF_LINK_TYPE_CGROUP;
        info.cgroup_id = 77;
        assert_eq!(decode(&info).ifindex, None);
        assert_eq!(decode(&info).cgroup_id, Some(77));
    }

    #[test]
    fn nothing_pinned_is_none() {
        let tmp = std::env::temp_dir().join("proxy-link-info-absent-pin");
        assert_eq!(pinned_link(&tmp).ok().flatten(), None);
    }
}
