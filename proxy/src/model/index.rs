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
//! [`Index::pending_changes`] counts the Services whose object, or whose
//! endpoints, changed since the last sync took them ([`Index::take_dirty`]):
//! kube-proxy's `…_changes_pending` gauges, which its change trackers key by
//! Service the same way.
//!
//! Pure: no I/O, no logging, no clock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::{
    desired::{self, DesiredOutcome},
    small_set::SmallSet,
    types::{
        DesiredState, EndpointSlice, ExternalIpGuard, NodeInfo, ObjectRef, SelectionLabels,
        Service, SourceId, SourceRange,
    },
};

/// One object as each source has it. The first present in precedence order is
/// the one in effect. Boxed: one source's copy is usually absent, and the maps
/// that hold layers keep spare slots; both then cost a pointer, not an object.
#[derive(Clone, Debug)]
struct Layers<T> {
    kubernetes: Option<Box<T>>,
    manifests: Option<Box<T>>,
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
    fn slot(&mut self, source: SourceId) -> &mut Option<Box<T>> {
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
        self.kubernetes.as_deref().or(self.manifests.as_deref())
    }

    fn is_empty(&self) -> bool {
        self.kubernetes.is_none() && self.manifests.is_none()
    }

    /// Stores `value` as `source`'s copy. Returns whether the object in effect
    /// changed (appeared, disappeared or differs).
    fn set(&mut self, source: SourceId, value: Option<T>) -> bool {
        let slot = self.slot(source);
        if slot.as_deref() == value.as_ref() {
            return false;
        }
        let old = std::mem::replace(slot, value.map(Box::new));
        let before = match source {
            SourceId::Kubernetes => old.as_deref().or(self.manifests.as_deref()),
            SourceId::Manifests => self.kubernetes.as_deref().or(old.as_deref()),
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
    /// Services whose object changed since the last [`Index::take_dirty`].
    pending_services: BTreeSet<ObjectRef>,
    /// Services whose slices changed since the last [`Index::take_dirty`].
    pending_endpoints: BTreeSet<ObjectRef>,
    /// `--nodeport-addresses primary`: NodePorts only on the Node's primary
    /// addresses among `nodeport_candidates`.
    nodeport_primary: bool,
    /// The addresses last given to [`Index::set_nodeport_addresses`].
    nodeport_candidates: Vec<IpAddr>,
}

/// How many Services have changes no sync has taken yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingChanges {
    /// Services whose own object changed.
    pub services: usize,
    /// Services whose endpoints (slices) changed.
    pub endpoints: usize,
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
        let node: NodeInfo = node.into();
        Self {
            nodeport_candidates: node.nodeport_addresses.clone(),
            node,
            ..Self::default()
        }
    }

    /// `--nodeport-addresses primary`: of the addresses given to
    /// [`Index::set_nodeport_addresses`], NodePorts are served only on this
    /// node's primary ones ([`NodeInfo::primary_addresses`], from the Node
    /// object), and on all of them while the Node gives none (as kube-proxy,
    /// which then cannot tell the node's IP). Set before the first sync.
    pub fn with_nodeport_primary(mut self, primary: bool) -> Self {
        self.nodeport_primary = primary;
        self.node.nodeport_addresses = self.nodeport_on(&self.node);
        self
    }

    /// The nodeport addresses for `node`: the candidates, narrowed to its
    /// primary addresses under `--nodeport-addresses primary`.
    fn nodeport_on(&self, node: &NodeInfo) -> Vec<IpAddr> {
        if !self.nodeport_primary {
            return self.nodeport_candidates.clone();
        }
        let primary = node.primary_addresses();
        self.nodeport_candidates
            .iter()
            .filter(|ip| primary.is_empty() || primary.contains(ip))
            .copied()
            .collect()
    }

    /// Uses only the objects labelled `service.kubernetes.io/service-proxy-name=NAME`
    /// (`None` or `Some("")`: the objects without that label). Set before the
    /// first object is applied: objects already left out are not re-examined.
    pub fn with_proxy_name(mut self, proxy_name: Option<&str>) -> Self {
        self.proxy_name = proxy_name.filter(|n| !n.is_empty()).map(str::to_owned);
        self
    }

    /// Sets `--external-ip-guard` (see [`ExternalIpGuard`]); set before the
    /// first sync, like the proxy name.
    pub fn with_external_ip_guard(mut self, guard: ExternalIpGuard) -> Self {
        self.node.external_ip_guard = guard;
        self
    }

    /// Sets the API server's addresses and `--service-cluster-ip-range`
    /// (see [`NodeInfo::api_server_addresses`], [`NodeInfo::service_cidrs`]);
    /// set before the first sync.
    pub fn with_frontend_guard(
        mut self,
        api_server_addresses: Vec<IpAddr>,
        service_cidrs: Vec<SourceRange>,
    ) -> Self {
        self.node.api_server_addresses = api_server_addresses;
        self.node.service_cidrs = service_cidrs;
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
    /// they are kept (see [`Index::set_nodeport_addresses`]), or, under
    /// [`Index::with_nodeport_primary`], follow its primary addresses; the
    /// daemon's [`NodeInfo::external_ip_guard`] is kept too. Returns whether
    /// anything changed.
    pub fn set_node(&mut self, mut node: NodeInfo) -> bool {
        node.nodeport_addresses = self.nodeport_on(&node);
        node.external_ip_guard = self.node.external_ip_guard;
        node.interface_addresses = self.node.interface_addresses.clone();
        node.api_server_addresses = self.node.api_server_addresses.clone();
        node.service_cidrs = self.node.service_cidrs.clone();
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
        self.nodeport_candidates = addresses;
        let addresses = self.nodeport_on(&self.node);
        if self.node.nodeport_addresses == addresses {
            return false;
        }
        self.node.nodeport_addresses = addresses;
        self.dirty.all = true;
        true
    }

    /// Sets every address of this node's interfaces (see
    /// [`NodeInfo::interface_addresses`]). Order and duplicates do not
    /// matter. Returns whether anything changed (then every Service is
    /// recomputed on the next sync).
    pub fn set_interface_addresses(&mut self, addresses: impl IntoIterator<Item = IpAddr>) -> bool {
        let mut addresses: Vec<IpAddr> = addresses.into_iter().collect();
        addresses.sort_unstable();
        addresses.dedup();
        if self.node.interface_addresses == addresses {
            return false;
        }
        self.node.interface_addresses = addresses;
        self.dirty.all = true;
        true
    }

    /// What changed since the last call, for an incremental sync (the
    /// `DesiredCache` of `model::incremental` reads it; the Index does not
    /// depend on its reader).
    pub fn take_dirty(&mut self) -> Dirty {
        self.pending_services.clear();
        self.pending_endpoints.clear();
        std::mem::take(&mut self.dirty)
    }

    /// The changes no sync has taken yet, by Service (see the module docs).
    pub fn pending_changes(&self) -> PendingChanges {
        PendingChanges {
            services: self.pending_services.len(),
            endpoints: self.pending_endpoints.len(),
        }
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
            self.pending_services.insert(id.clone());
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
            let joined = joined_before.iter().chain(joined_after.iter());
            self.pending_endpoints.extend(joined.clone().cloned());
            self.dirty.services.extend(joined.cloned());
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

    /// An empty Index that selects objects as this one does: where a source
    /// gathers its initial lists, as they arrive, before they take effect
    /// (see [`Index::absorb`]).
    pub fn staging(&self) -> Self {
        Self {
            proxy_name: self.proxy_name.clone(),
            ..Self::default()
        }
    }

    /// Takes in, in one step, the objects of `staged` (an Index from
    /// [`Index::staging`] that only `source` filled) as `source`'s. When this
    /// Index has no objects yet (the usual start) the staged maps are taken
    /// whole, without copying anything; else object by object. Returns
    /// whether anything in effect changed.
    pub fn absorb(&mut self, source: SourceId, mut staged: Index) -> bool {
        if self.services.is_empty() && self.slices.is_empty() {
            let changed = !staged.services.is_empty() || !staged.slices.is_empty();
            self.services = std::mem::take(&mut staged.services);
            self.slices = std::mem::take(&mut staged.slices);
            self.slices_by_service = std::mem::take(&mut staged.slices_by_service);
            self.service_changes += staged.service_changes;
            self.endpoint_changes += staged.endpoint_changes;
            self.pending_services.append(&mut staged.pending_services);
            self.pending_endpoints.append(&mut staged.pending_endpoints);
            self.dirty.services.append(&mut staged.dirty.services);
            return changed;
        }
        let mut changed = false;
        for (_, mut layers) in std::mem::take(&mut staged.services) {
            if let Some(service) = layers.slot(source).take() {
                changed |= self.apply_service(source, *service);
            }
        }
        for (_, mut layers) in std::mem::take(&mut staged.slices) {
            if let Some(slice) = layers.slot(source).take() {
                changed |= self.apply_slice(source, *slice);
            }
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
mod tests;
