//! Local-traffic detection, as kube-proxy's `--detect-local-mode`: which
//! ClusterIP traffic comes from inside the cluster (pods) and which from
//! outside it, so the off-cluster kind is masqueraded.
//!
//! Settings ([`DetectSettings`]): `--detect-local-mode` ([`DetectLocalMode`],
//! default `ClusterCIDR`), `--cluster-cidr`, `--pod-bridge-interface`,
//! `--pod-interface-name-prefix`. [`check`] validates them at start (a wrong
//! combination is an error naming the flag); [`detector`] resolves them, with
//! the Node's `spec.podCIDRs` for `NodeCIDR`, into a [`LocalDetector`], per IP
//! family as kube-proxy's `getLocalDetectors`: the first CIDR of each family;
//! a family without one has no detector (a no-op detector: no source is
//! off-cluster).
//!
//! The kernel side: the CIDRs go into the `LOCAL_V4`/`LOCAL_V6` tries, and
//! [`device_flags`] gives each tc device the `DEVICES` flags that tell the
//! programs how to decide (by source prefix, or by the device the packet came
//! in on) and whether `--masquerade-all` is on. Pure: no kernel access.

use std::{fmt, net::IpAddr};

use clap::ValueEnum;
use proxy_common::device_flags;
use serde::{Deserialize, Serialize};

use crate::nodeport::Cidr;

/// `--detect-local-mode`: how traffic from pods is told apart from the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum DetectLocalMode {
    /// A source inside `--cluster-cidr` is in-cluster.
    #[default]
    #[value(name = "ClusterCIDR")]
    #[serde(rename = "ClusterCIDR")]
    ClusterCidr,
    /// A source inside this node's `spec.podCIDRs` is in-cluster (needs the
    /// Kubernetes source).
    #[value(name = "NodeCIDR")]
    #[serde(rename = "NodeCIDR")]
    NodeCidr,
    /// Traffic arriving on `--pod-bridge-interface` is in-cluster.
    #[value(name = "BridgeInterface")]
    #[serde(rename = "BridgeInterface")]
    BridgeInterface,
    /// Traffic arriving on an interface named `--pod-interface-name-prefix*`
    /// is in-cluster.
    #[value(name = "InterfaceNamePrefix")]
    #[serde(rename = "InterfaceNamePrefix")]
    InterfaceNamePrefix,
}

impl fmt::Display for DetectLocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClusterCidr => "ClusterCIDR",
            Self::NodeCidr => "NodeCIDR",
            Self::BridgeInterface => "BridgeInterface",
            Self::InterfaceNamePrefix => "InterfaceNamePrefix",
        })
    }
}

/// The flags that decide the detector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetectSettings {
    pub mode: DetectLocalMode,
    /// `--cluster-cidr`.
    pub cluster_cidrs: Vec<Cidr>,
    /// `--pod-bridge-interface`.
    pub bridge_interface: String,
    /// `--pod-interface-name-prefix`.
    pub interface_name_prefix: String,
}

/// A combination of the flags kube-proxy refuses too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalDetectError {
    #[error("--cluster-cidr takes at most one IPv4 and one IPv6 CIDR, got {0}")]
    TooManyCidrs(String),
    #[error("--detect-local-mode=BridgeInterface needs --pod-bridge-interface (the pods' bridge)")]
    NoBridge,
    #[error(
        "--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix (the pods' interfaces' prefix)"
    )]
    NoPrefix,
    #[error(
        "--pod-bridge-interface {0:?} is not an interface name (at most 15 bytes, no '/', ':' or whitespace)"
    )]
    BadInterface(String),
}

/// How the tc programs tell in-cluster sources from the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LocalDetector {
    /// No detector: no source is off-cluster.
    #[default]
    None,
    /// By source address, per family (`None`: no detector for that family).
    Cidrs { v4: Option<Cidr>, v6: Option<Cidr> },
    /// Traffic arriving on the pods' bridge is in-cluster.
    Bridge(String),
    /// Traffic arriving on an interface with this name prefix is in-cluster.
    Prefix(String),
}

/// Checks the flags at start, as kube-proxy's validation does.
pub fn check(settings: &DetectSettings) -> Result<(), LocalDetectError> {
    if !crate::nodeport::at_most_one_per_family(&settings.cluster_cidrs) {
        let shown: Vec<String> = settings
            .cluster_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        return Err(LocalDetectError::TooManyCidrs(shown.join(",")));
    }
    let name_ok =
        |n: &str| n.len() <= 15 && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    match settings.mode {
        DetectLocalMode::BridgeInterface if settings.bridge_interface.is_empty() => {
            Err(LocalDetectError::NoBridge)
        }
        DetectLocalMode::BridgeInterface if !name_ok(&settings.bridge_interface) => Err(
            LocalDetectError::BadInterface(settings.bridge_interface.clone()),
        ),
        DetectLocalMode::InterfaceNamePrefix if settings.interface_name_prefix.is_empty() => {
            Err(LocalDetectError::NoPrefix)
        }
        _ => Ok(()),
    }
}

/// The detector for these (checked) settings; `node_pod_cidrs`: this node's
/// `spec.podCIDRs` (used by `NodeCIDR` only). The first CIDR of each family
/// counts, as in kube-proxy.
pub fn detector(settings: &DetectSettings, node_pod_cidrs: &[Cidr]) -> LocalDetector {
    let by_family = |cidrs: &[Cidr]| {
        let v4 = cidrs.iter().copied().find(|c| c.addr.is_ipv4());
        let v6 = cidrs.iter().copied().find(|c| c.addr.is_ipv6());
        if v4.is_none() && v6.is_none() {
            LocalDetector::None
        } else {
            LocalDetector::Cidrs { v4, v6 }
        }
    };
    match settings.mode {
        DetectLocalMode::ClusterCidr => by_family(&settings.cluster_cidrs),
        DetectLocalMode::NodeCidr => by_family(node_pod_cidrs),
        DetectLocalMode::BridgeInterface => {
            LocalDetector::Bridge(settings.bridge_interface.clone())
        }
        DetectLocalMode::InterfaceNamePrefix => {
            LocalDetector::Prefix(settings.interface_name_prefix.clone())
        }
    }
}

impl LocalDetector {
    /// The in-cluster prefixes for the `LOCAL_V4`/`LOCAL_V6` tries, host bits
    /// cleared.
    pub fn prefixes(&self) -> (Option<Cidr>, Option<Cidr>) {
        match self {
            Self::Cidrs { v4, v6 } => (v4.map(network), v6.map(network)),
            _ => (None, None),
        }
    }

    /// Whether a packet from `source` arriving on `device` is off-cluster:
    /// `None` when no detector covers its family. The tc programs decide the
    /// same from [`device_flags`] and the tries.
    pub fn off_cluster(&self, source: IpAddr, device: &str) -> Option<bool> {
        match self {
            Self::None => None,
            Self::Cidrs { v4, v6 } => {
                let cidr = if source.is_ipv4() { v4 } else { v6 };
                cidr.map(|c| !c.contains(source))
            }
            Self::Bridge(_) | Self::Prefix(_) => Some(!self.local_device(device)),
        }
    }

    fn local_device(&self, name: &str) -> bool {
        match self {
            Self::Bridge(bridge) => name == bridge,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Self::None | Self::Cidrs { .. } => false,
        }
    }

    /// What the logs say about it.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none (no source is off-cluster)".to_owned(),
            Self::Cidrs { v4, v6 } => {
                let shown: Vec<String> = [v4, v6]
                    .into_iter()
                    .flatten()
                    .map(|c| c.to_string())
                    .collect();
                format!("in-cluster sources: {}", shown.join(","))
            }
            Self::Bridge(bridge) => format!("in-cluster: traffic arriving on {bridge}"),
            Self::Prefix(prefix) => format!("in-cluster: traffic arriving on {prefix}*"),
        }
    }
}

/// The `DEVICES` flags the detector and `--masquerade-all` add for the
/// device named `name`.
pub fn device_flags(detector: &LocalDetector, masquerade_all: bool, name: &str) -> u32 {
    let mut flags = if masquerade_all {
        device_flags::MASQUERADE_ALL
    } else {
        0
    };
    match detector {
        LocalDetector::None => {}
        LocalDetector::Cidrs { v4, v6 } => {
            if v4.is_some() {
                flags |= device_flags::DETECT_CIDR_V4;
            }
            if v6.is_some() {
                flags |= device_flags::DETECT_CIDR_V6;
            }
        }
        LocalDetector::Bridge(_) | LocalDetector::Prefix(_) => {
            flags |= device_flags::DETECT_BY_DEVICE;
            if detector.local_device(name) {
                flags |= device_flags::LOCAL_DEVICE;
            }
        }
    }
    flags
}

/// The prefix with its host bits cleared.
fn network(cidr: Cidr) -> Cidr {
    let addr = match cidr.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(cidr.prefix))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(cidr.prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Cidr {
        addr,
        prefix: cidr.prefix,
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    fn cidrs(s: &str) -> Vec<Cidr> {
        s.split(',')
            .filter(|s| !s.is_empty())
            .map(|c| c.parse().unwrap())
            .collect()
    }

    fn settings(mode: DetectLocalMode, cluster: &str) -> DetectSettings {
        DetectSettings {
            mode,
            cluster_cidrs: cidrs(cluster),
            ..DetectSettings::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_cidr_mode_without_a_cidr_is_no_detector() {
        let s = settings(DetectLocalMode::ClusterCidr, "");
        check(&s).unwrap();
        let d = detector(&s, &[]);
        assert_eq!(d, LocalDetector::None);
        assert_eq!(d.off_cluster(ip("192.0.2.1"), "eth0"), None);
        assert_eq!(device_flags(&d, false, "eth0"), 0);
    }

    #[test]
    fn cluster_cidrs_decide_per_family() {
        let s = settings(DetectLocalMode::ClusterCidr, "10.244.7.1/16");
        check(&s).unwrap();
        let d = detector(&s, &cidrs("10.9.0.0/24"));
        assert_eq!(d.off_cluster(ip("10.244.3.4"), "eth0"), Some(false));
        assert_eq!(d.off_cluster(ip("192.0.2.1"), "eth0"), Some(true));
        // No IPv6 CIDR: no detector for IPv6, as kube-proxy's no-op detector.
        assert_eq!(d.off_cluster(ip("fd00::1"), "eth0"), None);
        assert_eq!(
            device_flags(&d, false, "eth0"),
            device_flags::DETECT_CIDR_V4
        );
        // Host bits cleared for the trie.
        assert_eq!(d.prefixes().0.unwrap().to_string(), "10.244.0.0/16");
        let dual = detector(
            &settings(DetectLocalMode::ClusterCidr, "10.244.0.0/16,fd00:10::/56"),
            &[],
        );
        assert_eq!(dual.off_cluster(ip("fd00:10::9"), "x"), Some(false));
        assert_eq!(dual.off_cluster(ip("2001:db8::9"), "x"), Some(true));
        assert_eq!(
            device_flags(&dual, true, "x"),
            device_flags::DETECT_CIDR_V4
                | device_flags::DETECT_CIDR_V6
                | device_flags::MASQUERADE_ALL
        );
    }

    #[test]
    fn node_cidr_mode_uses_the_nodes_pod_cidrs() {
        let s = settings(DetectLocalMode::NodeCidr, "10.244.0.0/16");
        let d = detector(&s, &cidrs("10.244.1.0/24"));
        assert_eq!(d.off_cluster(ip("10.244.1.9"), "eth0"), Some(false));
        assert_eq!(d.off_cluster(ip("10.244.2.9"), "eth0"), Some(true));
        assert_eq!(detector(&s, &[]), LocalDetector::None);
    }

    #[test]
    fn interface_modes_decide_by_device() {
        let bridge = DetectSettings {
            mode: DetectLocalMode::BridgeInterface,
            bridge_interface: "cni0".into(),
            ..DetectSettings::default()
        };
        check(&bridge).unwrap();
        let d = detector(&bridge, &[]);
        assert_eq!(d.off_cluster(ip("192.0.2.1"), "cni0"), Some(false));
        assert_eq!(d.off_cluster(ip("10.244.0.1"), "eth0"), Some(true));
        assert_eq!(
            device_flags(&d, false, "cni0"),
            device_flags::DETECT_BY_DEVICE | device_flags::LOCAL_DEVICE
        );
        assert_eq!(
            device_flags(&d, false, "cni01"),
            device_flags::DETECT_BY_DEVICE
        );
        let prefix = DetectSettings {
            mode: DetectLocalMode::InterfaceNamePrefix,
            interface_name_prefix: "veth".into(),
            ..DetectSettings::default()
        };
        let d = detector(&prefix, &[]);
        assert_eq!(d.off_cluster(ip("192.0.2.1"), "veth12ab"), Some(false));
        assert_eq!(d.off_cluster(ip("192.0.2.1"), "eth0"), Some(true));
        assert_eq!(d.prefixes(), (None, None));
    }

    #[test]
    fn bad_combinations_name_the_flag() {
        let e = check(&settings(
            DetectLocalMode::ClusterCidr,
            "10.0.0.0/8,10.1.0.0/16",
        ))
        .unwrap_err();
        assert_eq!(
            e,
            LocalDetectError::TooManyCidrs("10.0.0.0/8,10.1.0.0/16".into())
        );
        let e = check(&settings(DetectLocalMode::BridgeInterface, "")).unwrap_err();
        assert!(e.to_string().contains("--pod-bridge-interface"), "{e}");
        let e = check(&settings(DetectLocalMode::InterfaceNamePrefix, "")).unwrap_err();
        assert!(e.to_string().contains("--pod-interface-name-prefix"), "{e}");
        let e = check(&DetectSettings {
            mode: DetectLocalMode::BridgeInterface,
            bridge_interface: "a/b".into(),
            ..DetectSettings::default()
        })
        .unwrap_err();
        assert_eq!(e, LocalDetectError::BadInterface("a/b".into()));
        // The interface flags are ignored in the CIDR modes, as kube-proxy does.
        check(&settings(DetectLocalMode::NodeCidr, "")).unwrap();
    }

    #[test]
    fn mode_names_are_kube_proxys() {
        for (name, mode) in [
            ("ClusterCIDR", DetectLocalMode::ClusterCidr),
            ("NodeCIDR", DetectLocalMode::NodeCidr),
            ("BridgeInterface", DetectLocalMode::BridgeInterface),
            ("InterfaceNamePrefix", DetectLocalMode::InterfaceNamePrefix),
        ] {
            assert_eq!(DetectLocalMode::from_str(name, false).unwrap(), mode);
            assert_eq!(mode.to_string(), name);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
        }
        assert!(DetectLocalMode::from_str("cluster-cidr", false).is_err());
    }
}
