//! The desired-state function: from Services and their EndpointSlices to the
//! frontends the dataplane should serve and the backends behind each.
//!
//! Pure and synchronous: no I/O, no logging, no clock. [`crate::model::Index`]
//! calls it; tests can call it directly.
//!
//! Rules (ClusterIP only, no topology yet; see `docs/semantics.md`):
//! - one frontend per cluster IP × TCP/UDP Service port;
//! - endpoints come from the Service's slices whose address type matches the
//!   frontend IP's family, and whose port has the Service port's name and protocol;
//! - an endpoint seen in several slices counts once per (address, target port):
//!   the first slice in name order wins, as in kube-proxy's slice cache;
//! - Ready endpoints are used; when none is Ready, those that are Serving and
//!   Terminating. `publishNotReadyAddresses` makes every endpoint Ready;
//! - a frontend with no usable endpoint is still emitted, with empty backends;
//! - two Services claiming one frontend: the lowest [`ObjectRef`] wins and the
//!   clash is reported as a [`Conflict`] in [`DesiredOutcome::conflicts`]
//!   ([`DesiredState`] itself carries no problems).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet, btree_map::Entry},
    fmt,
    net::IpAddr,
};

use super::types::{
    AddressType, Backend, DesiredState, EndpointSlice, Frontend, FrontendSpec, ObjectRef, Service,
    ServicePort,
};

/// Desired state plus what went wrong while computing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredOutcome {
    pub state: DesiredState,
    /// Frontends claimed by more than one Service, sorted by frontend.
    pub conflicts: Vec<Conflict>,
}

/// A frontend claimed by more than one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub frontend: Frontend,
    /// The Service that got the frontend: the lowest [`ObjectRef`].
    pub winner: ObjectRef,
    /// The others, sorted.
    pub losers: Vec<ObjectRef>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frontend {} is claimed by several Services: using Service {}, ignoring",
            self.frontend, self.winner
        )?;
        for (i, loser) in self.losers.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}Service {loser}")?;
        }
        Ok(())
    }
}

/// Computes the whole desired state. Each item is a Service with the slices that
/// name it (same namespace, `service_name` equal to its name), in slice-name
/// order. The order of Services does not matter.
pub fn desired<'a, S>(services: impl IntoIterator<Item = (&'a Service, S)>) -> DesiredOutcome
where
    S: AsRef<[&'a EndpointSlice]>,
{
    let mut frontends: BTreeMap<Frontend, FrontendSpec> = BTreeMap::new();
    let mut losers: BTreeMap<Frontend, BTreeSet<ObjectRef>> = BTreeMap::new();
    for (service, slices) in services {
        for (frontend, spec) in service_frontends(service, slices.as_ref()) {
            match frontends.entry(frontend) {
                Entry::Vacant(v) => {
                    v.insert(spec);
                }
                Entry::Occupied(mut o) => {
                    if o.get().service == spec.service {
                        continue;
                    }
                    let loser = if spec.service < o.get().service {
                        std::mem::replace(o.get_mut(), spec).service
                    } else {
                        spec.service
                    };
                    losers.entry(frontend).or_default().insert(loser);
                }
            }
        }
    }
    let conflicts = losers
        .into_iter()
        .filter_map(|(frontend, losers)| {
            let winner = frontends.get(&frontend)?.service.clone();
            Some(Conflict {
                frontend,
                winner,
                losers: losers.into_iter().collect(),
            })
        })
        .collect();
    DesiredOutcome {
        state: DesiredState { frontends },
        conflicts,
    }
}

/// The frontends of one Service, given its slices in slice-name order.
pub fn service_frontends(
    service: &Service,
    slices: &[&EndpointSlice],
) -> Vec<(Frontend, FrontendSpec)> {
    let mut out = Vec::with_capacity(service.cluster_ips.len() * service.ports.len());
    for &addr in &service.cluster_ips {
        for port in &service.ports {
            let frontend = Frontend {
                addr,
                port: port.port,
                protocol: port.protocol,
            };
            let spec = FrontendSpec {
                service: service.id.clone(),
                port_name: port.name.clone(),
                backends: backends(service, port, AddressType::of(addr), slices),
                affinity_timeout: None,
            };
            out.push((frontend, spec));
        }
    }
    out
}

/// The backends of one Service port in one IP family: sorted, de-duplicated.
fn backends(
    service: &Service,
    port: &ServicePort,
    family: AddressType,
    slices: &[&EndpointSlice],
) -> Vec<Backend> {
    let mut seen: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut ready = Vec::new();
    let mut serving_terminating = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if !seen.insert((ep.address, target.port)) {
                continue;
            }
            let backend = Backend {
                addr: ep.address,
                port: target.port,
                protocol: port.protocol,
            };
            if ep.ready || service.publish_not_ready_addresses {
                ready.push(backend);
            } else if ep.serving && ep.terminating {
                serving_terminating.push(backend);
            }
        }
    }
    let mut chosen = if ready.is_empty() {
        serving_terminating
    } else {
        ready
    };
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// Builders for model tests, shared by `desired` and `index` tests:
/// `svc("default", "web").cluster_ip("10.96.0.10").port("http", 80, Tcp)`,
/// `slice("default", "web-1").for_service("web").port("http", 8080, Tcp)
///     .endpoint("10.1.0.5").ready()`.
#[cfg(test)]
pub(crate) mod builders {
    use std::net::IpAddr;

    use crate::model::types::{
        AddressType, DesiredState, Endpoint, EndpointPort, EndpointSlice, ObjectRef, Protocol,
        Service, ServicePort,
    };

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("test IP {s:?}: {e}"))
    }

    pub(crate) fn svc(namespace: &str, name: &str) -> SvcBuilder {
        SvcBuilder(Service {
            id: ObjectRef::new(namespace, name),
            cluster_ips: Vec::new(),
            ports: Vec::new(),
            publish_not_ready_addresses: false,
        })
    }

    pub(crate) struct SvcBuilder(Service);

    impl SvcBuilder {
        pub(crate) fn cluster_ip(mut self, addr: &str) -> Self {
            self.0.cluster_ips.push(ip(addr));
            self
        }
        pub(crate) fn port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
            self.0.ports.push(ServicePort {
                name: name.to_owned(),
                port,
                protocol,
            });
            self
        }
        pub(crate) fn publish_not_ready(mut self) -> Self {
            self.0.publish_not_ready_addresses = true;
            self
        }
    }

    impl From<SvcBuilder> for Service {
        fn from(b: SvcBuilder) -> Self {
            b.0
        }
    }

    pub(crate) fn slice(namespace: &str, name: &str) -> SliceBuilder {
        SliceBuilder {
            slice: EndpointSlice {
                id: ObjectRef::new(namespace, name),
                service_name: String::new(),
                address_type: AddressType::IPv4,
                ports: Vec::new(),
                endpoints: Vec::new(),
            },
            address_type_set: false,
        }
    }

    pub(crate) struct SliceBuilder {
        slice: EndpointSlice,
        address_type_set: bool,
    }

    impl SliceBuilder {
        pub(crate) fn for_service(mut self, name: &str) -> Self {
            self.slice.service_name = name.to_owned();
            self
        }
        pub(crate) fn port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
            self.slice.ports.push(EndpointPort {
                name: name.to_owned(),
                port,
                protocol,
            });
            self
        }
        /// Adds an endpoint with the API's defaults (Ready, Serving, not
        /// Terminating). The slice's address type follows its first endpoint.
        pub(crate) fn endpoint(mut self, addr: &str) -> Self {
            let address = ip(addr);
            if !self.address_type_set {
                self.slice.address_type = AddressType::of(address);
                self.address_type_set = true;
            }
            self.slice.endpoints.push(Endpoint {
                address,
                ready: true,
                serving: true,
                terminating: false,
                node_name: None,
                zone: None,
            });
            self
        }
        fn last(&mut self, ready: bool, serving: bool, terminating: bool) -> &mut Self {
            if let Some(ep) = self.slice.endpoints.last_mut() {
                ep.ready = ready;
                ep.serving = serving;
                ep.terminating = terminating;
            }
            self
        }
        /// The last endpoint is Ready.
        pub(crate) fn ready(mut self) -> Self {
            self.last(true, true, false);
            self
        }
        /// The last endpoint is neither Ready nor Serving (starting up).
        pub(crate) fn not_ready(mut self) -> Self {
            self.last(false, false, false);
            self
        }
        /// The last endpoint is Terminating but still Serving.
        pub(crate) fn serving_terminating(mut self) -> Self {
            self.last(false, true, true);
            self
        }
        /// The last endpoint is Terminating and no longer Serving.
        pub(crate) fn terminating_not_serving(mut self) -> Self {
            self.last(false, false, true);
            self
        }
    }

    impl From<SliceBuilder> for EndpointSlice {
        fn from(b: SliceBuilder) -> Self {
            b.slice
        }
    }

    /// The backends of the frontend written as `10.96.0.10:80/TCP`, as strings;
    /// `None` when the frontend does not exist.
    pub(crate) fn backends_of(state: &DesiredState, frontend: &str) -> Option<Vec<String>> {
        state
            .frontends
            .iter()
            .find(|(f, _)| f.to_string() == frontend)
            .map(|(_, spec)| spec.backends.iter().map(ToString::to_string).collect())
    }

    /// Every frontend, as strings, sorted.
    pub(crate) fn frontends_of(state: &DesiredState) -> Vec<String> {
        state.frontends.keys().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::{builders::*, *};
    use crate::model::types::{
        Protocol,
        Protocol::{Tcp, Udp},
    };

    /// Runs [`desired`] over services and slices joined the way the Index joins them.
    fn compute(services: Vec<SvcBuilder>, slices: Vec<SliceBuilder>) -> DesiredOutcome {
        let services: Vec<Service> = services.into_iter().map(Into::into).collect();
        let mut slices: Vec<EndpointSlice> = slices.into_iter().map(Into::into).collect();
        slices.sort_by(|a, b| a.id.cmp(&b.id));
        desired(services.iter().map(|s| {
            let mine: Vec<&EndpointSlice> = slices
                .iter()
                .filter(|sl| sl.id.namespace == s.id.namespace && sl.service_name == s.id.name)
                .collect();
            (s, mine)
        }))
    }

    fn backends(outcome: &DesiredOutcome, frontend: &str) -> Vec<String> {
        backends_of(&outcome.state, frontend).unwrap_or_else(|| {
            panic!(
                "no frontend {frontend} in {:?}",
                frontends_of(&outcome.state)
            )
        })
    }

    #[test]
    fn one_port_one_endpoint() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .ready(),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        let spec = out.state.frontends.values().next().expect("one frontend");
        assert_eq!(spec.service, ObjectRef::new("default", "web"));
        assert_eq!(spec.port_name, "http");
        assert!(out.conflicts.is_empty());
    }

    /// Each Service port takes the slice port with the same name and protocol.
    #[rstest]
    #[case::same_name_and_protocol("http", Tcp, "http", Tcp, &["10.1.0.5:8080"])]
    #[case::unnamed_single_port("", Tcp, "", Tcp, &["10.1.0.5:8080"])]
    #[case::other_name("http", Tcp, "metrics", Tcp, &[])]
    #[case::other_protocol("dns", Udp, "dns", Tcp, &[])]
    #[case::named_vs_unnamed("", Tcp, "http", Tcp, &[])]
    fn port_matching_by_name_and_protocol(
        #[case] svc_port: &str,
        #[case] svc_proto: Protocol,
        #[case] slice_port: &str,
        #[case] slice_proto: Protocol,
        #[case] want: &[&str],
    ) {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port(svc_port, 80, svc_proto),
            ],
            vec![
                slice("default", "web-1")
                    .for_service("web")
                    .port(slice_port, 8080, slice_proto)
                    .endpoint("10.1.0.5"),
            ],
        );
        assert_eq!(backends(&out, &format!("10.96.0.10:80/{svc_proto}")), want);
    }

    #[test]
    fn same_port_number_with_tcp_and_udp() {
        let out = compute(
            vec![
                svc("kube-system", "dns")
                    .cluster_ip("10.96.0.53")
                    .port("dns", 53, Udp)
                    .port("dns-tcp", 53, Tcp),
            ],
            vec![
                slice("kube-system", "dns-1")
                    .for_service("dns")
                    .port("dns", 5353, Udp)
                    .port("dns-tcp", 5354, Tcp)
                    .endpoint("10.1.0.7"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.53:53/UDP"), ["10.1.0.7:5353"]);
        assert_eq!(backends(&out, "10.96.0.53:53/TCP"), ["10.1.0.7:5354"]);
    }

    #[test]
    fn multiport_across_slices() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("https", 443, Tcp),
            ],
            vec![
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-b")
                    .for_service("web")
                    .port("https", 8443, Tcp)
                    .endpoint("10.1.0.6"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&out, "10.96.0.10:443/TCP"), ["10.1.0.6:8443"]);
    }

    #[test]
    fn slices_merged_and_deduplicated() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-b")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.7")
                    .endpoint("10.1.0.5"),
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .endpoint("10.1.0.6"),
            ],
        );
        assert_eq!(
            backends(&out, "10.96.0.10:80/TCP"),
            ["10.1.0.5:8080", "10.1.0.6:8080", "10.1.0.7:8080"]
        );
    }

    /// An endpoint listed twice counts once, with the conditions of the first
    /// slice by name (kube-proxy's rule), here not ready.
    #[test]
    fn duplicate_endpoint_first_slice_wins() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-a")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .not_ready()
                    .endpoint("10.1.0.6"),
                slice("default", "web-b")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5")
                    .ready(),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.6:8080"]);
    }

    #[test]
    fn slices_of_other_services_and_namespaces_ignored() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "api-1")
                    .for_service("api")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.8"),
                slice("other", "web-1")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.9"),
            ],
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), Vec::<String>::new());
    }

    #[test]
    fn ip_families_kept_apart() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-v4")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-v6")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("fd00::5"),
            ],
        );
        assert_eq!(frontends_of(&out.state), ["10.96.0.10:80/TCP"]);
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
    }

    #[test]
    fn dual_stack_service() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .cluster_ip("fd00:96::10")
                    .port("http", 80, Tcp),
            ],
            vec![
                slice("default", "web-v4")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("10.1.0.5"),
                slice("default", "web-v6")
                    .for_service("web")
                    .port("http", 8080, Tcp)
                    .endpoint("fd00::5"),
            ],
        );
        assert_eq!(
            frontends_of(&out.state),
            ["10.96.0.10:80/TCP", "[fd00:96::10]:80/TCP"]
        );
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), ["10.1.0.5:8080"]);
        assert_eq!(backends(&out, "[fd00:96::10]:80/TCP"), ["[fd00::5]:8080"]);
    }

    /// Endpoint choice for cluster traffic. Each case lists the endpoints'
    /// states (a = 10.1.0.1, b = 10.1.0.2, ...) and the backends expected.
    #[rstest]
    #[case::ready_only_used(&["ready", "not_ready"], false, &["10.1.0.1:8080"])]
    #[case::none_ready_means_none(&["not_ready"], false, &[])]
    #[case::terminating_ignored_while_any_ready(
        &["ready", "serving_terminating"],
        false,
        &["10.1.0.1:8080"]
    )]
    #[case::fallback_to_serving_terminating(
        &["not_ready", "serving_terminating", "serving_terminating"],
        false,
        &["10.1.0.2:8080", "10.1.0.3:8080"]
    )]
    #[case::terminating_not_serving_never(&["terminating_not_serving"], false, &[])]
    #[case::publish_not_ready_uses_all(
        &["not_ready", "terminating_not_serving"],
        true,
        &["10.1.0.1:8080", "10.1.0.2:8080"]
    )]
    fn endpoint_choice(
        #[case] states: &[&str],
        #[case] publish_not_ready: bool,
        #[case] want: &[&str],
    ) {
        let mut service = svc("default", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, Tcp);
        if publish_not_ready {
            service = service.publish_not_ready();
        }
        let mut sl = slice("default", "web-1")
            .for_service("web")
            .port("http", 8080, Tcp);
        for (i, state) in states.iter().enumerate() {
            sl = sl.endpoint(&format!("10.1.0.{}", i + 1));
            sl = match *state {
                "ready" => sl.ready(),
                "not_ready" => sl.not_ready(),
                "serving_terminating" => sl.serving_terminating(),
                "terminating_not_serving" => sl.terminating_not_serving(),
                other => panic!("unknown endpoint state {other}"),
            };
        }
        let out = compute(vec![service], vec![sl]);
        assert_eq!(backends(&out, "10.96.0.10:80/TCP"), want);
    }

    #[test]
    fn no_endpoints_still_yields_frontends() {
        let out = compute(
            vec![
                svc("default", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp)
                    .port("dns", 53, Udp),
            ],
            vec![],
        );
        assert_eq!(
            frontends_of(&out.state),
            ["10.96.0.10:53/UDP", "10.96.0.10:80/TCP"]
        );
        assert!(out.state.frontends.values().all(|s| s.backends.is_empty()));
    }

    #[test]
    fn conflict_lowest_object_ref_wins_in_any_order() {
        let services = || {
            vec![
                svc("team-b", "web")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
                svc("team-a", "web")
                    .cluster_ip("10.96.0.10")
                    .port("web", 80, Tcp)
                    .port("other", 81, Tcp),
                svc("team-a", "zzz")
                    .cluster_ip("10.96.0.10")
                    .port("http", 80, Tcp),
            ]
        };
        let forward = compute(services(), vec![]);
        let mut reversed_input = services();
        reversed_input.reverse();
        let backward = compute(reversed_input, vec![]);
        assert_eq!(forward, backward);

        let spec = forward
            .state
            .frontends
            .values()
            .next()
            .expect("frontend 80");
        assert_eq!(spec.service, ObjectRef::new("team-a", "web"));
        assert_eq!(spec.port_name, "web");
        assert_eq!(forward.conflicts.len(), 1);
        let conflict = &forward.conflicts[0];
        assert_eq!(conflict.winner, ObjectRef::new("team-a", "web"));
        assert_eq!(
            conflict.losers,
            [
                ObjectRef::new("team-a", "zzz"),
                ObjectRef::new("team-b", "web")
            ]
        );
        assert_eq!(
            conflict.to_string(),
            "frontend 10.96.0.10:80/TCP is claimed by several Services: using Service team-a/web, \
             ignoring Service team-a/zzz, Service team-b/web"
        );
        // The unshared port of the winner is unaffected.
        assert_eq!(
            frontends_of(&forward.state),
            ["10.96.0.10:80/TCP", "10.96.0.10:81/TCP"]
        );
    }

    #[test]
    fn same_port_different_protocols_is_no_conflict() {
        let out = compute(
            vec![
                svc("default", "a")
                    .cluster_ip("10.96.0.10")
                    .port("", 53, Udp),
                svc("default", "b")
                    .cluster_ip("10.96.0.10")
                    .port("", 53, Tcp),
            ],
            vec![],
        );
        assert!(out.conflicts.is_empty());
        assert_eq!(out.state.frontends.len(), 2);
    }
}
