//! Kernel programs of the service proxy.
//!
//! - `sock`: cgroup v2 socket hooks (`connect`, `sendmsg`, `recvmsg`,
//!   `getpeername`, for IPv4 and IPv6) that swap a service VIP for a backend once
//!   per connection, and show the VIP back to the application.
//! - `tc`: tc (tcx) ingress/egress programs: per-packet north-south NAT with
//!   conntrack (`packet` parses, `family` holds the IPv4/IPv6 map access and
//!   rewrites, `icmp` and `rst` build rejects, `fib` forwards translated packets,
//!   `frag` tracks fragmented datagrams by IP ID).
//! - `src_check`: `loadBalancerSourceRanges` for sockets the hooks translate
//!   (a record in socket storage, checked by `sock_egress`, `cgroup_skb/egress`).
//! - `dsr`: direct server return (`--lb-mode=dsr`): the IPv4 option that carries
//!   a frontend to the backend's node, and the replies rewritten there.
//! - `lb`: service lookup and backend selection, shared by the hooks.
//! - `maps`: every map, declared once.
//! - `stats`: per-CPU counters by [`proxy_common::Reason`].
//! - `tc`: the per-packet programs on the node's devices (`tc_ingress`'s path);
//!   `tc_egress`: the reply rewrite as packets leave them (conntrack, DSR);
//!   `tc_tail`: `tc_ingress` and the programs it tail-calls, by family and for new flows.
//! - `xdp`: `xdp_ingress` (`--xdp`), the established flows' fast path on the same
//!   devices and conntrack maps, ahead of tc; `csum`: its incremental checksums.
//!
//! Entry points stay thin: each calls a `try_*` helper that returns
//! `Result<Reason, Reason>`, counts the reason, and maps it to a verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod cluster_ip;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod dsr;
#[cfg(target_arch = "bpf")]
mod family;
#[cfg(target_arch = "bpf")]
mod fib;
#[cfg(target_arch = "bpf")]
mod frag;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod maglev;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod reject_budget;
#[cfg(target_arch = "bpf")]
mod rewrite;
#[cfg(target_arch = "bpf")]
mod rst;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod src_check;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod tc;
#[cfg(target_arch = "bpf")]
mod tc_egress;
#[cfg(target_arch = "bpf")]
mod tc_tail;
#[cfg(target_arch = "bpf")]
mod xdp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic, so this
    // is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Host builds (clippy, `cargo check --workspace`) get an empty binary; the real
/// object is only built for the bpf target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
