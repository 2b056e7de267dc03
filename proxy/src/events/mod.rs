//! Problems worth a Kubernetes Event on a Service: a frontend refused
//! (CVE-2020-8554 guard), an invalid `loadBalancerSourceRanges` entry, an
//! unsupported protocol, no room in the eBPF maps. Whoever finds one (the sync loop, the Kubernetes
//! feed) hands it to an [`EventSink`]; the Kubernetes source publishes them
//! (`source::kube::service_events`), through a [`Gate`] that lets one Event
//! per (Service, reason) through per [`REPEAT_AFTER`].
//!
//! A leaf: imports only model types; no I/O here. Without the Kubernetes
//! source the sink is off and reporting costs nothing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::model::{
    Frontend, FrontendKind, ObjectRef,
    convert::ConvertWarning,
    desired::{Refusal, RefusalReason},
};

/// How long one (Service, reason) stays quiet after its Event. Longer than
/// kube-rs' Recorder's 6-minute series cache, so each Event is a new object
/// (the API server keeps Events an hour).
pub const REPEAT_AFTER: Duration = Duration::from_secs(10 * 60);

/// Messages the sink's channel holds before new ones are dropped.
const CAPACITY: usize = 1024;

/// The Event's `reason`: stable names (alerts and scripts match them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventReason {
    /// A ClusterIP frontend refused.
    ClusterIPRefused,
    /// An ExternalIP frontend refused.
    ExternalIPRefused,
    /// A LoadBalancer IP frontend refused.
    LoadBalancerIPRefused,
    /// A NodePort frontend refused (the kubelet's port).
    NodePortRefused,
    /// A `loadBalancerSourceRanges` entry is not a CIDR: the LoadBalancer IPs
    /// are not served.
    InvalidLoadBalancerSourceRange,
    /// A port with a protocol other than TCP and UDP is not served.
    UnsupportedProtocol,
    /// A frontend does not fit the eBPF maps: served from userspace, or not
    /// at all without the userspace path.
    NoRoomInMaps,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ClusterIPRefused => "ClusterIPRefused",
            EventReason::ExternalIPRefused => "ExternalIPRefused",
            EventReason::LoadBalancerIPRefused => "LoadBalancerIPRefused",
            EventReason::NodePortRefused => "NodePortRefused",
            EventReason::InvalidLoadBalancerSourceRange => "InvalidLoadBalancerSourceRange",
            EventReason::UnsupportedProtocol => "UnsupportedProtocol",
            EventReason::NoRoomInMaps => "NoRoomInMaps",
        }
    }
}

/// One problem on one Service, with the Event's note (what happened and
/// what to do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProblem {
    pub service: ObjectRef,
    pub reason: EventReason,
    pub note: String,
}

impl ServiceProblem {
    /// A refused frontend.
    pub fn from_refusal(r: &Refusal) -> Self {
        let reason = match r.kind {
            FrontendKind::ClusterIp => EventReason::ClusterIPRefused,
            FrontendKind::ExternalIp => EventReason::ExternalIPRefused,
            FrontendKind::LoadBalancer => EventReason::LoadBalancerIPRefused,
            FrontendKind::NodePort => EventReason::NodePortRefused,
        };
        let todo = match r.reason {
            RefusalReason::NodeAddress if r.kind == FrontendKind::ClusterIp => {
                "Give the Service a cluster IP from the Service CIDR that no node uses."
            }
            RefusalReason::NodeAddress => {
                "Use an address that is not one of the node's, or run the proxy with \
                 --external-ip-guard=default."
            }
            RefusalReason::Loopback
            | RefusalReason::LinkLocal
            | RefusalReason::Multicast
            | RefusalReason::ApiServer => "Remove this address from the Service.",
            RefusalReason::KubeletPort => "Use a port other than 10250 (the kubelet's).",
            RefusalReason::OutsideServiceCidr => {
                "Check the proxy's --service-cluster-ip-range: it must hold every Service CIDR \
                 of the cluster."
            }
        };
        Self {
            service: r.service.clone(),
            reason,
            note: format!("{r}. {todo}"),
        }
    }

    /// A frontend that found no room in the eBPF maps; `overflow`: the
    /// userspace path serves it instead.
    pub fn no_room(
        service: &ObjectRef,
        frontend: Frontend,
        kind: FrontendKind,
        overflow: bool,
    ) -> Self {
        let served = if overflow {
            "it is served from the userspace path instead (slower)"
        } else {
            "it is not served"
        };
        Self {
            service: service.clone(),
            reason: EventReason::NoRoomInMaps,
            note: format!(
                "{kind} frontend {frontend} does not fit the eBPF maps: {served}. Raise the \
                 proxy's --service-map-entries or --backend-map-entries (serviceMapEntries, \
                 backendMapEntries), or remove unused Services."
            ),
        }
    }

    /// A part of a Service dropped at conversion that deserves an Event.
    pub fn from_warning(service: &ObjectRef, warning: &ConvertWarning) -> Option<Self> {
        let (reason, todo) = match warning {
            ConvertWarning::InvalidSourceRange { .. } => (
                EventReason::InvalidLoadBalancerSourceRange,
                "Write each entry as a CIDR, such as 203.0.113.0/24.",
            ),
            ConvertWarning::UnsupportedProtocol { .. } => (
                EventReason::UnsupportedProtocol,
                "This proxy serves TCP and UDP ports only: use one of them, or a proxy that \
                 serves this protocol.",
            ),
            _ => return None,
        };
        Some(Self {
            service: service.clone(),
            reason,
            note: format!("{warning}. {todo}"),
        })
    }
}

/// What the sink carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A Service and its UID (an Event names its object by UID too, which
    /// `kubectl describe` selects on).
    Seen {
        service: ObjectRef,
        uid: String,
    },
    Problem(ServiceProblem),
}

/// Where problems go; off by default (no Kubernetes source).
#[derive(Clone, Debug, Default)]
pub struct EventSink(Option<mpsc::Sender<Message>>);

impl EventSink {
    /// A sink and the receiver its publisher reads.
    pub fn channel() -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Self(Some(tx)), rx)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn seen(&self, service: &ObjectRef, uid: &str) {
        self.send(Message::Seen {
            service: service.clone(),
            uid: uid.to_owned(),
        });
    }

    pub fn problem(&self, problem: ServiceProblem) {
        self.send(Message::Problem(problem));
    }

    /// Never blocks: a full channel drops the message (Events are best effort).
    fn send(&self, message: Message) {
        if let Some(tx) = &self.0
            && tx.try_send(message).is_err()
        {
            tracing::debug!("Event channel full or closed; a Service Event is dropped");
        }
    }
}

/// Lets one Event per (Service, reason) through per `repeat_after`
/// (client-go's recorder rate-limits and deduplicates the same way in
/// spirit: a problem that persists is not an Event per sync).
#[derive(Debug)]
pub struct Gate {
    repeat_after: Duration,
    last: HashMap<(ObjectRef, EventReason), Instant>,
}

impl Gate {
    pub fn new(repeat_after: Duration) -> Self {
        Self {
            repeat_after,
            last: HashMap::new(),
        }
    }

    /// Whether an Event for `problem` goes out at `now` (and, if so, notes it).
    pub fn admit(&mut self, problem: &ServiceProblem, now: Instant) -> bool {
        let repeat_after = self.repeat_after;
        // Forget what is quiet anyway, so the map does not grow without end.
        if self.last.len() > CAPACITY {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < repeat_after);
        }
        let key = (problem.service.clone(), problem.reason);
        match self.last.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < repeat_after => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn refusal(kind: FrontendKind, reason: RefusalReason) -> Refusal {
        Refusal {
            service: ObjectRef::new("default", "web"),
            frontend: Frontend {
                addr: "127.0.0.1".parse().expect("an IP"),
                port: 80,
                protocol: Protocol::Tcp,
            },
            kind,
            reason,
        }
    }

    #[test]
    fn a_refused_external_ip_says_what_to_do() {
        let p = ServiceProblem::from_refusal(&refusal(
            FrontendKind::ExternalIp,
            RefusalReason::Loopback,
        ));
        assert_eq!(p.reason.as_str(), "ExternalIPRefused");
        assert_eq!(
            p.note,
            "Service default/web: ExternalIP frontend 127.0.0.1:80/TCP refused: the address is a \
             loopback or unspecified address (CVE-2020-8554). Remove this address from the Service."
        );
        let p = ServiceProblem::from_refusal(&refusal(
            FrontendKind::ClusterIp,
            RefusalReason::OutsideServiceCidr,
        ));
        assert_eq!(p.reason, EventReason::ClusterIPRefused);
    }

    #[test]
    fn no_room_says_how_it_is_served_and_what_to_do() {
        let frontend = refusal(FrontendKind::ClusterIp, RefusalReason::Loopback).frontend;
        let service = ObjectRef::new("default", "web");
        let p = ServiceProblem::no_room(&service, frontend, FrontendKind::ClusterIp, true);
        assert_eq!(p.reason.as_str(), "NoRoomInMaps");
        assert_eq!(
            p.note,
            "ClusterIP frontend 127.0.0.1:80/TCP does not fit the eBPF maps: it is served from \
             the userspace path instead (slower). Raise the proxy's --service-map-entries \
             or --backend-map-entries (serviceMapEntries, backendMapEntries), or remove unused \
             Services."
        );
        let p = ServiceProblem::no_room(&service, frontend, FrontendKind::ClusterIp, false);
        assert!(p.note.contains("it is not served."), "{}", p.note);
    }

    #[test]
    fn the_gate_lets_one_event_per_service_and_reason_through_per_period() {
        let mut gate = Gate::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let p = ServiceProblem::from_refusal(&refusal(
            FrontendKind::ExternalIp,
            RefusalReason::Loopback,
        ));
        let other = ServiceProblem {
            reason: EventReason::UnsupportedProtocol,
            ..p.clone()
        };
        assert!(gate.admit(&p, t0));
        assert!(!gate.admit(&p, t0 + Duration::from_secs(1)));
        assert!(!gate.admit(&p, t0 + Duration::from_secs(599)));
        assert!(
            gate.admit(&other, t0 + Duration::from_secs(1)),
            "another reason is its own"
        );
        assert!(
            gate.admit(&p, t0 + Duration::from_secs(600)),
            "again after the period"
        );
    }

    #[test]
    fn an_off_sink_costs_nothing_and_a_full_one_drops() {
        let off = EventSink::default();
        assert!(!off.is_on());
        off.seen(&ObjectRef::new("a", "b"), "uid");
        let (sink, mut rx) = EventSink::channel();
        for _ in 0..CAPACITY + 5 {
            sink.seen(&ObjectRef::new("a", "b"), "uid");
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, CAPACITY);
    }
}
