//! PLACEHOLDER tc programs, written on the `ns-daemon` branch only so the
//! daemon's device plumbing can be built and tested before the real per-packet
//! path lands. The `ns-kernel` branch owns this file: when merging, keep
//! theirs (the real `tc_ingress`/`tc_egress` and the tc maps in `maps.rs`)
//! and drop this one.
//!
//! Both programs pass every packet untouched (`TC_ACT_OK`). The tc path's
//! maps (`CT_V4`, `CT_V6`, `NODE_CFG`, `DEVICES`) are declared here so they
//! exist in the object and the daemon can write `NODE_CFG` and `DEVICES`;
//! the programs reference them so they are kept in the object.

use aya_ebpf::{
    bindings::TC_ACT_OK,
    btf_maps::{Array, HashMap, LruHashMap},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use proxy_common::{CtKeyV4, CtKeyV6, CtValueV4, CtValueV6, DeviceConfig, NodeConfig, capacity};

const CONNTRACK: usize = capacity::CONNTRACK as usize;
const DEVICE_ENTRIES: usize = capacity::DEVICES as usize;

#[btf_map(pin_by_name)]
pub static CT_V4: LruHashMap<CtKeyV4, CtValueV4, CONNTRACK> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static CT_V6: LruHashMap<CtKeyV6, CtValueV6, CONNTRACK> = LruHashMap::new();
#[btf_map(pin_by_name)]
pub static NODE_CFG: Array<NodeConfig, 1> = Array::new();
#[btf_map(pin_by_name)]
pub static DEVICES: HashMap<u32, DeviceConfig, DEVICE_ENTRIES> = HashMap::new();

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    touch_maps(&ctx);
    TC_ACT_OK
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    touch_maps(&ctx);
    TC_ACT_OK
}

/// Looks the maps up (results unused) so the linker keeps them.
#[inline(always)]
fn touch_maps(ctx: &TcContext) {
    let _ = DEVICES.get_ptr(&ctx.len());
    let _ = NODE_CFG.get(0);
    let key4 = CtKeyV4 {
        saddr: proxy_common::Be32::default(),
        daddr: proxy_common::Be32::default(),
        sport: proxy_common::Be16::default(),
        dport: proxy_common::Be16::default(),
        proto: 0,
        _pad: [0; 3],
    };
    let _ = CT_V4.get_ptr(&key4);
    let key6 = CtKeyV6 {
        saddr: [0; 16],
        daddr: [0; 16],
        sport: proxy_common::Be16::default(),
        dport: proxy_common::Be16::default(),
        proto: 0,
        _pad: [0; 3],
    };
    let _ = CT_V6.get_ptr(&key6);
}
