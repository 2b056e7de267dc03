//! Health-check node ports through the real proxy, in both modes: a
//! LoadBalancer Service with `externalTrafficPolicy: Local` and a
//! `healthCheckNodePort` gets kube-proxy's `/healthz` answer on that port
//! (200 with the count of local endpoints, 503 with none), and the port
//! closes when the Service goes. Queried on loopback inside the sandbox.

mod common;

use common::*;

const HC_PORT: u16 = 31999;
const HC_ADDR: &str = "127.0.0.1:31999";

/// `lb`: type LoadBalancer, ETP Local, one TCP port, and its slice with
/// `endpoints` on `node` (the proxy runs as `node-1`).
fn lb(node: &str) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: pxt\nspec:\n  \
         type: LoadBalancer\n  clusterIP: 10.96.0.40\n  externalTrafficPolicy: Local\n  \
         healthCheckNodePort: 31999\n  ports:\n  - name: http\n    port: 80\n    \
         targetPort: 8080\n    protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: lb-abcde\n  \
         namespace: pxt\n  labels:\n    kubernetes.io/service-name: lb\naddressType: IPv4\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n",
    );
    for a in &BACKENDS_V4[..2] {
        y.push_str(&format!(
            "- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
        ));
    }
    y
}

both_modes! {
    fn health_check_node_port_follows_local_endpoints(mode) {
        let mut f = Fixture::new(mode);
        f.write_web(&BACKENDS_V4, &BACKENDS_V6);
        f.write("lb.yaml", &lb("node-1"));
        f.start_proxy_with(&["--node-name", "node-1"]);
        f.wait_ready();

        let mut last = None;
        f.wait_for(PROPAGATION, "the health-check node port to answer 200", || {
            last = Some(http_get(HC_ADDR, "/healthz"));
            matches!(&last, Some(Ok((200, _))))
        });
        let Some(Ok((_, body))) = last else { unreachable!() };
        assert_eq!(
            body,
            r#"{"service":{"namespace":"pxt","name":"lb"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );

        // The endpoints move to another node: 503, no local endpoint.
        f.write("lb.yaml", &lb("node-2"));
        let mut last = None;
        f.wait_for(PROPAGATION, "the health-check node port to answer 503", || {
            last = Some(http_get(HC_ADDR, "/any/path"));
            matches!(&last, Some(Ok((503, _))))
        });
        let Some(Ok((_, body))) = last else { unreachable!() };
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");

        // The Service goes: the port closes.
        f.remove("lb.yaml");
        f.wait_for(PROPAGATION, "the health-check node port to close", || {
            http_get(HC_ADDR, "/healthz").is_err()
        });
        let listening = f.sandbox.listening().unwrap_or_default();
        assert!(
            !listening.iter().any(|a| a.port() == HC_PORT),
            "expected nothing to listen on port {HC_PORT}, saw {listening:?}"
        );
    }
}

/// A health-check node port held by another socket when the Service comes
/// is bound once that socket lets go, on the proxy's retry timer (every
/// 5 s), without any Service change.
#[test]
fn a_health_check_node_port_in_use_is_retried() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write("lb.yaml", &lb("node-1"));
    // The test thread is in the sandbox's namespace: this holds the port there.
    let holder = std::net::TcpListener::bind(("0.0.0.0", HC_PORT)).expect("holding the port");
    f.start_proxy_with(&["--node-name", "node-1"]);
    f.wait_ready();
    // Let the proxy try (and fail) to bind it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    drop(holder);
    f.wait_for(
        std::time::Duration::from_secs(12),
        "the health-check node port to answer 200 once let go",
        || matches!(http_get(HC_ADDR, "/healthz"), Ok((200, _))),
    );
}
