//! The Index: every Service and EndpointSlice the sources have seen, as domain
//! types, keyed by [`ObjectRef`], plus the slice → Service join, this node, and
//! change counters.
//!
//! Sources only feed it (`apply_*`, `delete_*`, `reset`, `set_node`);
//! [`Index::desired`] computes the desired state from it through
//! [`super::desired`].
//!
//! # Sources
//!
//! Each object is stored per [`SourceId`], and each source changes only its own
//! objects: a manifests relist never removes what the Kubernetes API reported,
//! and the other way round. When both sources hold the same `ObjectRef`, the
//! Kubernetes copy is the one used (see [`SourceId`]); the manifest copy is kept
//! and comes back if the Kubernetes one goes. Slices join Services across
//! sources: a hand-written slice serves a selector-less Service from the
//! cluster, and the other way round.
//!
//! # Selection
//!
//! The Index applies the proxy's label selection ([`super::selection`]) to
//! everything it is given, so the manifests source behaves like the cluster
//! watch, which filters server-side: an object not selected is treated as
//! deleted from its source (which is what a watch reports when an object's
//! labels stop matching).
//!
//! # Counters
//!
//! [`Index::service_changes`] and [`Index::endpoint_changes`] count changes of
//! the objects in effect, one per object added, changed or removed; a call that
//! changes nothing in effect (the same object again, a manifest shadowed by the
//! Kubernetes copy, a relist of the same lists) adds nothing.
//!
//! Pure: no I/O, no logging, no clock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    desired::{self, DesiredOutcome},
    small_set::SmallSet,
    types::{DesiredState, EndpointSlice, NodeInfo, ObjectRef, SelectionLabels, Service, SourceId},
};

/// One object as each source has it. The first present in precedence order is
/// the one in effect.
#[derive(Clone, Debug)]
struct Layers<T> {
    kubernetes: Option<T>,
    manifests: Option<T>,
}

impl<T> Default for Layers<T> {
    fn default() -> Self {
        Self {
            kubernetes: None,
            manifests: None,
        }
    }
}

impl<T: PartialEq> Layers<T> {
    fn slot(&mut self, source: SourceId) -> &mut Option<T> {
        match source {
            SourceId::Kubernetes => &mut self.kubernetes,
            SourceId::Manifests => &mut self.manifests,
        }
    }

    fn has(&self, source: SourceId) -> bool {
        match source {
            SourceId::Kubernetes => self.kubernetes.is_some(),
            SourceId::Manifests => self.manifests.is_some(),
        }
    }

    fn effective(&self) -> Option<&T> {
        self.kubernetes.as_ref().or(self.manifests.as_ref())
    }

    fn is_empty(&self) -> bool {
        self.kubernetes.is_none() && self.manifests.is_none()
    }

    /// Stores `value` as `source`'s copy. Returns whether the object in effect
    /// changed (appeared, disappeared or differs).
    fn set(&mut self, source: SourceId, value: Option<T>) -> bool {
        let slot = self.slot(source);
        if *slot == value {
            return false;
        }
        let old = std::mem::replace(slot, value);
        let before = match source {
            SourceId::Kubernetes => old.as_ref().or(self.manifests.as_ref()),
            SourceId::Manifests => self.kubernetes.as_ref().or(old.as_ref()),
        };
        before != self.effective()
    }
}

/// Services and EndpointSlices by name, with slices also indexed by the Service
/// they name, so computing one Service's endpoints never scans all slices.
#[derive(Clone, Debug, Default)]
pub struct Index {
    node: NodeInfo,
    /// `--service-proxy-name`: see [`super::selection`].
    proxy_name: Option<String>,
    services: BTreeMap<ObjectRef, Layers<Service>>,
    slices: HashMap<ObjectRef, Layers<EndpointSlice>>,
    /// (namespace, `kubernetes.io/service-name`) → slice ids, in name order,
    /// for the slices in effect. The key is spelled as an [`ObjectRef`] so it
    /// equals the Service's id.
    slices_by_service: HashMap<ObjectRef, SmallSet<ObjectRef>>,
    service_changes: u64,
    endpoint_changes: u64,
    /// What changed since the last [`Index::take_dirty`].
    dirty: Dirty,
}

/// Services whose frontends may have changed since the last sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Everything may have changed (the node changed: locality and topology).
    pub all: bool,
    /// Services (by id, whether or not they still exist) touched by a change
    /// to themselves or to one of their slices.
    pub services: BTreeSet<ObjectRef>,
}

impl Index {
    /// An empty Index for the proxy running on `node`, using the objects that
    /// carry no `service-proxy-name` label.
    pub fn new(node: impl Into<NodeInfo>) -> Self {
        Self {
            node: node.into(),
            ..Self::default()
        }
    }

    /// Uses only the objects labelled `service.kubernetes.io/service-proxy-name=NAME`
    /// (`None` or `Some("")`: the objects without that label). Set before the
    /// first object is applied: objects already left out are not re-examined.
    pub fn with_proxy_name(mut self, proxy_name: Option<&str>) -> Self {
        self.proxy_name = proxy_name.filter(|n| !n.is_empty()).map(str::to_owned);
        self
    }

    pub fn proxy_name(&self) -> Option<&str> {
        self.proxy_name.as_deref()
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Replaces this node's facts (a Node update: zone label, addresses, or the
    /// name learned late). Locality and topology are recomputed by the next
    /// [`Index::desired`]. The nodeport addresses are not the Node object's:
    /// they are kept (see [`Index::set_nodeport_addresses`]). Returns whether
    /// anything changed.
    pub fn set_node(&mut self, mut node: NodeInfo) -> bool {
        node.nodeport_addresses = self.node.nodeport_addresses.clone();
        if self.node == node {
            return false;
        }
        self.node = node;
        self.dirty.all = true;
        true
    }

    /// Sets the addresses NodePorts are served on (the daemon resolves them
    /// from this node's interfaces; see `crate::nodeport`). Order and
    /// duplicates do not matter. Every Service is recomputed on the next
    /// sync. Returns whether anything changed.
    pub fn set_nodeport_addresses(&mut self, addresses: impl IntoIterator<Item = IpAddr>) -> bool {
        let mut addresses: Vec<IpAddr> = addresses.into_iter().collect();
        addresses.sort_unstable();
        addresses.dedup();
        if self.node.nodeport_addresses == addresses {
            return false;
        }
        self.node.nodeport_addresses = addresses;
        self.dirty.all = true;
        true
    }

    /// What changed since the last call, for an incremental sync (see
    /// [`super::incremental::DesiredCache`]).
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    fn is_selected(&self, labels: &SelectionLabels) -> bool {
        labels.selected(self.proxy_name.as_deref())
    }

    /// Adds or replaces `source`'s copy of a Service; one that the proxy's label
    /// selection leaves out removes it instead. Returns whether the Service in
    /// effect changed.
    pub fn apply_service(&mut self, source: SourceId, service: impl Into<Service>) -> bool {
        let service = service.into();
        let id = service.id.clone();
        let value = self.is_selected(&service.labels).then_some(service);
        self.put_service(source, id, value)
    }

    /// Removes `source`'s copy of a Service. Returns whether the Service in
    /// effect changed (the copy was in effect, or was the only one).
    pub fn delete_service(&mut self, source: SourceId, id: &ObjectRef) -> bool {
        self.put_service(source, id.clone(), None)
    }

    fn put_service(&mut self, source: SourceId, id: ObjectRef, value: Option<Service>) -> bool {
        if value.is_none() && !self.services.contains_key(&id) {
            return false;
        }
        let layers = self.services.entry(id.clone()).or_default();
        let changed = layers.set(source, value);
        if layers.is_empty() {
            self.services.remove(&id);
        }
        if changed {
            self.service_changes += 1;
            self.dirty.services.insert(id);
        }
        changed
    }

    /// Adds or replaces `source`'s copy of an EndpointSlice; one that the proxy's
    /// label selection leaves out removes it instead. Returns whether the slice
    /// in effect changed.
    pub fn apply_slice(&mut self, source: SourceId, slice: impl Into<EndpointSlice>) -> bool {
        let slice = slice.into();
        let id = slice.id.clone();
        let value = self.is_selected(&slice.labels).then_some(slice);
        self.put_slice(source, id, value)
    }

    /// Removes `source`'s copy of an EndpointSlice. Returns whether the slice in
    /// effect changed.
    pub fn delete_slice(&mut self, source: SourceId, id: &ObjectRef) -> bool {
        self.put_slice(source, id.clone(), None)
    }

    fn put_slice(&mut self, source: SourceId, id: ObjectRef, value: Option<EndpointSlice>) -> bool {
        if value.is_none() && !self.slices.contains_key(&id) {
            return false;
        }
        let layers = self.slices.entry(id.clone()).or_default();
        let joined_before = layers.effective().map(service_key);
        let changed = layers.set(source, value);
        let joined_after = layers.effective().map(service_key);
        if changed {
            self.dirty
                .services
                .extend(joined_before.iter().chain(joined_after.iter()).cloned());
        }
        if layers.is_empty() {
            self.slices.remove(&id);
        }
        // Only a hand-written slice changes its service-name label, or a copy from
        // the other source names another Service; either way the join follows
        // the slice in effect.
        if joined_before != joined_after {
            if let Some(key) = joined_before {
                self.unjoin(&key, &id);
            }
            if let Some(key) = joined_after {
                self.slices_by_service.entry(key).or_default().insert(id);
            }
        }
        if changed {
            self.endpoint_changes += 1;
        }
        changed
    }

    /// Replaces everything `source` holds: a relist. That source's objects not in
    /// the new lists disappear; the other source's are untouched. Returns whether
    /// anything in effect changed. A list naming one object twice keeps the last.
    pub fn reset(
        &mut self,
        source: SourceId,
        services: impl IntoIterator<Item = Service>,
        slices: impl IntoIterator<Item = EndpointSlice>,
    ) -> bool {
        let services: BTreeMap<ObjectRef, Service> =
            services.into_iter().map(|s| (s.id.clone(), s)).collect();
        let slices: BTreeMap<ObjectRef, EndpointSlice> =
            slices.into_iter().map(|s| (s.id.clone(), s)).collect();
        let gone_services: Vec<ObjectRef> = self
            .services
            .iter()
            .filter(|(id, layers)| layers.has(source) && !services.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let gone_slices: Vec<ObjectRef> = self
            .slices
            .iter()
            .filter(|(id, layers)| layers.has(source) && !slices.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();

        let mut changed = false;
        for id in gone_services {
            changed |= self.delete_service(source, &id);
        }
        for id in gone_slices {
            changed |= self.delete_slice(source, &id);
        }
        for service in services.into_values() {
            changed |= self.apply_service(source, service);
        }
        for slice in slices.into_values() {
            changed |= self.apply_slice(source, slice);
        }
        changed
    }

    /// The Service in effect.
    pub fn service(&self, id: &ObjectRef) -> Option<&Service> {
        self.services.get(id).and_then(Layers::effective)
    }

    /// The EndpointSlice in effect.
    pub fn slice(&self, id: &ObjectRef) -> Option<&EndpointSlice> {
        self.slices.get(id).and_then(Layers::effective)
    }

    /// All Services in effect, sorted by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().filter_map(Layers::effective)
    }

    /// All EndpointSlices in effect, in no particular order.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values().filter_map(Layers::effective)
    }

    /// The slices in effect that name the Service `id` (whether or not it
    /// exists), in name order.
    pub fn slices_for(&self, id: &ObjectRef) -> impl Iterator<Item = &EndpointSlice> {
        self.slices_by_service
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|sid| self.slice(sid))
    }

    /// Services added, changed or removed since the Index was made (kube-proxy's
    /// `sync_proxy_rules_service_changes_total`).
    pub fn service_changes(&self) -> u64 {
        self.service_changes
    }

    /// EndpointSlices added, changed or removed since the Index was made
    /// (kube-proxy's `sync_proxy_rules_endpoint_changes_total`).
    pub fn endpoint_changes(&self) -> u64 {
        self.endpoint_changes
    }

    /// The desired state. Frontend conflicts are resolved (lowest Service id
    /// wins) but not reported; use [`Index::desired_outcome`] to see them.
    pub fn desired(&self) -> DesiredState {
        self.desired_outcome().state
    }

    /// The desired state plus the frontend conflicts and the no-local-endpoint
    /// count found computing it.
    pub fn desired_outcome(&self) -> DesiredOutcome {
        desired::desired(
            &self.node,
            self.services()
                .map(|svc| (svc, self.slices_for(&svc.id).collect::<Vec<_>>())),
        )
    }

    fn unjoin(&mut self, key: &ObjectRef, slice: &ObjectRef) {
        if let Some(ids) = self.slices_by_service.get_mut(key) {
            ids.remove(slice);
            if ids.is_empty() {
                self.slices_by_service.remove(key);
            }
        }
    }
}

/// The id of the Service a slice belongs to.
fn service_key(slice: &EndpointSlice) -> ObjectRef {
    ObjectRef::new(slice.id.namespace.clone(), slice.service_name.clone())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::model::{
        testkit::*,
        types::{
            Protocol::{Tcp, Udp},
            SourceId::{Kubernetes, Manifests},
            TrafficPolicy,
        },
    };

    fn web() -> SvcBuilder {
        svc("default", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, Tcp)
    }

    fn web_slice(name: &str, addr: &str) -> SliceBuilder {
        slice("default", name)
            .for_service("web")
            .port("http", 8080, Tcp)
            .endpoint(addr)
    }

    fn backends(idx: &Index, frontend: &str) -> Vec<String> {
        let state = idx.desired();
        backends_of(&state, frontend)
            .unwrap_or_else(|| panic!("no frontend {frontend} in {:?}", frontends_of(&state)))
    }

    #[test]
    fn scenario_from_the_style_guide() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5").ready());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn slice_before_service() {
        let mut idx = Index::new(node("n1"));
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        assert!(idx.desired().frontends.is_empty());
        idx.apply_service(Manifests, web());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn apply_reports_change() {
        let mut idx = Index::new(node("n1"));
        assert!(idx.apply_service(Manifests, web()));
        assert!(!idx.apply_service(Manifests, web()));
        assert!(idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5")));
        assert!(!idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5")));
        assert!(idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.6")));
    }

    #[test]
    fn slice_update_replaces_endpoints() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_slice(
            Manifests,
            web_slice("web-1", "10.1.0.5").endpoint("10.1.0.6"),
        );
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.7"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.7:8080"]);
    }

    #[test]
    fn slice_relabelled_to_another_service_moves() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_service(
            Manifests,
            svc("default", "api")
                .cluster_ip("10.96.0.11")
                .port("http", 80, Tcp),
        );
        idx.apply_slice(Manifests, web_slice("shared", "10.1.0.5"));
        idx.apply_slice(
            Manifests,
            slice("default", "shared")
                .for_service("api")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.5"),
        );
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(idx.slices_for(&ObjectRef::new("default", "web")).count(), 0);
        assert!(
            idx.slices_by_service.keys().all(|k| k.name == "api"),
            "no stale join entries"
        );
    }

    #[test]
    fn delete_slice_leaves_frontend_without_backends() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        idx.apply_slice(Manifests, web_slice("web-2", "10.1.0.6"));
        assert!(idx.delete_slice(Manifests, &ObjectRef::new("default", "web-1")));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
        assert!(idx.delete_slice(Manifests, &ObjectRef::new("default", "web-2")));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert!(!idx.delete_slice(Manifests, &ObjectRef::new("default", "web-2")));
        assert!(idx.slices_by_service.is_empty(), "no stale join entries");
    }

    #[test]
    fn delete_service_removes_its_frontends() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_service(
            Manifests,
            svc("default", "dns")
                .cluster_ip("10.96.0.53")
                .port("", 53, Udp),
        );
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        assert!(idx.delete_service(Manifests, &ObjectRef::new("default", "web")));
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.53:53/UDP"]);
        assert!(!idx.delete_service(Manifests, &ObjectRef::new("default", "web")));
        // The slice stays, and serves the Service again when it comes back.
        idx.apply_service(Manifests, web());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn reset_forgets_what_is_not_relisted() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_service(
            Manifests,
            svc("default", "gone")
                .cluster_ip("10.96.0.99")
                .port("", 80, Tcp),
        );
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        idx.apply_slice(Manifests, web_slice("web-old", "10.1.0.4"));
        idx.reset(
            Manifests,
            [web().into()],
            [web_slice("web-1", "10.1.0.6").into()],
        );
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
        assert!(idx.slice(&ObjectRef::new("default", "web-old")).is_none());
    }

    #[test]
    fn conflict_reported_through_desired_outcome() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(
            Manifests,
            svc("default", "b")
                .cluster_ip("10.96.0.10")
                .port("", 80, Tcp),
        );
        idx.apply_service(
            Manifests,
            svc("default", "a")
                .cluster_ip("10.96.0.10")
                .port("", 80, Tcp),
        );
        idx.apply_slice(
            Manifests,
            slice("default", "b-1")
                .for_service("b")
                .port("", 8080, Tcp)
                .endpoint("10.1.0.2"),
        );
        idx.apply_slice(
            Manifests,
            slice("default", "a-1")
                .for_service("a")
                .port("", 8080, Tcp)
                .endpoint("10.1.0.1"),
        );
        let out = idx.desired_outcome();
        assert_eq!(out.state, idx.desired());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.1:8080"]);
        assert_eq!(out.conflicts.len(), 1);
        assert_eq!(out.conflicts[0].winner, ObjectRef::new("default", "a"));
        assert_eq!(out.conflicts[0].losers, [ObjectRef::new("default", "b")]);
        // Deleting the winner hands the frontend to the other Service.
        idx.delete_service(Manifests, &ObjectRef::new("default", "a"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.2:8080"]);
        assert!(idx.desired_outcome().conflicts.is_empty());
    }

    fn web_ref() -> ObjectRef {
        ObjectRef::new("default", "web")
    }

    #[test]
    fn same_service_in_both_sources_kubernetes_wins() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web().port("metrics", 9090, Tcp));
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        assert_eq!(
            frontends_of(&idx.desired()),
            ["10.96.0.10:80/TCP", "10.96.0.10:9090/TCP"]
        );
        assert!(idx.apply_service(Kubernetes, web()));
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        // A change to the shadowed copy changes nothing in effect.
        assert!(!idx.apply_service(Manifests, web().port("admin", 8081, Tcp)));
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        // Without the Kubernetes copy, the manifest one is back.
        assert!(idx.delete_service(Kubernetes, &web_ref()));
        assert_eq!(
            frontends_of(&idx.desired()),
            ["10.96.0.10:80/TCP", "10.96.0.10:8081/TCP"]
        );
    }

    #[test]
    fn same_slice_in_both_sources_kubernetes_wins_and_join_follows() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Manifests, web());
        idx.apply_service(
            Manifests,
            svc("default", "api")
                .cluster_ip("10.96.0.11")
                .port("http", 80, Tcp),
        );
        idx.apply_slice(Manifests, web_slice("shared", "10.1.0.5"));
        idx.apply_slice(
            Kubernetes,
            slice("default", "shared")
                .for_service("api")
                .port("http", 8080, Tcp)
                .endpoint("10.1.0.6"),
        );
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.1.0.6:8080"]);
        idx.delete_slice(Kubernetes, &ObjectRef::new("default", "shared"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), Vec::<String>::new());
        idx.delete_slice(Manifests, &ObjectRef::new("default", "shared"));
        assert!(idx.slices_by_service.is_empty(), "no stale join entries");
        assert!(idx.slices.is_empty(), "no empty layers left behind");
    }

    /// A selector-less Service from the cluster, with a hand-written slice, and
    /// the other way round.
    #[test]
    fn slices_join_services_across_sources() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Kubernetes, web());
        idx.apply_slice(Manifests, web_slice("web-manual", "10.1.0.5"));
        idx.apply_service(
            Manifests,
            svc("default", "db")
                .cluster_ip("10.96.0.12")
                .port("", 5432, Tcp),
        );
        idx.apply_slice(
            Kubernetes,
            slice("default", "db-abcde")
                .for_service("db")
                .port("", 5432, Tcp)
                .endpoint("10.1.0.9"),
        );
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&idx, "10.96.0.12:5432/TCP"), ["10.1.0.9:5432"]);
    }

    #[test]
    fn reset_replaces_only_its_own_source() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(Kubernetes, web());
        idx.apply_slice(Kubernetes, web_slice("web-k8s", "10.1.0.5"));
        idx.reset(
            Manifests,
            [svc("default", "db")
                .cluster_ip("10.96.0.12")
                .port("", 5432, Tcp)
                .into()],
            [web_slice("web-manual", "10.1.0.6").into()],
        );
        assert_eq!(
            backends(&idx, "10.96.0.10:80/TCP"),
            ["10.1.0.5:8080", "10.1.0.6:8080"]
        );
        // An empty manifests relist removes only what the manifests held.
        assert!(idx.reset(Manifests, [], []));
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        // And the other way round.
        idx.reset(Manifests, [], [web_slice("web-manual", "10.1.0.6").into()]);
        idx.reset(Kubernetes, [web().into()], []);
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    }

    #[test]
    fn change_counters_count_changes_in_effect() {
        let mut idx = Index::new(node("n1"));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (0, 0));
        let lists = || {
            (
                vec![
                    web().into(),
                    svc("default", "db")
                        .cluster_ip("10.96.0.12")
                        .port("", 5432, Tcp)
                        .into(),
                ],
                vec![
                    web_slice("web-1", "10.1.0.5").into(),
                    web_slice("web-2", "10.1.0.6").into(),
                    web_slice("web-3", "10.1.0.7").into(),
                ],
            )
        };
        let (services, slices) = lists();
        assert!(idx.reset(Manifests, services, slices));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (2, 3));

        // The same relist again: nothing.
        let (services, slices) = lists();
        assert!(!idx.reset(Manifests, services, slices));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (2, 3));

        // One slice changed, one removed, one Service removed.
        assert!(idx.reset(
            Manifests,
            [web().into()],
            [
                web_slice("web-1", "10.1.0.5").into(),
                web_slice("web-2", "10.1.0.8").into(),
            ],
        ));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 5));

        // A Kubernetes copy equal to the manifest one changes nothing in effect;
        // a different one does, and so does its removal.
        assert!(!idx.apply_service(Kubernetes, web()));
        assert!(idx.apply_slice(Kubernetes, web_slice("web-1", "10.1.0.9")));
        assert!(idx.delete_slice(Kubernetes, &ObjectRef::new("default", "web-1")));
        assert!(!idx.delete_slice(Kubernetes, &ObjectRef::new("default", "web-1")));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 7));

        // Node changes are not Service or endpoint changes.
        assert!(idx.set_node(node("n2").into()));
        assert!(!idx.set_node(node("n2").into()));
        assert_eq!((idx.service_changes(), idx.endpoint_changes()), (3, 7));
    }

    #[test]
    fn nodeport_addresses_survive_node_updates_and_mark_everything_dirty() {
        let mut idx = Index::new(node("n1"));
        idx.apply_service(
            Manifests,
            web()
                .service_type(crate::model::ServiceType::NodePort)
                .node_port(30080),
        );
        idx.take_dirty();
        let addrs = [ip("192.168.1.10"), ip("10.0.0.1"), ip("192.168.1.10")];
        assert!(idx.set_nodeport_addresses(addrs));
        assert!(!idx.set_nodeport_addresses([ip("10.0.0.1"), ip("192.168.1.10")]));
        assert!(idx.take_dirty().all);
        // A Node update (from the API) knows nothing of them: they stay.
        assert!(idx.set_node(node("n1").zone("a").into()));
        assert_eq!(
            idx.node().nodeport_addresses,
            [ip("10.0.0.1"), ip("192.168.1.10")]
        );
        assert_eq!(
            crate::model::testkit::frontends_of(&idx.desired()),
            [
                "10.0.0.1:30080/TCP",
                "10.96.0.10:80/TCP",
                "192.168.1.10:30080/TCP"
            ]
        );
    }

    #[test]
    fn objects_of_another_proxy_are_ignored_by_default() {
        let mut idx = Index::new(node("n1"));
        assert!(!idx.apply_service(Manifests, web().proxy_name_label("other")));
        assert!(idx.desired().frontends.is_empty());
        assert!(idx.apply_service(Manifests, web()));
        assert!(!idx.apply_slice(Manifests, web_slice("web-h", "10.1.0.4").headless_label()));
        assert!(!idx.apply_slice(
            Manifests,
            web_slice("web-o", "10.1.0.3").proxy_name_label("other")
        ));
        idx.apply_slice(Manifests, web_slice("web-1", "10.1.0.5"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        // Relabelling an object for another proxy removes it, as a watch with a
        // label selector reports a deletion.
        assert!(idx.apply_slice(
            Manifests,
            web_slice("web-1", "10.1.0.5").proxy_name_label("other")
        ));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert!(idx.apply_service(Manifests, web().proxy_name_label("other")));
        assert!(idx.desired().frontends.is_empty());
        assert_eq!(idx.service_changes(), 2);
    }

    #[test]
    fn named_proxy_uses_only_its_objects() {
        let mut idx = Index::new(node("n1")).with_proxy_name(Some("ebpf"));
        assert_eq!(idx.proxy_name(), Some("ebpf"));
        idx.reset(
            Manifests,
            [
                web().proxy_name_label("ebpf").into(),
                svc("default", "plain")
                    .cluster_ip("10.96.0.20")
                    .port("", 80, Tcp)
                    .into(),
                svc("default", "other")
                    .cluster_ip("10.96.0.21")
                    .port("", 80, Tcp)
                    .proxy_name_label("kube-router")
                    .into(),
            ],
            [
                web_slice("web-1", "10.1.0.5")
                    .proxy_name_label("ebpf")
                    .into(),
                // The slice's own labels count, not its Service's.
                web_slice("web-2", "10.1.0.6").into(),
            ],
        );
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(
            Index::new(node("n1"))
                .with_proxy_name(Some(""))
                .proxy_name(),
            None
        );
    }

    /// The node is learned (or changes) after the objects: locality follows.
    #[test]
    fn node_change_recomputes_locality_and_zone() {
        let mut idx = Index::default();
        idx.apply_service(Manifests, web().internal_policy(TrafficPolicy::Local));
        idx.apply_service(
            Manifests,
            svc("default", "api")
                .cluster_ip("10.96.0.11")
                .port("http", 80, Tcp),
        );
        idx.apply_slice(
            Manifests,
            web_slice("web-1", "10.1.0.5")
                .on_node("n1")
                .endpoint("10.1.0.6")
                .on_node("n2"),
        );
        idx.apply_slice(
            Manifests,
            slice("default", "api-1")
                .for_service("api")
                .port("http", 8080, Tcp)
                .endpoint("10.2.0.1")
                .zone_hints(&["a"])
                .endpoint("10.2.0.2")
                .zone_hints(&["b"]),
        );
        // No node name yet: nothing is local.
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert_eq!(idx.desired_outcome().no_local_endpoints, 1);
        assert_eq!(
            backends(&idx, "10.96.0.11:80/TCP"),
            ["10.2.0.1:8080", "10.2.0.2:8080"]
        );

        idx.set_node(node("n1").zone("a").into());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.2.0.1:8080"]);
        assert_eq!(idx.desired_outcome().no_local_endpoints, 0);

        idx.set_node(node("n2").zone("b").into());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
        assert_eq!(backends(&idx, "10.96.0.11:80/TCP"), ["10.2.0.2:8080"]);
        assert_eq!(idx.node().name, "n2");
    }

    /// 10,000 Services × 10 endpoints must stay well within a sync interval.
    /// The bound is generous (debug builds, shared CI machines); the join is what
    /// keeps it linear.
    #[test]
    fn ten_thousand_services_compute_quickly() {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for i in 0..10_000u32 {
            let name = format!("svc-{i}");
            let ns = format!("ns-{}", i % 100);
            let [_, _, hi, lo] = i.to_be_bytes();
            services.push(
                svc(&ns, &name)
                    .cluster_ip(&format!("10.96.{hi}.{lo}"))
                    .port("http", 80, Tcp)
                    .into(),
            );
            let mut sl = slice(&ns, &format!("{name}-abcde"))
                .for_service(&name)
                .port("http", 8080, Tcp);
            for e in 0..10u8 {
                sl = sl.endpoint(&format!("10.{}.{hi}.{lo}", 100 + e));
            }
            slices.push(sl.into());
        }
        let mut idx = Index::new(node("n1"));
        let start = Instant::now();
        idx.reset(Manifests, services, slices);
        let state = idx.desired();
        let elapsed = start.elapsed();
        assert_eq!(state.frontends.len(), 10_000);
        assert!(state.frontends.values().all(|s| s.backends.len() == 10));
        assert!(elapsed.as_secs() < 5, "reset + desired took {elapsed:?}");
    }
}
