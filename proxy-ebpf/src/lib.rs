//! The library half of `proxy-ebpf` is empty on purpose: it exists so `proxy` can
//! list this crate as a build-dependency, which makes cargo rebuild the userspace
//! binary when the kernel programs change. The programs live in the `proxy-ebpf`
//! binary target (`src/main.rs`), which `proxy/build.rs` builds for `bpfel-unknown-none`.
#![no_std]
