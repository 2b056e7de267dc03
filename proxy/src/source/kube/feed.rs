//! The Kubernetes source's state machine: watcher events in, Index calls and
//! `changes` bumps out. It owns the rules for the initial lists, relists and
//! conversion problems; it does no I/O besides the Index, the `changes` watch and
//! logs, so it is tested with synthetic events (see `tests` below) as well as
//! over HTTP (`tests/tests/kube_source.rs`).
//!
//! - **Before ready** (until the first complete list of both Services and
//!   EndpointSlices) nothing reaches the Index: objects go, as they arrive
//!   (one by one, whether the list streams or comes in pages), into a
//!   *staging* Index ([`Index::staging`]), kept current by watch events; a list
//!   started again (a 410 during it) prunes there what it no longer has. Once
//!   both are complete, one `Index::absorb` hands the staged maps over whole
//!   (no copy of the initial state is ever held besides them) and `changes`
//!   gets the source's first bump.
//! - **After ready**, `Apply` and `Delete` go straight to the Index, and a relist
//!   (`Init`, `InitApply`…, `InitDone`, after a 410 Gone or a restart of the
//!   watch) replaces that kind's objects: the ones not relisted, deleted while
//!   the watch was down, are deleted from the Index. The two kinds relist
//!   independently, so a relist diffs against the ids this feed put in the
//!   Index rather than resetting both kinds.
//! - An object that does not convert (invalid, or skipped on purpose) is left out,
//!   and removed from the Index if an earlier version was in it; its problems are
//!   logged once per `resourceVersion`.
//! - **This node's Node** gives the Index its zone and addresses, and
//!   `/healthz` its eligibility ([`node_eligible`]): as kube-proxy's
//!   `NodeEligibleHandler`, every Node object seen (listed, updated, or in its
//!   deletion event) decides it; a list that no longer has the Node keeps the
//!   last answer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    marker::PhantomData,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{Resource as _, ResourceExt as _, runtime::watcher::Event};
use tokio::sync::watch;

use crate::model::{
    EndpointSlice, Index, NodeInfo, ObjectRef, Service, SourceId,
    convert::{self, ConvertError, Converted},
};
use crate::telemetry::{ConfigRejects, ConfigSource, Telemetry};

/// The taint the Cluster Autoscaler puts on a node it is about to delete
/// (kube-proxy's `ToBeDeletedTaint`).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

const SOURCE: SourceId = SourceId::Kubernetes;

/// A kind of object the feed keeps in the Index.
pub(super) trait Kind {
    type Object: kube::Resource + Send;
    type Domain: Clone;
    const KIND: convert::Kind;
    fn convert(object: &Self::Object) -> Result<Converted<Self::Domain>, ConvertError>;
    fn apply(index: &mut Index, object: Self::Domain) -> bool;
    fn delete(index: &mut Index, id: &ObjectRef) -> bool;
}

pub(super) struct Services;
pub(super) struct Slices;

impl Kind for Services {
    type Object = core::Service;
    type Domain = Service;
    const KIND: convert::Kind = convert::Kind::Service;
    fn convert(object: &core::Service) -> Result<Converted<Service>, ConvertError> {
        convert::service(object)
    }
    fn apply(index: &mut Index, object: Service) -> bool {
        index.apply_service(SOURCE, object)
    }
    fn delete(index: &mut Index, id: &ObjectRef) -> bool {
        index.delete_service(SOURCE, id)
    }
}

impl Kind for Slices {
    type Object = discovery::EndpointSlice;
    type Domain = EndpointSlice;
    const KIND: convert::Kind = convert::Kind::EndpointSlice;
    fn convert(
        object: &discovery::EndpointSlice,
    ) -> Result<Converted<EndpointSlice>, ConvertError> {
        convert::endpoint_slice(object)
    }
    fn apply(index: &mut Index, object: EndpointSlice) -> bool {
        index.apply_slice(SOURCE, object)
    }
    fn delete(index: &mut Index, id: &ObjectRef) -> bool {
        index.delete_slice(SOURCE, id)
    }
}

/// The feed of one Kubernetes source.
pub(super) struct Feed {
    index: Arc<Mutex<Index>>,
    changes: watch::Sender<u64>,
    node_name: String,
    services: KindFeed<Services>,
    slices: KindFeed<Slices>,
    /// Where the initial lists gather until both are complete (`None` after).
    staging: Option<Index>,
    /// `Some` between the Node watch's `Init` and `InitDone`: what was listed
    /// (with its eligibility).
    node_listing: Option<Option<(NodeInfo, bool)>>,
    node: NodeInfo,
    /// Whether this node may receive traffic ([`node_eligible`]); `true`
    /// until a Node object says otherwise, as in kube-proxy.
    eligible: bool,
    /// Where the eligibility goes (`/healthz`).
    telemetry: Option<Telemetry>,
    ready: bool,
    reports: Reports,
}

impl Feed {
    /// Tells the Index this node's name at once (so locality works from the
    /// first sync, whether or not the Node object can be read).
    pub(super) fn new(
        index: Arc<Mutex<Index>>,
        changes: watch::Sender<u64>,
        node_name: String,
    ) -> Self {
        let node = NodeInfo::named(node_name.clone());
        let staging = {
            let mut index = lock(&index);
            index.set_node(node.clone());
            index.staging()
        };
        Self {
            index,
            changes,
            node_name,
            services: KindFeed::default(),
            slices: KindFeed::default(),
            staging: Some(staging),
            node_listing: None,
            node,
            eligible: true,
            telemetry: None,
            ready: false,
            reports: Reports::default(),
        }
    }

    /// Counts rejected objects into `telemetry`'s rejects, and reports this
    /// node's eligibility to its health.
    /// Reports problems on Services (and their UIDs) to `events`.
    pub(super) fn with_events(mut self, events: crate::events::EventSink) -> Self {
        self.reports.events = events;
        self
    }

    pub(super) fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.reports.rejects = telemetry.rejects();
        self.telemetry = Some(telemetry);
        self
    }

    /// Whether this node is eligible to receive traffic, as last seen.
    #[cfg(test)]
    pub(super) fn is_eligible(&self) -> bool {
        self.eligible
    }

    /// Whether both initial lists are complete (and the first bump was sent).
    #[cfg(test)]
    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    pub(super) fn on_service(&mut self, event: Event<core::Service>) {
        let target = Target::new(&self.index, &mut self.staging);
        let changed = self.services.on_event(event, target, &mut self.reports);
        self.settle(changed);
    }

    pub(super) fn on_slice(&mut self, event: Event<discovery::EndpointSlice>) {
        let target = Target::new(&self.index, &mut self.staging);
        let changed = self.slices.on_event(event, target, &mut self.reports);
        self.settle(changed);
    }

    pub(super) fn on_node(&mut self, event: Event<core::Node>) {
        let changed = match event {
            Event::Init => {
                self.node_listing = Some(None);
                false
            }
            Event::InitApply(node) => {
                if node.name_any() == self.node_name {
                    self.node_listing = Some(Some((convert::node(&node), node_eligible(&node))));
                }
                false
            }
            Event::InitDone => match self.node_listing.take().flatten() {
                Some((info, eligible)) => {
                    self.set_eligible(eligible);
                    self.set_node(info)
                }
                None => {
                    tracing::warn!(
                        node = %self.node_name,
                        "Node not found: no zone known, topology hints are ignored"
                    );
                    self.set_node(NodeInfo::named(self.node_name.clone()))
                }
            },
            Event::Apply(node) if node.name_any() == self.node_name => {
                self.set_eligible(node_eligible(&node));
                self.set_node(convert::node(&node))
            }
            Event::Delete(node) if node.name_any() == self.node_name => {
                // kube-proxy judges the deleted object too (it normally
                // carries a deletionTimestamp).
                self.set_eligible(node_eligible(&node));
                tracing::warn!(node = %self.node_name, "Node deleted: no zone known, topology hints are ignored");
                self.set_node(NodeInfo::named(self.node_name.clone()))
            }
            Event::Apply(_) | Event::Delete(_) => false,
        };
        if changed && self.ready {
            self.bump();
        }
    }

    /// Records the eligibility and hands it to `/healthz`; logs a change.
    fn set_eligible(&mut self, eligible: bool) {
        if eligible != self.eligible {
            if eligible {
                tracing::info!(node = %self.node_name, "node eligible again: /healthz follows the proxy's health");
            } else {
                tracing::warn!(
                    node = %self.node_name,
                    "node is being deleted (deletionTimestamp or the {TO_BE_DELETED_TAINT} taint): /healthz answers 503"
                );
            }
        }
        self.eligible = eligible;
        if let Some(telemetry) = &self.telemetry {
            telemetry.set_node_eligible(eligible);
        }
    }

    fn set_node(&mut self, mut info: NodeInfo) -> bool {
        // The flag (or hostname) names this node; a Node object can only say
        // the same, since it was selected by name.
        info.name = self.node_name.clone();
        if info == self.node {
            return false;
        }
        tracing::info!(
            node = %info.name,
            zone = info.zone.as_deref().unwrap_or(""),
            addresses = ?info.addresses,
            "node topology"
        );
        self.node = info.clone();
        lock(&self.index).set_node(info);
        true
    }

    /// Installs the initial lists once both are complete; bumps after changes.
    fn settle(&mut self, changed: bool) {
        if self.ready {
            if changed {
                self.bump();
            }
            return;
        }
        if !(self.services.listed() && self.slices.listed()) {
            return;
        }
        let staged = self.staging.take().unwrap_or_default();
        tracing::info!(
            services = self.services.known.len(),
            endpoint_slices = self.slices.known.len(),
            "Kubernetes initial lists complete"
        );
        lock(&self.index).absorb(SOURCE, staged);
        self.ready = true;
        self.bump();
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

/// Where a kind's events go: the staging Index before the source is ready,
/// the Index after.
enum Target<'a> {
    Staging(&'a mut Index),
    Live(&'a Mutex<Index>),
}

impl<'a> Target<'a> {
    fn new(index: &'a Mutex<Index>, staging: &'a mut Option<Index>) -> Self {
        match staging {
            Some(staging) => Target::Staging(staging),
            None => Target::Live(index),
        }
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Index) -> R) -> R {
        match self {
            Target::Staging(staging) => f(staging),
            Target::Live(index) => f(&mut lock(index)),
        }
    }
}

/// One kind's state: `known` holds the ids this feed put in the Index (or,
/// before the source is ready, in the staging Index).
struct KindFeed<K: Kind> {
    listing: Option<Listing<K::Domain>>,
    /// Whether a list of this kind has completed.
    listed: bool,
    known: BTreeSet<ObjectRef>,
    _kind: PhantomData<K>,
}

impl<K: Kind> Default for KindFeed<K> {
    fn default() -> Self {
        Self {
            listing: None,
            listed: false,
            known: BTreeSet::new(),
            _kind: PhantomData,
        }
    }
}

/// A list in progress: every id seen (kept or not), and, for a relist once
/// the source is ready, the objects kept (applied together at its end).
struct Listing<T> {
    objects: BTreeMap<ObjectRef, T>,
    seen: BTreeSet<ObjectRef>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }
}

impl<K: Kind> KindFeed<K> {
    fn listed(&self) -> bool {
        self.listed
    }

    /// Puts `id`'s converted object in `target` (or takes it out when it
    /// does not convert). Returns whether `target` changed.
    fn put(
        &mut self,
        target: &mut Target<'_>,
        id: ObjectRef,
        converted: Option<K::Domain>,
    ) -> bool {
        match converted {
            Some(domain) => {
                self.known.insert(id);
                target.with(|index| K::apply(index, domain))
            }
            None => self.known.remove(&id) && target.with(|index| K::delete(index, &id)),
        }
    }

    /// Returns whether the Index changed (never before the source is ready:
    /// the staging Index is not the Index).
    fn on_event(
        &mut self,
        event: Event<K::Object>,
        mut target: Target<'_>,
        reports: &mut Reports,
    ) -> bool {
        let ready = matches!(target, Target::Live(_));
        match event {
            Event::Init => {
                self.listing = Some(Listing::default());
                false
            }
            Event::InitApply(object) => {
                let listing = self.listing.get_or_insert_with(Listing::default);
                let Some((id, converted)) = convert_and_report::<K>(&object, reports) else {
                    return false;
                };
                listing.seen.insert(id.clone());
                if ready {
                    // A relist: applied in one step at its end.
                    if let Some(domain) = converted {
                        listing.objects.insert(id, domain);
                    }
                    return false;
                }
                self.put(&mut target, id, converted);
                false
            }
            Event::InitDone => {
                let listing = self.listing.take().unwrap_or_default();
                reports.retain(K::KIND, &listing.seen);
                self.listed = true;
                match target {
                    Target::Live(index) => self.relist(listing.objects, index),
                    Target::Staging(staging) => {
                        // A list started again drops what the last one had
                        // and this one has not.
                        self.known.retain(|id| {
                            listing.seen.contains(id) || {
                                K::delete(staging, id);
                                false
                            }
                        });
                        false
                    }
                }
            }
            Event::Apply(object) => {
                let Some((id, converted)) = convert_and_report::<K>(&object, reports) else {
                    return false;
                };
                self.put(&mut target, id, converted) && ready
            }
            Event::Delete(object) => {
                let Some(id) = object_ref(&object) else {
                    return false;
                };
                reports.forget(K::KIND, &id);
                self.put(&mut target, id, None) && ready
            }
        }
    }

    /// Replaces this kind's objects with a fresh list, under one lock so the
    /// sync loop never sees half of it.
    fn relist(&mut self, listed: BTreeMap<ObjectRef, K::Domain>, index: &Mutex<Index>) -> bool {
        let mut index = lock(index);
        let mut changed = false;
        let mut pruned = 0usize;
        for stale in self.known.iter().filter(|id| !listed.contains_key(*id)) {
            if K::delete(&mut index, stale) {
                changed = true;
                pruned += 1;
            }
        }
        self.known = listed.keys().cloned().collect();
        let count = listed.len();
        for object in listed.into_values() {
            changed |= K::apply(&mut index, object);
        }
        tracing::info!(
            kind = %K::KIND,
            objects = count,
            pruned,
            changed,
            "relisted"
        );
        changed
    }
}

/// Whether a node may receive traffic from load balancers (kube-proxy's
/// `SyncNode`): not while it is being deleted (a `deletionTimestamp`) or is
/// tainted for deletion by the Cluster Autoscaler (whatever the effect).
pub fn node_eligible(node: &core::Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let taints = node.spec.as_ref().and_then(|spec| spec.taints.as_ref());
    !taints
        .into_iter()
        .flatten()
        .any(|taint| taint.key == TO_BE_DELETED_TAINT)
}

/// `namespace/name` of an object (namespace defaulted as the converters do).
fn object_ref<T: kube::Resource>(object: &T) -> Option<ObjectRef> {
    let meta = object.meta();
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    Some(ObjectRef::new(namespace, name))
}

/// Converts an object and logs its problems (once per version). `None` when
/// it cannot even be named; `Some((id, None))` when it is left out.
fn convert_and_report<K: Kind>(
    object: &K::Object,
    reports: &mut Reports,
) -> Option<(ObjectRef, Option<K::Domain>)> {
    let id = object_ref(object);
    let version = object.meta().resource_version.clone().unwrap_or_default();
    let first_time = match &id {
        Some(id) => reports.first_time(K::KIND, id, &version),
        None => true,
    };
    let result = K::convert(object);
    if K::KIND == convert::Kind::Service
        && reports.events.is_on()
        && let Some(id) = &id
    {
        if let Some(uid) = &object.meta().uid {
            reports.events.seen(id, uid);
        }
        if first_time && let Ok(Converted::Kept { warnings, .. }) = &result {
            for warning in warnings {
                if let Some(problem) = crate::events::ServiceProblem::from_warning(id, warning) {
                    reports.events.problem(problem);
                }
            }
        }
    }
    if first_time {
        report(K::KIND, id.as_ref(), &version, &result);
        count_rejects(&reports.rejects, &result);
    }
    let id = id?;
    let kept = match result {
        Ok(Converted::Kept { object, .. }) => Some(object),
        Ok(Converted::Skipped(_)) | Err(_) => None,
    };
    Some((id, kept))
}

fn report<T>(
    kind: convert::Kind,
    id: Option<&ObjectRef>,
    version: &str,
    result: &Result<Converted<T>, ConvertError>,
) {
    let object = id.map(ToString::to_string).unwrap_or_default();
    match result {
        Err(error) => tracing::warn!(
            %kind, object, resource_version = version, error = %error,
            "ignoring an invalid object"
        ),
        Ok(Converted::Skipped(skip)) if skip.is_warning() => tracing::warn!(
            %kind, object, resource_version = version, reason = %skip.reason,
            "object skipped"
        ),
        Ok(Converted::Skipped(skip)) => tracing::debug!(
            %kind, object, resource_version = version, reason = %skip.reason,
            "object not proxied"
        ),
        Ok(Converted::Kept { warnings, .. }) => {
            for warning in warnings {
                tracing::warn!(
                    %kind, object, resource_version = version, problem = %warning,
                    "part of an object ignored"
                );
            }
        }
    }
}

/// Counts what conversion rejected or dropped, once per object version.
fn count_rejects<T>(rejects: &ConfigRejects, result: &Result<Converted<T>, ConvertError>) {
    match result {
        Err(error) => rejects.record(ConfigSource::Kubernetes, error.label()),
        Ok(Converted::Skipped(skip)) if skip.is_warning() => {
            rejects.record(ConfigSource::Kubernetes, skip.reason.label());
        }
        Ok(Converted::Skipped(_)) => {}
        Ok(Converted::Kept { warnings, .. }) => {
            for warning in warnings {
                rejects.record(ConfigSource::Kubernetes, warning.label());
            }
        }
    }
}

/// The `resourceVersion` whose problems were last logged, per object, so a
/// relist (or an unchanged re-delivery) does not repeat them.
#[derive(Default)]
struct Reports {
    logged: HashMap<(convert::Kind, ObjectRef), String>,
    rejects: ConfigRejects,
    events: crate::events::EventSink,
}

impl Reports {
    fn first_time(&mut self, kind: convert::Kind, id: &ObjectRef, version: &str) -> bool {
        let key = (kind, id.clone());
        if self.logged.get(&key).is_some_and(|v| v == version) {
            return false;
        }
        self.logged.insert(key, version.to_owned());
        true
    }

    fn forget(&mut self, kind: convert::Kind, id: &ObjectRef) {
        self.logged.remove(&(kind, id.clone()));
    }

    /// Forgets objects of `kind` that a complete list no longer has.
    fn retain(&mut self, kind: convert::Kind, seen: &BTreeSet<ObjectRef>) {
        self.logged
            .retain(|(k, id), _| *k != kind || seen.contains(id));
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests;
