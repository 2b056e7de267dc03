//! Health endpoints under a flood of idle and slow clients, through the real
//! proxy: with 1,000 connections held open against the health server and
//! 1,000 against a health-check node port (idle ones, and ones that sent
//! half a request), `/livez`, `/healthz` and the node port still answer a
//! normal client. The probes use the harness's ordinary 2 s timeout: a
//! functional check, not a benchmark. All on loopback inside the sandbox.

mod common;

use std::{io::Write as _, net::TcpStream, time::Duration};

use common::*;

const HEALTHZ_ADDR: &str = "127.0.0.1:19256";
const HC_ADDR: &str = "127.0.0.1:31999";
const FLOOD: usize = 1_000;

/// `lb`: type LoadBalancer, ETP Local, health-check node port 31999, one
/// local endpoint (the proxy runs as `node-1`).
fn lb() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: pxt\nspec:\n  \
         type: LoadBalancer\n  clusterIP: 10.96.0.40\n  externalTrafficPolicy: Local\n  \
         healthCheckNodePort: 31999\n  ports:\n  - name: http\n    port: 80\n    \
         targetPort: 8080\n    protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: lb-abcde\n  \
         namespace: pxt\n  labels:\n    kubernetes.io/service-name: lb\naddressType: IPv4\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n\
         - addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-1\n",
        BACKENDS_V4[0]
    )
}

/// `n` connections to `addr`, every other one having sent half a request.
fn flood(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut stream = TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("flood connection {i} to {addr}: {e}"));
            if i % 2 == 1 {
                let _ = stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n");
            }
            stream
        })
        .collect()
}

/// Asserts each endpoint answers 200; returns the slowest answer's time.
fn assert_answers(when: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for (addr, path) in [
        (HEALTHZ_ADDR, "/livez"),
        (HEALTHZ_ADDR, "/healthz"),
        (HC_ADDR, "/healthz"),
    ] {
        let asked = std::time::Instant::now();
        match http_get(addr, path) {
            Ok((200, _)) => slowest = slowest.max(asked.elapsed()),
            Ok((code, body)) => panic!("{when}: {addr}{path} said {code}: {body}"),
            Err(e) => panic!("{when}: {addr}{path} did not answer within {HTTP_TIMEOUT:?}: {e}"),
        }
    }
    slowest
}

#[test]
fn health_endpoints_answer_under_a_thousand_idle_connections() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("lb.yaml", &lb());
    f.start_proxy_with(&[
        "--node-name",
        "node-1",
        "--healthz-bind-address",
        HEALTHZ_ADDR,
    ]);
    f.wait_ready();
    f.wait_for(PROPAGATION, "the health-check node port to answer", || {
        matches!(http_get(HC_ADDR, "/healthz"), Ok((200, _)))
    });

    let mut held = flood(HEALTHZ_ADDR, FLOOD);
    held.extend(flood(HC_ADDR, FLOOD));
    // Let the daemon accept them all before the normal client comes.
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        let when = format!("with {} connections held (round {round})", held.len());
        slowest = slowest.max(assert_answers(&when));
    }
    // The pattern: a fifth of them closed and opened again, twice.
    for churn in 0..2 {
        held.drain(..FLOOD / 5);
        held.extend(flood(HEALTHZ_ADDR, FLOOD / 10));
        held.extend(flood(HC_ADDR, FLOOD / 10));
        slowest = slowest.max(assert_answers(&format!("after churn {churn}")));
    }
    eprintln!("the slowest answer under the flood took {slowest:?}");
    f.assert_proxy_running();
}
