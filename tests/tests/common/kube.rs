//! The Kubernetes source in a test: the fake API server inside the entered
//! sandbox (so it listens on the namespace's loopback, which the proxy shares)
//! with this node's Node, and the proxy started against it.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use proxy_tests::{FakeApiServer, ProxyProcess, manifest::Node, proxy_bin};

use super::Fixture;

/// The node the proxy runs as (`--node-name`).
pub const NODE: &str = "node-1";
/// Its InternalIP in the Node object.
pub const NODE_INTERNAL_IP: &str = "192.168.96.1";

/// The fake API server holding `node` (use [`this_node`]), and its
/// kubeconfig in the sandbox's directory.
pub fn start_api(f: &Fixture, node: &Node) -> (FakeApiServer, PathBuf) {
    let api = FakeApiServer::start().expect("starting the fake API server in the sandbox");
    api.apply_node(node);
    let kubeconfig = api
        .write_kubeconfig(f.sandbox.dir())
        .expect("writing the kubeconfig");
    (api, kubeconfig)
}

/// This node's Node object, in `zone`.
pub fn this_node(zone: &str) -> Node {
    Node::new(NODE).zone(zone).internal_ip(NODE_INTERNAL_IP)
}

/// `proxy run --kubeconfig K --node-name node-1`, in the fixture's mode, plus
/// `extra`.
pub fn start_kube_proxy(f: &mut Fixture, kubeconfig: &Path, extra: &[&str]) {
    assert!(f.proxy.is_none(), "the proxy is already running");
    let source = [OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    let mut args = vec!["--node-name", NODE];
    args.extend(f.mode.args());
    args.extend_from_slice(extra);
    f.proxy = Some(
        ProxyProcess::start_with_source(&proxy_bin(), &f.sandbox, &source, &args)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
}
