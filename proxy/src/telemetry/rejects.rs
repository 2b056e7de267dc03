//! The hook sources call when they reject configuration:
//! `proxy_config_rejects_total{source, reason}`.
//!
//! A reject is an object, or a piece of one, that a source could not use: a
//! file that is not YAML, an unknown kind, an invalid clusterIP, an SCTP port
//! that was dropped. Sources still log each problem (with the object's name,
//! which is too many values for a label); the counter gives alerts a stable
//! handle. Reasons are a closed set of snake_case names, each given by the
//! problem's own type (`ConvertError::label`, `ManifestError::label`, ...), so
//! a new kind of problem does not build until it has one.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// Where the rejected configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigSource {
    /// A `--manifests` directory.
    Manifests,
    /// The Kubernetes API.
    Kubernetes,
}

impl ConfigSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Manifests => "manifests",
            ConfigSource::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectLabels {
    source: &'static str,
    reason: &'static str,
}

/// A cheap, cloneable handle on the reject counter. The default handle is
/// registered nowhere (for sources built without metrics, as in unit tests).
#[derive(Clone, Debug, Default)]
pub struct ConfigRejects {
    family: Family<RejectLabels, Counter>,
}

impl ConfigRejects {
    pub(super) fn family(&self) -> Family<RejectLabels, Counter> {
        self.family.clone()
    }

    /// Counts one rejected object or piece of one; `reason` is the
    /// problem's `label()`.
    pub fn record(&self, source: ConfigSource, reason: &'static str) {
        self.family
            .get_or_create(&RejectLabels {
                source: source.as_str(),
                reason,
            })
            .inc();
    }

    /// The current count, for tests.
    #[cfg(test)]
    pub fn count(&self, source: ConfigSource, reason: &'static str) -> u64 {
        self.family
            .get_or_create(&RejectLabels {
                source: source.as_str(),
                reason,
            })
            .get()
    }
}
