//! The hook sources call when they reject configuration:
//! `proxy_config_rejects_total{source, reason}`.
//!
//! A reject is an object, or a piece of one, that a source could not use: a
//! file that is not YAML, an unknown kind, an invalid clusterIP, an SCTP port
//! that was dropped. Sources still log each problem (with the object's name,
//! which is too many values for a label); the counter gives alerts a stable
//! handle. Reasons are a closed set of snake_case names derived from the
//! problem's type, so a new kind of problem needs a new reason here.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use crate::{
    model::convert::{ConvertError, ConvertWarning, SkipReason},
    source::manifests::parse::ManifestError,
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

/// Why something was rejected: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// A whole file that is not YAML (its last good contents stay).
    InvalidYaml,
    NotAMapping,
    NoKind,
    UnknownKind,
    BadList,
    /// The object does not match its kind's schema.
    Decode,
    MissingName,
    NoClusterIp,
    InvalidClusterIp,
    ServicePortOutOfRange,
    UnknownAddressType,
    AffinityTimeoutOutOfRange,
    UnsupportedProtocol,
    DuplicatePort,
    EndpointPortMissing,
    EndpointPortOutOfRange,
    EndpointNoAddress,
    EndpointBadAddress,
    TooManyEndpoints,
    InvalidExternalIp,
    /// A field with a value this proxy does not know (its default is used).
    UnknownValue,
    /// A slice without its `kubernetes.io/service-name` label.
    NoServiceNameLabel,
    /// Skipped on purpose (ExternalName, headless, FQDN): only counted when a
    /// source chooses to report it.
    NotProxied,
    /// A problem the model reports that has no reason of its own here yet.
    Other,
}

impl RejectReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidYaml => "invalid_yaml",
            RejectReason::NotAMapping => "not_a_mapping",
            RejectReason::NoKind => "no_kind",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::BadList => "bad_list",
            RejectReason::Decode => "decode",
            RejectReason::MissingName => "missing_name",
            RejectReason::NoClusterIp => "no_cluster_ip",
            RejectReason::InvalidClusterIp => "invalid_cluster_ip",
            RejectReason::ServicePortOutOfRange => "service_port_out_of_range",
            RejectReason::UnknownAddressType => "unknown_address_type",
            RejectReason::AffinityTimeoutOutOfRange => "affinity_timeout_out_of_range",
            RejectReason::UnsupportedProtocol => "unsupported_protocol",
            RejectReason::DuplicatePort => "duplicate_port",
            RejectReason::EndpointPortMissing => "endpoint_port_missing",
            RejectReason::EndpointPortOutOfRange => "endpoint_port_out_of_range",
            RejectReason::EndpointNoAddress => "endpoint_no_address",
            RejectReason::EndpointBadAddress => "endpoint_bad_address",
            RejectReason::TooManyEndpoints => "too_many_endpoints",
            RejectReason::InvalidExternalIp => "invalid_external_ip",
            RejectReason::UnknownValue => "unknown_value",
            RejectReason::NoServiceNameLabel => "no_service_name_label",
            RejectReason::NotProxied => "not_proxied",
            RejectReason::Other => "other",
        }
    }
}

// The model's problem enums grow as sources learn new fields; a variant not
// named here yet counts as `other` rather than breaking the build of whoever
// adds it.
impl From<&ConvertError> for RejectReason {
    #[allow(
        unreachable_patterns,
        reason = "the fallback is for variants added to the model later"
    )]
    fn from(e: &ConvertError) -> Self {
        match e {
            ConvertError::MissingName { .. } => RejectReason::MissingName,
            ConvertError::NoClusterIp { .. } => RejectReason::NoClusterIp,
            ConvertError::InvalidClusterIp { .. } => RejectReason::InvalidClusterIp,
            ConvertError::ServicePortOutOfRange { .. } => RejectReason::ServicePortOutOfRange,
            ConvertError::UnknownAddressType { .. } => RejectReason::UnknownAddressType,
            ConvertError::AffinityTimeoutOutOfRange { .. } => {
                RejectReason::AffinityTimeoutOutOfRange
            }
            _ => RejectReason::Other,
        }
    }
}

impl From<&ConvertWarning> for RejectReason {
    #[allow(
        unreachable_patterns,
        reason = "the fallback is for variants added to the model later"
    )]
    fn from(w: &ConvertWarning) -> Self {
        match w {
            ConvertWarning::UnsupportedProtocol { .. } => RejectReason::UnsupportedProtocol,
            ConvertWarning::DuplicatePort { .. } => RejectReason::DuplicatePort,
            ConvertWarning::EndpointPortMissing { .. } => RejectReason::EndpointPortMissing,
            ConvertWarning::EndpointPortOutOfRange { .. } => RejectReason::EndpointPortOutOfRange,
            ConvertWarning::EndpointNoAddress { .. } => RejectReason::EndpointNoAddress,
            ConvertWarning::EndpointBadAddress { .. } => RejectReason::EndpointBadAddress,
            ConvertWarning::TooManyEndpoints { .. } => RejectReason::TooManyEndpoints,
            ConvertWarning::InvalidExternalIp { .. } => RejectReason::InvalidExternalIp,
            ConvertWarning::UnknownValue { .. } => RejectReason::UnknownValue,
            _ => RejectReason::Other,
        }
    }
}

impl From<SkipReason> for RejectReason {
    #[allow(
        unreachable_patterns,
        reason = "the fallback is for variants added to the model later"
    )]
    fn from(r: SkipReason) -> Self {
        match r {
            SkipReason::NoServiceNameLabel => RejectReason::NoServiceNameLabel,
            SkipReason::ExternalName | SkipReason::Headless | SkipReason::FqdnAddressType => {
                RejectReason::NotProxied
            }
            _ => RejectReason::Other,
        }
    }
}

impl From<&ManifestError> for RejectReason {
    #[allow(
        unreachable_patterns,
        reason = "the fallback is for variants added to the parser later"
    )]
    fn from(e: &ManifestError) -> Self {
        match e {
            ManifestError::Yaml { .. } => RejectReason::InvalidYaml,
            ManifestError::NotAMapping { .. } => RejectReason::NotAMapping,
            ManifestError::NoKind { .. } => RejectReason::NoKind,
            ManifestError::UnknownKind { .. } => RejectReason::UnknownKind,
            ManifestError::BadList { .. } => RejectReason::BadList,
            ManifestError::Decode { .. } => RejectReason::Decode,
            ManifestError::Convert { error, .. } => error.as_ref().into(),
            ManifestError::Warning { warning, .. } => warning.as_ref().into(),
            ManifestError::Skipped { skip, .. } => skip.reason.into(),
            _ => RejectReason::Other,
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

    /// Counts one rejected object or piece of one.
    pub fn record(&self, source: ConfigSource, reason: RejectReason) {
        self.family
            .get_or_create(&RejectLabels {
                source: source.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a problem of the manifest source.
    pub fn manifest(&self, problem: &ManifestError) {
        self.record(ConfigSource::Manifests, problem.into());
    }

    /// The current count, for tests.
    #[cfg(test)]
    pub fn count(&self, source: ConfigSource, reason: RejectReason) -> u64 {
        self.family
            .get_or_create(&RejectLabels {
                source: source.as_str(),
                reason: reason.as_str(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_manifest_problem_counts_under_its_reason() {
        let rejects = ConfigRejects::default();
        let yaml = ManifestError::Yaml {
            file: PathBuf::from("a.yaml"),
            reason: "bad indent".into(),
        };
        rejects.manifest(&yaml);
        rejects.manifest(&yaml);
        assert_eq!(
            rejects.count(ConfigSource::Manifests, RejectReason::InvalidYaml),
            2
        );
        assert_eq!(
            rejects.count(ConfigSource::Kubernetes, RejectReason::InvalidYaml),
            0
        );
    }
}
