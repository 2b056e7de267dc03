//! `BPF_MAP_UPDATE_BATCH`: many hash-map updates in one system call. aya has
//! no batch API yet, so this is the one raw `bpf(2)` call in the proxy. A cold
//! sync of 10,000 services writes about 220,000 entries; one syscall per entry
//! is most of its cost.

use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `BPF_MAP_UPDATE_BATCH` from `enum bpf_cmd` (uapi/linux/bpf.h, since 5.6).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries per system call: bounds the kernel's work per call.
pub const MAX_BATCH: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys[i] → values[i]` in order. On failure, returns how many were
/// written before the one that failed, and the error.
///
/// `K` and `V` must be the map's exact key and value layouts (`#[repr(C)]`
/// types from `proxy-common` whose sizes are asserted there).
pub fn update<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, std::io::Error)> {
    debug_assert_eq!(keys.len(), values.len());
    let mut written = 0;
    for (keys, values) in keys.chunks(MAX_BATCH).zip(values.chunks(MAX_BATCH)) {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            // MAX_BATCH fits in u32.
            count: keys.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for the whole call; `keys`
        // and `values` point at `count` contiguous, initialised elements of the
        // map's key and value sizes, alive until the call returns. The kernel
        // only reads them, and writes back `attr.count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            return Err((written + attr.count as usize, error));
        }
        written += keys.len();
    }
    Ok(())
}
