//! Which Services and EndpointSlices this proxy uses, by label, as kube-proxy
//! decides it (`cmd/kube-proxy/app/server.go`).
//!
//! - Objects labelled `service.kubernetes.io/headless` are never used.
//! - With no proxy name, objects labelled `service.kubernetes.io/service-proxy-name`
//!   (any value) belong to another proxy and are not used.
//! - With a proxy name, only objects whose `service-proxy-name` label equals it
//!   are used (how alternative proxies such as Cilium and kube-router share a
//!   cluster with kube-proxy).
//!
//! A Service is judged by its own labels and a slice by its own labels; the
//! EndpointSlice controller copies the Service's labels onto its slices.
//!
//! The Kubernetes source applies [`label_selector`] server-side; the Index applies
//! [`SelectionLabels::selected`] to whatever it is fed, so the manifests source
//! behaves exactly like the cluster watch.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

/// Marks an object as handled by a service proxy other than the default one.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Set by the EndpointSlice controller on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// `Some("")` means no name (an empty flag value is not a way to select objects
/// whose label is empty).
fn normalize(proxy_name: Option<&str>) -> Option<&str> {
    proxy_name.filter(|n| !n.is_empty())
}

/// The label selector to list and watch Services and EndpointSlices with.
/// Requirements are sorted by key, as `labels.Selector.String()` prints them:
///
/// - `None`: `!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name`
///   (kube-proxy's selector, byte for byte);
/// - `Some("x")`: `!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=x`.
///
/// The name must be a valid label value (see [`validate_proxy_name`]); it is not
/// escaped.
pub fn label_selector(proxy_name: Option<&str>) -> String {
    match normalize(proxy_name) {
        None => format!("!{HEADLESS_LABEL},!{SERVICE_PROXY_NAME_LABEL}"),
        Some(name) => format!("!{HEADLESS_LABEL},{SERVICE_PROXY_NAME_LABEL}={name}"),
    }
}

/// Whether an object with these labels is used: the client-side twin of
/// [`label_selector`].
pub fn selected(labels: &BTreeMap<String, String>, proxy_name: Option<&str>) -> bool {
    SelectionLabels::from_labels(labels).selected(proxy_name)
}

/// The two labels that decide whether a service proxy uses an object (see the
/// module docs). Kept instead of all labels: nothing else reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SelectionLabels {
    /// `service.kubernetes.io/service-proxy-name`, when present.
    pub service_proxy_name: Option<String>,
    /// `service.kubernetes.io/headless` is present (any value).
    pub headless: bool,
}

impl SelectionLabels {
    /// Picks the two labels that matter out of an object's labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        Self {
            service_proxy_name: labels.get(SERVICE_PROXY_NAME_LABEL).cloned(),
            headless: labels.contains_key(HEADLESS_LABEL),
        }
    }

    /// See [`selected`].
    pub fn selected(&self, proxy_name: Option<&str>) -> bool {
        if self.headless {
            return false;
        }
        match normalize(proxy_name) {
            None => self.service_proxy_name.is_none(),
            Some(name) => self.service_proxy_name.as_deref() == Some(name),
        }
    }
}

/// A proxy name that is not a valid label value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid service proxy name {name:?}: a label value is at most 63 characters of \
     [A-Za-z0-9-_.], starting and ending with a letter or digit"
)]
pub struct InvalidProxyName {
    pub name: String,
}

/// Checks that `name` can be matched against a label (Kubernetes' label-value
/// syntax), so [`label_selector`] builds a selector the API server accepts.
pub fn validate_proxy_name(name: &str) -> Result<(), InvalidProxyName> {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_none_or(u8::is_ascii_alphanumeric);
    let valid = bytes.len() <= 63
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(InvalidProxyName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[rstest]
    #[case::default(
        None,
        "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
    )]
    #[case::empty_name_is_no_name(
        Some(""),
        "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
    )]
    #[case::named(
        Some("ebpf"),
        "!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=ebpf"
    )]
    fn selector_string(#[case] proxy_name: Option<&str>, #[case] want: &str) {
        assert_eq!(label_selector(proxy_name), want);
    }

    /// The e2e tests "should implement service.kubernetes.io/service-proxy-name"
    /// and "... headless", as a table.
    #[rstest]
    #[case::plain_default(&[], None, true)]
    #[case::other_labels_default(&[("app", "web")], None, true)]
    #[case::proxy_name_default(&[(SERVICE_PROXY_NAME_LABEL, "foo-bar")], None, false)]
    #[case::empty_proxy_name_label_default(&[(SERVICE_PROXY_NAME_LABEL, "")], None, false)]
    #[case::headless_default(&[(HEADLESS_LABEL, "")], None, false)]
    #[case::plain_named(&[], Some("ebpf"), false)]
    #[case::matching_named(&[(SERVICE_PROXY_NAME_LABEL, "ebpf")], Some("ebpf"), true)]
    #[case::other_named(&[(SERVICE_PROXY_NAME_LABEL, "foo-bar")], Some("ebpf"), false)]
    #[case::headless_named(
        &[(SERVICE_PROXY_NAME_LABEL, "ebpf"), (HEADLESS_LABEL, "")],
        Some("ebpf"),
        false
    )]
    fn selection(
        #[case] pairs: &[(&str, &str)],
        #[case] proxy_name: Option<&str>,
        #[case] want: bool,
    ) {
        assert_eq!(selected(&labels(pairs), proxy_name), want);
    }

    #[rstest]
    #[case::simple("ebpf", true)]
    #[case::empty("", true)]
    #[case::punctuation_inside("my-proxy_v1.2", true)]
    #[case::leading_dash("-x", false)]
    #[case::trailing_dot("x.", false)]
    #[case::comma("a,b", false)]
    #[case::equals("a=b", false)]
    #[case::space("a b", false)]
    #[case::too_long(&"a".repeat(64), false)]
    #[case::longest(&"a".repeat(63), true)]
    fn proxy_name_validation(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(validate_proxy_name(name).is_ok(), ok, "{name:?}");
    }
}
