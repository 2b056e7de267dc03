//! Tests of the desired-state function, one file per rule; the builders are
//! in [`crate::model::testkit`].

use rstest::rstest;

use super::*;
use crate::model::{
    testkit::*,
    types::{
        Backend, Frontend, FrontendKind, Protocol,
        Protocol::{Tcp, Udp},
        ServiceType, TrafficPolicy,
        TrafficPolicy::{Cluster, Local},
    },
};

mod conflicts;
mod external;
mod health_check;
mod ports;
mod slices;
mod source_ranges;
mod topology;
mod traffic_policy;

/// Runs [`desired`] over services and slices joined the way the Index joins
/// them, on node `host` with no zone.
fn compute(services: Vec<SvcBuilder>, slices: Vec<SliceBuilder>) -> DesiredOutcome {
    compute_on(node(HOST).into(), services, slices)
}

const HOST: &str = "host";

fn compute_on(
    node: NodeInfo,
    services: Vec<SvcBuilder>,
    slices: Vec<SliceBuilder>,
) -> DesiredOutcome {
    let services: Vec<Service> = services.into_iter().map(Into::into).collect();
    let mut slices: Vec<EndpointSlice> = slices.into_iter().map(Into::into).collect();
    slices.sort_by(|a, b| a.id.cmp(&b.id));
    desired(
        &node,
        services.iter().map(|s| {
            let mine: Vec<&EndpointSlice> = slices
                .iter()
                .filter(|sl| {
                    sl.id.namespace == s.id.namespace && sl.service_name.as_str() == &*s.id.name
                })
                .collect();
            (s, mine)
        }),
    )
}

fn backends(outcome: &DesiredOutcome, frontend: &str) -> Vec<String> {
    backends_of(&outcome.state, frontend).unwrap_or_else(|| {
        panic!(
            "no frontend {frontend} in {:?}",
            frontends_of(&outcome.state)
        )
    })
}
