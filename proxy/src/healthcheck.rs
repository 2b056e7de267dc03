//! Health-check node ports (kube-proxy's `pkg/proxy/healthcheck` service
//! server): for each `healthCheckNodePort` of a LoadBalancer Service with
//! `externalTrafficPolicy: Local`, an HTTP server that tells the load balancer
//! whether this node has local endpoints for it.
//!
//! Every request, whatever its path, gets the JSON
//! `{"service":{"namespace":…,"name":…},"localEndpoints":N,"serviceProxyHealthy":bool}`
//! with `X-Load-Balancing-Endpoint-Weight: N`; the status is 200 when N > 0
//! and the proxy is healthy, else 503. Ports follow the desired state that
//! [`Telemetry::health_checks`] publishes: opened when a Service asks for one,
//! closed when it no longer does; counts change without reopening.
//!
//! Listens on the unspecified address (`[::]`, dual-stack, or `0.0.0.0` where
//! IPv6 is off) of the daemon's network namespace, as kube-proxy does without
//! `--nodeport-addresses`. Lives next to the datapath, as kube-proxy's
//! `healthcheck` package beside its proxiers: it serves what the desired state
//! says (from `model`, published through `telemetry`).
//!
//! A port that cannot be bound (another process holds it) is tried again
//! every [`RETRY_INTERVAL`] while it is wanted, not only at the next Service
//! change, as kube-proxy retries failed listeners at each sync; each failure
//! counts in `proxy_health_bind_failures_total{server="service-health"}` and
//! is logged, rate-limited ([`warns`]).
//!
//! Connections are served by the loop the admin servers use too
//! ([`crate::http_server`]).
//!
//! Must not: touch the dataplane, or import anything but `model`, `telemetry`
//! and `http_server`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
};
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch};

use crate::{http_server, model::HealthCheck, telemetry::Telemetry};

/// How often ports that could not be bound are tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The `server` label of this server's failed binds.
pub const BIND_FAILURE_LABEL: &str = "service-health";

/// Whether failed attempt number `attempt` (from 1) on one port is logged:
/// the first three, then one in twelve (once a minute at [`RETRY_INTERVAL`]).
pub fn warns(attempt: u32) -> bool {
    crate::admin::retry::logged(attempt, 3, 12)
}

/// The response body, in kube-proxy's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Body<'a> {
    pub service: ServiceId<'a>,
    pub local_endpoints: usize,
    pub service_proxy_healthy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceId<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The answer for one health check, given whether the proxy is healthy.
pub fn respond(check: &HealthCheck, proxy_healthy: bool) -> Response<Full<Bytes>> {
    let body = Body {
        service: ServiceId {
            namespace: &check.service.namespace,
            name: &check.service.name,
        },
        local_endpoints: check.local_endpoints,
        service_proxy_healthy: proxy_healthy,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = if check.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "x-load-balancing-endpoint-weight",
        HeaderValue::from(check.local_endpoints),
    );
    response
}

/// One open port: its current check, and the switch that closes it.
struct Port {
    check: watch::Sender<HealthCheck>,
    stop: watch::Sender<bool>,
}

/// Follows [`Telemetry::watch_health_checks`] until `shutdown` flips: opens,
/// updates and closes one server per health-check node port. A port that
/// cannot be bound is tried again at the next change, or after
/// [`RETRY_INTERVAL`].
pub async fn run(telemetry: Telemetry, mut shutdown: watch::Receiver<bool>) {
    let mut wanted = telemetry.watch_health_checks();
    let mut open: BTreeMap<u16, Port> = BTreeMap::new();
    // Ports that failed to bind, and how many times in a row.
    let mut failing: BTreeMap<u16, u32> = BTreeMap::new();
    loop {
        let checks: Arc<BTreeMap<u16, HealthCheck>> = wanted.borrow_and_update().clone();
        open.retain(|port, server| {
            let keep = checks.contains_key(port);
            if !keep {
                let _ = server.stop.send(true);
                tracing::info!(port, "health-check node port closed");
            }
            keep
        });
        failing.retain(|port, _| checks.contains_key(port));
        for (port, check) in checks.iter() {
            if let Some(server) = open.get(port) {
                server.check.send_if_modified(|current| {
                    let changed = current != check;
                    if changed {
                        *current = check.clone();
                    }
                    changed
                });
                continue;
            }
            match bind(*port).await {
                Ok(listener) => {
                    if let Some(failures) = failing.remove(port) {
                        tracing::info!(
                            port,
                            failures,
                            "health-check node port bound after failures"
                        );
                    }
                    let (check_tx, check_rx) = watch::channel(check.clone());
                    let (stop_tx, stop_rx) = watch::channel(false);
                    tracing::info!(port, service = %check.service, "health-check node port open");
                    tokio::spawn(serve(listener, check_rx, telemetry.clone(), stop_rx));
                    open.insert(
                        *port,
                        Port {
                            check: check_tx,
                            stop: stop_tx,
                        },
                    );
                }
                Err(error) => {
                    telemetry.admin_bind_failed(BIND_FAILURE_LABEL);
                    let attempt = failing.entry(*port).or_default();
                    *attempt = attempt.saturating_add(1);
                    if warns(*attempt) {
                        tracing::warn!(
                            port,
                            service = %check.service,
                            error = %error,
                            attempt = *attempt,
                            retry_in = ?RETRY_INTERVAL,
                            "cannot open the health-check node port; retrying"
                        );
                    }
                }
            }
        }
        tokio::select! {
            r = wanted.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(RETRY_INTERVAL), if !failing.is_empty() => {}
        }
    }
    for server in open.values() {
        let _ = server.stop.send(true);
    }
}

/// `[::]:port` (dual-stack), or `0.0.0.0:port` where IPv6 is unavailable.
async fn bind(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
        Err(_) => TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await,
    }
}

async fn serve(
    listener: TcpListener,
    check: watch::Receiver<HealthCheck>,
    telemetry: Telemetry,
    stop: watch::Receiver<bool>,
) {
    let handler = move |_req: Request<Incoming>| {
        let response = respond(&check.borrow(), telemetry.is_healthy());
        async move { response }
    };
    http_server::serve(listener, "health-check node port", handler, stop).await;
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use std::time::Duration;

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{model::ObjectRef, telemetry::Mode};

    fn check(n: usize) -> HealthCheck {
        HealthCheck {
            service: ObjectRef::new("shop", "web"),
            local_endpoints: n,
        }
    }

    async fn parts(r: Response<Full<Bytes>>) -> (u16, String, String) {
        let status = r.status().as_u16();
        let weight = r.headers()["x-load-balancing-endpoint-weight"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, weight, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn answers_as_kube_proxy_does() {
        let body = |n, healthy| {
            format!(
                r#"{{"service":{{"namespace":"shop","name":"web"}},"localEndpoints":{n},"serviceProxyHealthy":{healthy}}}"#
            )
        };
        assert_eq!(
            parts(respond(&check(2), true)).await,
            (200, "2".into(), body(2, true))
        );
        assert_eq!(
            parts(respond(&check(0), true)).await,
            (503, "0".into(), body(0, true))
        );
        assert_eq!(
            parts(respond(&check(3), false)).await,
            (503, "3".into(), body(3, false))
        );
    }

    async fn get(port: u16) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Polls `port` (bounded) until `want` holds for its answer.
    async fn until(port: u16, want: fn(Option<&str>) -> bool) -> bool {
        for _ in 0..200 {
            if want(get(port).await.as_deref()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn the_first_failures_are_logged_then_one_a_minute() {
        let logged: Vec<u32> = (1..=36).filter(|a| warns(*a)).collect();
        assert_eq!(logged, [1, 2, 3, 12, 24, 36]);
    }

    /// A port held by another socket is bound once it is let go, with no
    /// change of the checks; each failure is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_port_in_use_is_retried_on_a_timer() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(t.clone(), stop_rx));
        t.health_checks(&BTreeMap::from([(port, check(1))]));
        for _ in 0..200 {
            if t.admin_bind_failures(BIND_FAILURE_LABEL) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            t.admin_bind_failures(BIND_FAILURE_LABEL) >= 1,
            "failure counted"
        );
        drop(holder);
        let mut served = false;
        for _ in 0..100 {
            if get(port)
                .await
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "port {port} not bound after it was let go");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Ports open and close with the published checks; counts change in place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ports_follow_the_published_checks() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(t.clone(), stop_rx));
        let port = free_port();
        t.health_checks(&BTreeMap::from([(port, check(1))]));
        let open: fn(Option<&str>) -> bool = |r| {
            r.is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.contains(r#""localEndpoints":1"#))
        };
        assert!(until(port, open).await, "port {port} did not open");
        t.health_checks(&BTreeMap::from([(port, check(0))]));
        let unavailable: fn(Option<&str>) -> bool =
            |r| r.is_some_and(|r| r.starts_with("HTTP/1.1 503"));
        assert!(until(port, unavailable).await, "count not updated");
        t.health_checks(&BTreeMap::new());
        assert!(until(port, |r| r.is_none()).await, "port not closed");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
