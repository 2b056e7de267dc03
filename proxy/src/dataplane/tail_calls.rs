//! The `TC_TAIL` prog array as `proxy inspect status` reads it: the id of
//! the program each slot holds. `BPF_MAP_LOOKUP_ELEM` on a prog array gives
//! the program's id (aya offers no lookup for this map type), a raw `bpf(2)`
//! call as in `link_info`. Read-only.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_ELEM` from `enum bpf_cmd` (uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// The element member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The id of the program in `slot` of the prog array `map`; `None` when the
/// slot is empty.
pub fn slot_program(map: BorrowedFd<'_>, slot: u32) -> io::Result<Option<u32>> {
    let key = slot;
    let mut id: u32 = 0;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &mut id as *mut u32 as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` for BPF_MAP_LOOKUP_ELEM; `key`
    // and `value` point at 4 readable and 4 writable bytes (a prog array's
    // key and value sizes) that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::NotFound => Ok(None),
            _ => Err(error),
        };
    }
    Ok(Some(id))
}
