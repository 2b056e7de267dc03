//! `proxy explain` against the running daemon: it asks over the daemon's
//! query socket (owner-only), its rules agree with the traffic the dataplane
//! balances, and the offline answer (`--manifests DIR`) is the same as the
//! daemon's. Without a daemon it fails with a message naming `--manifests`.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use common::*;
use proxy_tests::{
    ProxyProcess,
    manifest::{AddressType, Endpoint, EndpointSlice, Protocol},
    proxy_bin,
};
use serde_json::Value;

const NODE: &str = "node-1";

/// `proxy explain ARGS`, run to completion.
fn run_explain(args: &[&str]) -> Output {
    Command::new(proxy_bin())
        .arg("explain")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running proxy explain {args:?}: {e}"))
}

/// [`run_explain`], which must succeed; its stdout.
fn explain(args: &[&str]) -> String {
    let out = run_explain(args);
    assert!(
        out.status.success(),
        "expected `proxy explain {args:?}` to succeed, it exited with {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `web` (IPv4) with two Ready endpoints and one Serving and Terminating, all
/// on this node; the daemon runs as [`NODE`].
fn start() -> Fixture {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write(
        "web-service.yaml",
        &service(WEB, &[WEB_VIP4], TCP_PORT, UDP_PORT),
    );
    f.write(
        "web-slice.yaml",
        &EndpointSlice::new(
            NAMESPACE,
            &slice_name(WEB, AddressType::IPv4),
            WEB,
            AddressType::IPv4,
        )
        .port("http", Protocol::Tcp, TCP_TARGET)
        .port("dns", Protocol::Udp, UDP_TARGET)
        .endpoint(Endpoint::ready(BACKENDS_V4[0]))
        .endpoint(Endpoint::ready(BACKENDS_V4[1]))
        .endpoint(Endpoint::terminating(BACKENDS_V4[2]))
        .to_yaml(),
    );
    f.start_proxy_with(&["--node-name", NODE]);
    f.wait_ready();
    f
}

fn socket_arg(f: &Fixture) -> String {
    ProxyProcess::query_socket(&f.sandbox).display().to_string()
}

#[test]
fn explain_asks_the_daemon_and_agrees_with_the_traffic() {
    let mut f = start();
    let socket = socket_arg(&f);
    let service = format!("{NAMESPACE}/{WEB}");

    let mode = std::fs::metadata(&socket)
        .unwrap_or_else(|e| panic!("the query socket {socket}: {e}"))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "expected an owner-only socket, mode {mode:o}"
    );

    let text = explain(&[&service, "--socket", &socket]);
    let vip = sock(WEB_VIP4, TCP_PORT);
    for used in &BACKENDS_V4[..2] {
        let line = format!(
            "endpoint {used}:{TCP_TARGET} [ready, serving, local]\n      cluster: used (Ready)"
        );
        assert!(text.contains(&line), "expected {line:?} in:\n{text}");
    }
    let terminating = format!(
        "endpoint {}:{TCP_TARGET} [serving, terminating, local]\n      cluster: not used (Serving and Terminating, not used while a Ready endpoint exists)",
        BACKENDS_V4[2]
    );
    assert!(
        text.contains(&terminating),
        "expected {terminating:?} in:\n{text}"
    );

    // What explain says is what the dataplane does.
    let seen = tally(Kind::Tcp, vip, 30);
    assert_backends(
        "web's TCP VIP",
        &seen,
        &names(&BACKENDS_V4[..2], TCP_TARGET),
    );

    // One frontend, with a client: balanced over the two Ready endpoints.
    let one = json(&explain(&[
        &format!("{vip}/tcp"),
        "--socket",
        &socket,
        "--client",
        BACKENDS_V4[0],
        "--client-on-node",
        "--output",
        "json",
    ]));
    let frontends = one[0]["frontends"].as_array().expect("frontends");
    assert_eq!(frontends.len(), 1, "one frontend for {vip}/tcp: {one:#}");
    assert_eq!(frontends[0]["client"]["verdict"], "balanced", "{one:#}");
    assert_eq!(
        frontends[0]["client"]["backends"],
        serde_json::json!([
            format!("{}:{TCP_TARGET}", BACKENDS_V4[0]),
            format!("{}:{TCP_TARGET}", BACKENDS_V4[1])
        ]),
    );

    // Offline, from the same manifests for the same node: the same answer.
    let dir = f.sandbox.manifests_dir();
    let daemon = json(&explain(&[
        &service, "--socket", &socket, "--output", "json",
    ]));
    let offline = json(&explain(&[
        &service,
        "--manifests",
        &dir.display().to_string(),
        "--node",
        NODE,
        "--output",
        "json",
    ]));
    let cluster_ip = |v: &Value| -> Vec<Value> {
        v[0]["frontends"]
            .as_array()
            .expect("frontends")
            .iter()
            .filter(|f| f["kind"] == "ClusterIP")
            .cloned()
            .collect()
    };
    assert_eq!(
        cluster_ip(&daemon),
        cluster_ip(&offline),
        "daemon vs offline"
    );
    assert_eq!(
        cluster_ip(&daemon).len(),
        2,
        "TCP and UDP ClusterIP frontends: {daemon:#}"
    );

    // A Service that does not exist: a clear error, non-zero exit.
    let out = run_explain(&[&format!("{NAMESPACE}/nothing"), "--socket", &socket]);
    assert!(
        !out.status.success(),
        "expected a failure for a missing Service"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Service or frontend matches"),
        "{stderr}"
    );

    // Stopped: the socket is gone, and explain says how to go on without it.
    f.proxy().stop().expect("stopping the proxy");
    assert!(
        !Path::new(&socket).exists(),
        "the socket is removed at exit"
    );
    let out = run_explain(&[&service, "--socket", &socket]);
    assert!(!out.status.success(), "expected a failure with no daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--manifests"),
        "expected a hint at --manifests in:\n{stderr}"
    );
}
