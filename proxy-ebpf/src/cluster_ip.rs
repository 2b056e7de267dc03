//! Which new ClusterIP flows the tc path translates, and which it SNATs:
//! the local-traffic detector's verdict on a packet's source ([`origin`]) and
//! kube-proxy's rules for ClusterIP traffic by device ([`cluster_ip_rule`]).

use proxy_common::{Reason, device_flags};

use crate::family::Family;

/// What a new flow to a ClusterIP gets on this device.
pub(crate) enum ClusterIpRule {
    /// Not translated here (the socket hooks serve such clients).
    Skip,
    /// Translated, the client's address kept (SNATed only for hairpin).
    Translate,
    /// Translated and SNATed to the node, counted under this reason.
    Masquerade(Reason),
}

/// Where a packet's source is, as the local-traffic detector says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// No detector for its family (`--cluster-cidr` unset, for example).
    Unknown,
    /// A pod: inside the cluster CIDR, or in from the pods' bridge or
    /// interfaces.
    InCluster,
    /// Anything else.
    OffCluster,
}

/// The detector's verdict on a packet from `saddr` arriving on a device with
/// flags `dev` (`DEVICES`): by source prefix (`LOCAL_V4`/`LOCAL_V6`) when the
/// family's CIDR detector is on, else by device when a device detector is.
#[inline(always)]
pub(crate) fn origin<F: Family>(dev: u32, saddr: F::Addr) -> Origin {
    let in_cluster = if dev & F::DETECT_CIDR != 0 {
        F::local_source(saddr)
    } else if dev & device_flags::DETECT_BY_DEVICE != 0 {
        dev & device_flags::LOCAL_DEVICE != 0
    } else {
        return Origin::Unknown;
    };
    if in_cluster {
        Origin::InCluster
    } else {
        Origin::OffCluster
    }
}

/// kube-proxy's rules for ClusterIP traffic, by the device's flags
/// (`DEVICES`): a source the local-traffic detector finds off-cluster is
/// translated on any device and masqueraded ("masquerade off-cluster traffic
/// to a service VIP"); `--masquerade-all` masquerades every ClusterIP flow,
/// on any device; anything else is translated only on `CLUSTER_IP` devices,
/// keeping its source. Without a detector no source is off-cluster. (The
/// masquerade applies to remote backends: see `choose`.)
#[inline(always)]
pub(crate) fn cluster_ip_rule(dev: u32, origin: Origin) -> ClusterIpRule {
    if origin == Origin::OffCluster {
        ClusterIpRule::Masquerade(Reason::TcClusterIpMasqueraded)
    } else if dev & device_flags::MASQUERADE_ALL != 0 {
        ClusterIpRule::Masquerade(Reason::TcMasqueradeAll)
    } else if dev & device_flags::CLUSTER_IP == 0 {
        ClusterIpRule::Skip
    } else {
        ClusterIpRule::Translate
    }
}
