//! What the fuzz targets share: the invariants the model states
//! ([`check_service`], [`check_slice`], [`check_desired`]) and applying
//! converted API objects to an Index the way the daemon does
//! ([`Model`]).
//!
//! A broken invariant panics, which libFuzzer reports as a crash with the
//! input that caused it.

use std::net::IpAddr;

use proxy::model::{
    AddressType, Backend, DesiredState, EndpointSlice, Index, NodeInfo, ObjectRef, Service,
    SourceId,
    convert::{Converted, MAX_AFFINITY_TIMEOUT, MAX_ENDPOINTS_PER_SLICE},
    incremental::DesiredCache,
};

/// `service`'s documented invariants (`model::types`, `model::convert`).
pub fn check_service(service: &Service) {
    check_ref(&service.id);
    assert!(
        !service.cluster_ips.is_empty(),
        "a kept Service has a ClusterIP"
    );
    assert_unique(&service.cluster_ips, "clusterIPs");
    assert_unique(&service.external_ips, "externalIPs");
    assert_unique(&service.load_balancer_ips, "LoadBalancer IPs");
    assert_unique(&service.load_balancer_source_ranges, "source ranges");
    for range in &service.load_balancer_source_ranges {
        assert!(range.contains(range.addr()), "{range}: host bits cleared");
    }
    if let Some(timeout) = service.session_affinity {
        assert!(
            (1..=MAX_AFFINITY_TIMEOUT).contains(&timeout),
            "affinity timeout {timeout}"
        );
    }
    assert_ne!(service.health_check_node_port, Some(0));
    let mut seen = Vec::new();
    for port in &service.ports {
        assert_ne!(port.port, 0, "a Service port is 1..=65535");
        assert_ne!(port.node_port, Some(0), "a nodePort is 1..=65535");
        let key = (port.port, port.protocol);
        assert!(!seen.contains(&key), "port {key:?} twice");
        seen.push(key);
    }
}

/// `slice`'s documented invariants.
pub fn check_slice(slice: &EndpointSlice) {
    check_ref(&slice.id);
    assert!(
        !slice.service_name.is_empty(),
        "a kept slice names its Service"
    );
    assert!(
        slice.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE,
        "{} endpoints",
        slice.endpoints.len()
    );
    for ep in &slice.endpoints {
        assert_eq!(
            AddressType::of(ep.address),
            slice.address_type,
            "{}",
            ep.address
        );
    }
    for port in &slice.ports {
        assert_ne!(port.port, 0, "an endpoint port is 1..=65535");
    }
}

/// The desired state's invariants: every frontend's backends are of its
/// family and protocol, sorted and unique, and so are its source ranges.
pub fn check_desired(state: &DesiredState) {
    for (frontend, spec) in &state.frontends {
        assert_ne!(frontend.port, 0, "{frontend}");
        check_ref(&spec.service);
        check_backends(&spec.backends, frontend.addr, frontend.protocol, "backends");
        if let Some(external) = &spec.external_backends {
            assert!(spec.kind.is_external(), "{frontend}: external backends");
            check_backends(
                external,
                frontend.addr,
                frontend.protocol,
                "external backends",
            );
        }
        if let Some(ranges) = &spec.source_ranges {
            assert!(ranges.is_sorted(), "{frontend}: source ranges sorted");
            assert_unique(ranges, "source ranges");
        }
        if let Some(timeout) = spec.affinity_timeout {
            assert!((1..=MAX_AFFINITY_TIMEOUT).contains(&timeout), "{frontend}");
        }
    }
    for (service, retained) in &state.retained_by_service {
        check_ref(service);
        for backend in retained {
            assert!(state.retained_backends.contains_key(backend), "{backend}");
        }
    }
}

fn check_backends(
    backends: &[Backend],
    family: IpAddr,
    protocol: proxy::model::Protocol,
    what: &str,
) {
    assert!(backends.is_sorted(), "{what} sorted");
    assert_unique(backends, what);
    for b in backends {
        assert_eq!(
            b.addr.is_ipv4(),
            family.is_ipv4(),
            "{what}: {b} for {family}"
        );
        assert_eq!(b.protocol, protocol, "{what}: {b}");
        assert_ne!(b.port, 0, "{what}: {b}");
    }
}

fn check_ref(id: &ObjectRef) {
    assert!(!id.namespace.is_empty(), "{id}: a namespace (defaulted)");
    assert!(!id.name.is_empty(), "{id}: a name");
}

fn assert_unique<T: PartialEq + std::fmt::Debug>(items: &[T], what: &str) {
    for (i, a) in items.iter().enumerate() {
        assert!(!items[i + 1..].contains(a), "{what}: {a:?} twice");
    }
}

/// An Index and the incremental cache the daemon keeps next to it.
pub struct Model {
    pub index: Index,
    pub cache: DesiredCache,
}

impl Default for Model {
    fn default() -> Self {
        let mut node = NodeInfo::named("node-a");
        node.addresses = vec![[192, 168, 0, 10].into()];
        node.nodeport_addresses = vec![[192, 168, 0, 10].into()];
        Self {
            index: Index::new(node),
            cache: DesiredCache::new(),
        }
    }
}

impl Model {
    /// Applies a converted Service, checking it first.
    pub fn service(&mut self, converted: Converted<Service>) {
        if let Converted::Kept { object, .. } = converted {
            check_service(&object);
            self.index.apply_service(SourceId::Manifests, object);
        }
    }

    /// Applies a converted slice, checking it first.
    pub fn slice(&mut self, converted: Converted<EndpointSlice>) {
        if let Converted::Kept { object, .. } = converted {
            check_slice(&object);
            self.index.apply_slice(SourceId::Manifests, object);
        }
    }

    /// Brings the cache up to date and checks it against a full recompute
    /// (what `model::incremental` promises) and the desired state's
    /// invariants.
    pub fn check(&mut self) {
        self.cache.update(&mut self.index);
        let full = self.index.desired_outcome();
        assert_eq!(
            self.cache.state(),
            &full.state,
            "incremental state differs from a full recompute"
        );
        assert_eq!(self.cache.conflicts(), full.conflicts, "conflicts differ");
        assert_eq!(self.cache.refusals(), full.refusals, "refusals differ");
        check_desired(&full.state);
    }
}
