//! The Index: every Service and EndpointSlice the sources have seen, as domain
//! types, keyed by [`ObjectRef`], plus the slice → Service join.
//!
//! Sources only feed it (`apply_*`, `delete_*`, `reset`); [`Index::desired`]
//! computes the desired state from it through [`super::desired`].
//!
//! Pure: no I/O, no logging, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    desired::{self, DesiredOutcome},
    types::{DesiredState, EndpointSlice, ObjectRef, Service},
};

/// Services and EndpointSlices by name, with slices also indexed by the Service
/// they name, so computing one Service's endpoints never scans all slices.
#[derive(Clone, Debug, Default)]
pub struct Index {
    services: BTreeMap<ObjectRef, Service>,
    slices: HashMap<ObjectRef, EndpointSlice>,
    /// (namespace, `kubernetes.io/service-name`) → slice ids, in name order.
    /// The key is spelled as an [`ObjectRef`] so it equals the Service's id.
    slices_by_service: HashMap<ObjectRef, BTreeSet<ObjectRef>>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Service. Returns whether anything changed.
    pub fn apply_service(&mut self, service: impl Into<Service>) -> bool {
        let service = service.into();
        if self.services.get(&service.id) == Some(&service) {
            return false;
        }
        self.services.insert(service.id.clone(), service);
        true
    }

    /// Adds or replaces an EndpointSlice. Returns whether anything changed.
    pub fn apply_slice(&mut self, slice: impl Into<EndpointSlice>) -> bool {
        let slice = slice.into();
        if self.slices.get(&slice.id) == Some(&slice) {
            return false;
        }
        let id = slice.id.clone();
        let key = service_key(&slice);
        if let Some(old) = self.slices.insert(id.clone(), slice) {
            // Only a hand-written slice changes its service-name label, but then
            // the old join must go.
            if service_key(&old) != key {
                self.unjoin(&old);
            }
        }
        self.slices_by_service.entry(key).or_default().insert(id);
        true
    }

    /// Removes a Service. Returns whether it was there.
    pub fn delete_service(&mut self, id: &ObjectRef) -> bool {
        self.services.remove(id).is_some()
    }

    /// Removes an EndpointSlice. Returns whether it was there.
    pub fn delete_slice(&mut self, id: &ObjectRef) -> bool {
        match self.slices.remove(id) {
            Some(old) => {
                self.unjoin(&old);
                true
            }
            None => false,
        }
    }

    /// Replaces everything: a relist. Objects not in the new lists disappear.
    pub fn reset(
        &mut self,
        services: impl IntoIterator<Item = Service>,
        slices: impl IntoIterator<Item = EndpointSlice>,
    ) {
        *self = Self::new();
        for service in services {
            self.apply_service(service);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }

    pub fn service(&self, id: &ObjectRef) -> Option<&Service> {
        self.services.get(id)
    }

    pub fn slice(&self, id: &ObjectRef) -> Option<&EndpointSlice> {
        self.slices.get(id)
    }

    /// All Services, sorted by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// All EndpointSlices, in no particular order.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }

    /// The slices that name the Service `id` (whether or not it exists), in
    /// name order.
    pub fn slices_for(&self, id: &ObjectRef) -> impl Iterator<Item = &EndpointSlice> {
        self.slices_by_service
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|sid| self.slices.get(sid))
    }

    /// The desired state. Frontend conflicts are resolved (lowest Service id
    /// wins) but not reported; use [`Index::desired_outcome`] to see them.
    pub fn desired(&self) -> DesiredState {
        self.desired_outcome().state
    }

    /// The desired state plus the frontend conflicts found computing it.
    pub fn desired_outcome(&self) -> DesiredOutcome {
        desired::desired(
            self.services
                .values()
                .map(|svc| (svc, self.slices_for(&svc.id).collect::<Vec<_>>())),
        )
    }

    fn unjoin(&mut self, slice: &EndpointSlice) {
        let key = service_key(slice);
        if let Some(ids) = self.slices_by_service.get_mut(&key) {
            ids.remove(&slice.id);
            if ids.is_empty() {
                self.slices_by_service.remove(&key);
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
        desired::builders::*,
        types::Protocol::{Tcp, Udp},
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
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_slice(web_slice("web-1", "10.1.0.5").ready());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn slice_before_service() {
        let mut idx = Index::new();
        idx.apply_slice(web_slice("web-1", "10.1.0.5"));
        assert!(idx.desired().frontends.is_empty());
        idx.apply_service(web());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn apply_reports_change() {
        let mut idx = Index::new();
        assert!(idx.apply_service(web()));
        assert!(!idx.apply_service(web()));
        assert!(idx.apply_slice(web_slice("web-1", "10.1.0.5")));
        assert!(!idx.apply_slice(web_slice("web-1", "10.1.0.5")));
        assert!(idx.apply_slice(web_slice("web-1", "10.1.0.6")));
    }

    #[test]
    fn slice_update_replaces_endpoints() {
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_slice(web_slice("web-1", "10.1.0.5").endpoint("10.1.0.6"));
        idx.apply_slice(web_slice("web-1", "10.1.0.7"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.7:8080"]);
    }

    #[test]
    fn slice_relabelled_to_another_service_moves() {
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_service(
            svc("default", "api")
                .cluster_ip("10.96.0.11")
                .port("http", 80, Tcp),
        );
        idx.apply_slice(web_slice("shared", "10.1.0.5"));
        idx.apply_slice(
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
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_slice(web_slice("web-1", "10.1.0.5"));
        idx.apply_slice(web_slice("web-2", "10.1.0.6"));
        assert!(idx.delete_slice(&ObjectRef::new("default", "web-1")));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
        assert!(idx.delete_slice(&ObjectRef::new("default", "web-2")));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), Vec::<String>::new());
        assert!(!idx.delete_slice(&ObjectRef::new("default", "web-2")));
        assert!(idx.slices_by_service.is_empty(), "no stale join entries");
    }

    #[test]
    fn delete_service_removes_its_frontends() {
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_service(
            svc("default", "dns")
                .cluster_ip("10.96.0.53")
                .port("", 53, Udp),
        );
        idx.apply_slice(web_slice("web-1", "10.1.0.5"));
        assert!(idx.delete_service(&ObjectRef::new("default", "web")));
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.53:53/UDP"]);
        assert!(!idx.delete_service(&ObjectRef::new("default", "web")));
        // The slice stays, and serves the Service again when it comes back.
        idx.apply_service(web());
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn reset_forgets_what_is_not_relisted() {
        let mut idx = Index::new();
        idx.apply_service(web());
        idx.apply_service(
            svc("default", "gone")
                .cluster_ip("10.96.0.99")
                .port("", 80, Tcp),
        );
        idx.apply_slice(web_slice("web-1", "10.1.0.5"));
        idx.apply_slice(web_slice("web-old", "10.1.0.4"));
        idx.reset([web().into()], [web_slice("web-1", "10.1.0.6").into()]);
        assert_eq!(frontends_of(&idx.desired()), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
        assert!(idx.slice(&ObjectRef::new("default", "web-old")).is_none());
    }

    #[test]
    fn conflict_reported_through_desired_outcome() {
        let mut idx = Index::new();
        idx.apply_service(
            svc("default", "b")
                .cluster_ip("10.96.0.10")
                .port("", 80, Tcp),
        );
        idx.apply_service(
            svc("default", "a")
                .cluster_ip("10.96.0.10")
                .port("", 80, Tcp),
        );
        idx.apply_slice(
            slice("default", "b-1")
                .for_service("b")
                .port("", 8080, Tcp)
                .endpoint("10.1.0.2"),
        );
        idx.apply_slice(
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
        idx.delete_service(&ObjectRef::new("default", "a"));
        assert_eq!(backends(&idx, "10.96.0.10:80/TCP"), ["10.1.0.2:8080"]);
        assert!(idx.desired_outcome().conflicts.is_empty());
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
        let mut idx = Index::new();
        let start = Instant::now();
        idx.reset(services, slices);
        let state = idx.desired();
        let elapsed = start.elapsed();
        assert_eq!(state.frontends.len(), 10_000);
        assert!(state.frontends.values().all(|s| s.backends.len() == 10));
        assert!(elapsed.as_secs() < 5, "reset + desired took {elapsed:?}");
    }
}
