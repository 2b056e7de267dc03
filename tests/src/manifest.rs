//! Kubernetes manifests as `kubectl get -o yaml --show-managed-fields` prints them:
//! a [`Service`] and an [`EndpointSlice`] builder whose YAML carries the
//! server-set fields a real object has (uid, resourceVersion, creationTimestamp,
//! managedFields, status, ownerReferences), so the proxy is tested on what it
//! will really read. Plus [`write_atomic`], because the proxy watches the
//! directory and must never see half a file.
//!
//! Values are written as given (IP addresses are strings), so tests can write
//! invalid ones on purpose. Pure apart from [`write_atomic`] and [`remove`].

use std::{
    fmt::{self, Write as _},
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::Error;

/// The creation time written on every object.
const CREATED: &str = "2026-11-20T09:14:03Z";
/// The time of the last update written on every object.
const UPDATED: &str = "2026-11-20T09:14:09Z";

static RESOURCE_VERSION: AtomicU64 = AtomicU64::new(48_213);

fn next_resource_version() -> u64 {
    RESOURCE_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// A stable UUID-shaped uid for an object, so that an EndpointSlice's owner
/// reference names its Service's uid.
fn uid(kind: &str, namespace: &str, name: &str) -> String {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        (salt, kind, namespace, name).hash(&mut h);
        h.finish()
    };
    let (a, b) = (half(0), half(1));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A port protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// An EndpointSlice's `addressType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    IPv4,
    IPv6,
}

impl fmt::Display for AddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
        })
    }
}

/// One entry of a Service's `spec.ports`.
#[derive(Clone, Debug)]
pub struct ServicePort {
    /// Empty for a single unnamed port (the field is then left out).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: u16,
    /// `nodePort` (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// A `v1` Service: type ClusterIP unless [`Service::service_type`] says otherwise.
#[derive(Clone, Debug)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs`, written as given; the first is also `spec.clusterIP`.
    pub cluster_ips: Vec<String>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` with this `timeoutSeconds`; `None`: no affinity.
    pub session_affinity: Option<u32>,
    /// `spec.internalTrafficPolicy` (`Cluster` unless set).
    pub internal_traffic_policy: String,
    /// Extra `metadata.labels` (besides `app.kubernetes.io/name`).
    pub labels: Vec<(String, String)>,
    /// `spec.type`: `ClusterIP`, `NodePort` or `LoadBalancer`.
    pub service_type: String,
    /// `spec.externalIPs`, written as given.
    pub external_ips: Vec<String>,
    /// `spec.externalTrafficPolicy` (written only for NodePort and LoadBalancer types).
    pub external_traffic_policy: String,
    /// `status.loadBalancer.ingress[]`: `ip` and `ipMode`, written as given.
    pub load_balancer_ingress: Vec<(String, String)>,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
    /// `spec.loadBalancerSourceRanges`, written as given.
    pub load_balancer_source_ranges: Vec<String>,
}

impl Service {
    /// A Service with no cluster IP and no port yet.
    pub fn new(namespace: &str, name: &str) -> Self {
        Service {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cluster_ips: Vec::new(),
            ports: Vec::new(),
            session_affinity: None,
            internal_traffic_policy: "Cluster".to_owned(),
            labels: Vec::new(),
            service_type: "ClusterIP".to_owned(),
            external_ips: Vec::new(),
            external_traffic_policy: "Cluster".to_owned(),
            load_balancer_ingress: Vec::new(),
            health_check_node_port: None,
            load_balancer_source_ranges: Vec::new(),
        }
    }

    /// `spec.type` (`ClusterIP`, `NodePort`, `LoadBalancer`).
    pub fn service_type(mut self, service_type: &str) -> Self {
        self.service_type = service_type.to_owned();
        self
    }

    /// Sets the `nodePort` of the port named `port_name` (add the port first).
    ///
    /// # Panics
    /// When no port has that name: a mistake in the test, not input.
    pub fn node_port(mut self, port_name: &str, node_port: u16) -> Self {
        let port = self
            .ports
            .iter_mut()
            .find(|p| p.name == port_name)
            .unwrap_or_else(|| panic!("node_port: the Service has no port named {port_name:?}"));
        port.node_port = Some(node_port);
        self
    }

    /// Adds an entry to `spec.externalIPs` (any string).
    pub fn external_ip(mut self, ip: impl ToString) -> Self {
        self.external_ips.push(ip.to_string());
        self
    }

    /// `spec.externalTrafficPolicy` (`Cluster` or `Local`).
    pub fn external_traffic_policy(mut self, policy: &str) -> Self {
        self.external_traffic_policy = policy.to_owned();
        self
    }

    /// Adds a `status.loadBalancer.ingress` IP with `ipMode: VIP`, as a
    /// cloud controller would.
    pub fn load_balancer_ingress(self, ip: impl ToString) -> Self {
        self.load_balancer_ingress_mode(ip, "VIP")
    }

    /// Adds a `status.loadBalancer.ingress` IP with this `ipMode` (`VIP`,
    /// `Proxy`, or any string).
    pub fn load_balancer_ingress_mode(mut self, ip: impl ToString, mode: &str) -> Self {
        self.load_balancer_ingress
            .push((ip.to_string(), mode.to_owned()));
        self
    }

    /// Adds a `spec.loadBalancerSourceRanges` entry (any string).
    pub fn load_balancer_source_range(mut self, cidr: impl ToString) -> Self {
        self.load_balancer_source_ranges.push(cidr.to_string());
        self
    }

    /// `spec.healthCheckNodePort` (LoadBalancer with `externalTrafficPolicy: Local`).
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.health_check_node_port = Some(port);
        self
    }

    /// `sessionAffinity: ClientIP` with `timeoutSeconds`.
    pub fn session_affinity(mut self, timeout_seconds: u32) -> Self {
        self.session_affinity = Some(timeout_seconds);
        self
    }

    /// `spec.internalTrafficPolicy` (`Cluster` or `Local`).
    pub fn internal_traffic_policy(mut self, policy: &str) -> Self {
        self.internal_traffic_policy = policy.to_owned();
        self
    }

    /// Adds a label (for example `service.kubernetes.io/service-proxy-name`).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a cluster IP (one per family; any string, for invalid-input tests).
    pub fn cluster_ip(mut self, ip: impl ToString) -> Self {
        self.cluster_ips.push(ip.to_string());
        self
    }

    /// Adds a port.
    pub fn port(mut self, name: &str, protocol: Protocol, port: u16, target_port: u16) -> Self {
        self.ports.push(ServicePort {
            name: name.to_owned(),
            protocol,
            port,
            target_port,
            node_port: None,
        });
        self
    }

    /// The Service as `kubectl get service -o yaml --show-managed-fields` prints it.
    pub fn to_yaml(&self) -> String {
        let families: Vec<&str> = self
            .cluster_ips
            .iter()
            .map(|ip| match ip.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => "IPv6",
                _ => "IPv4",
            })
            .collect();
        let policy = if families.len() > 1 {
            "PreferDualStack"
        } else {
            "SingleStack"
        };
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: v1\nkind: Service\nmetadata:");
        let _ = writeln!(y, "  creationTimestamp: \"{CREATED}\"");
        let _ = writeln!(y, "  labels:\n    app.kubernetes.io/name: {}", self.name);
        for (key, value) in &self.labels {
            let _ = writeln!(y, "    {key}: \"{value}\"");
        }
        let _ = writeln!(
            y,
            "  managedFields:\n  - apiVersion: v1\n    fieldsType: FieldsV1\n    fieldsV1:\n      \
             f:metadata:\n        f:labels:\n          .: {{}}\n          \
             f:app.kubernetes.io/name: {{}}\n      f:spec:\n        \
             f:internalTrafficPolicy: {{}}\n        f:ports:\n          .: {{}}"
        );
        for p in &self.ports {
            let _ = writeln!(
                y,
                "          k:{{\"port\":{},\"protocol\":\"{}\"}}:\n            .: {{}}",
                p.port, p.protocol
            );
            if !p.name.is_empty() {
                let _ = writeln!(y, "            f:name: {{}}");
            }
            let _ = writeln!(
                y,
                "            f:port: {{}}\n            f:protocol: {{}}\n            \
                 f:targetPort: {{}}"
            );
        }
        let _ = writeln!(
            y,
            "        f:selector: {{}}\n        f:sessionAffinity: {{}}\n        f:type: {{}}\n    \
             manager: kubectl-create\n    operation: Update\n    time: \"{CREATED}\""
        );
        let _ = writeln!(y, "  name: {}\n  namespace: {}", self.name, self.namespace);
        let _ = writeln!(y, "  resourceVersion: \"{}\"", next_resource_version());
        let _ = writeln!(y, "  uid: {}", uid("Service", &self.namespace, &self.name));
        y.push_str("spec:\n");
        if let Some(first) = self.cluster_ips.first() {
            let _ = writeln!(y, "  clusterIP: {first}\n  clusterIPs:");
            for ip in &self.cluster_ips {
                let _ = writeln!(y, "  - {ip}");
            }
        }
        if !self.external_ips.is_empty() {
            y.push_str("  externalIPs:\n");
            for ip in &self.external_ips {
                let _ = writeln!(y, "  - {ip}");
            }
        }
        let external = self.service_type != "ClusterIP";
        if external {
            let _ = writeln!(
                y,
                "  externalTrafficPolicy: {}",
                self.external_traffic_policy
            );
        }
        if let Some(port) = self.health_check_node_port {
            let _ = writeln!(y, "  healthCheckNodePort: {port}");
        }
        if !self.load_balancer_source_ranges.is_empty() {
            y.push_str("  loadBalancerSourceRanges:\n");
            for cidr in &self.load_balancer_source_ranges {
                let _ = writeln!(y, "  - \"{cidr}\"");
            }
        }
        let _ = writeln!(
            y,
            "  internalTrafficPolicy: {}\n  ipFamilies:",
            self.internal_traffic_policy
        );
        for f in &families {
            let _ = writeln!(y, "  - {f}");
        }
        let _ = writeln!(y, "  ipFamilyPolicy: {policy}\n  ports:");
        for p in &self.ports {
            let name = if p.name.is_empty() {
                String::new()
            } else {
                format!("name: {}\n    ", p.name)
            };
            let node_port = p
                .node_port
                .map(|n| format!("nodePort: {n}\n    "))
                .unwrap_or_default();
            let _ = writeln!(
                y,
                "  - {name}{node_port}port: {}\n    protocol: {}\n    targetPort: {}",
                p.port, p.protocol, p.target_port
            );
        }
        let _ = writeln!(y, "  selector:\n    app.kubernetes.io/name: {}", self.name);
        match self.session_affinity {
            Some(timeout) => {
                let _ = writeln!(
                    y,
                    "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      \
                     timeoutSeconds: {timeout}"
                );
            }
            None => y.push_str("  sessionAffinity: None\n"),
        }
        let _ = writeln!(y, "  type: {}\nstatus:", self.service_type);
        if self.load_balancer_ingress.is_empty() {
            y.push_str("  loadBalancer: {}\n");
        } else {
            y.push_str("  loadBalancer:\n    ingress:\n");
            for (ip, mode) in &self.load_balancer_ingress {
                let _ = writeln!(y, "    - ip: {ip}\n      ipMode: {mode}");
            }
        }
        y
    }
}

/// One endpoint of an EndpointSlice. Conditions left `None` are left out of the
/// YAML (Kubernetes reads nil as ready, serving, not terminating).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: String,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
}

impl Endpoint {
    /// A running pod's endpoint, as the EndpointSlice controller writes it:
    /// ready, serving, not terminating, on `node-1`.
    pub fn ready(address: impl ToString) -> Self {
        Endpoint {
            address: address.to_string(),
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            node_name: Some("node-1".to_owned()),
            zone: None,
        }
    }

    /// This endpoint on node `node` (`nodeName`).
    pub fn on_node(mut self, node: &str) -> Self {
        self.node_name = Some(node.to_owned());
        self
    }

    /// A pod being deleted that still serves (ready false, serving, terminating).
    pub fn terminating(address: impl ToString) -> Self {
        Endpoint {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
            ..Endpoint::ready(address)
        }
    }

    /// A pod that is up but not ready (ready and serving false).
    pub fn not_ready(address: impl ToString) -> Self {
        Endpoint {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
            ..Endpoint::ready(address)
        }
    }
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Clone, Debug)]
pub struct EndpointPort {
    /// Matches the Service port's name; empty for an unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A `discovery.k8s.io/v1` EndpointSlice, as the EndpointSlice controller makes it.
#[derive(Clone, Debug)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    pub address_type: AddressType,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
}

impl EndpointSlice {
    /// An empty slice `name` of `service` (an empty slice is written with
    /// `endpoints: null`, as the API server returns it).
    pub fn new(namespace: &str, name: &str, service: &str, address_type: AddressType) -> Self {
        EndpointSlice {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service: service.to_owned(),
            address_type,
            endpoints: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds a port.
    pub fn port(mut self, name: &str, protocol: Protocol, port: u16) -> Self {
        self.ports.push(EndpointPort {
            name: name.to_owned(),
            protocol,
            port,
        });
        self
    }

    /// The slice as `kubectl get endpointslice -o yaml --show-managed-fields`
    /// prints it.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "addressType: {}\napiVersion: discovery.k8s.io/v1",
            self.address_type
        );
        if self.endpoints.is_empty() {
            y.push_str("endpoints: null\n");
        } else {
            y.push_str("endpoints:\n");
        }
        for e in &self.endpoints {
            let _ = writeln!(y, "- addresses:\n  - {}\n  conditions:", e.address);
            let mut any = false;
            for (key, value) in [
                ("ready", e.ready),
                ("serving", e.serving),
                ("terminating", e.terminating),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(y, "    {key}: {v}");
                    any = true;
                }
            }
            if !any {
                // `conditions: {}` is what an all-nil conditions block looks like.
                y.truncate(y.len() - 1);
                y.push_str(" {}\n");
            }
            if let Some(node) = &e.node_name {
                let _ = writeln!(y, "  nodeName: {node}");
            }
            let pod = format!("{}-5d8f7c9b4-{}", self.service, pod_suffix(&e.address));
            let _ = writeln!(
                y,
                "  targetRef:\n    kind: Pod\n    name: {pod}\n    namespace: {}\n    uid: {}",
                self.namespace,
                uid("Pod", &self.namespace, &pod)
            );
            if let Some(zone) = &e.zone {
                let _ = writeln!(y, "  zone: {zone}");
            }
        }
        let _ = writeln!(y, "kind: EndpointSlice\nmetadata:");
        let _ = writeln!(
            y,
            "  annotations:\n    endpoints.kubernetes.io/last-change-trigger-time: \"{UPDATED}\""
        );
        let _ = writeln!(y, "  creationTimestamp: \"{CREATED}\"");
        let _ = writeln!(y, "  generateName: {}-\n  generation: 3", self.service);
        let _ = writeln!(
            y,
            "  labels:\n    app.kubernetes.io/name: {svc}\n    \
             endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n    \
             kubernetes.io/service-name: {svc}",
            svc = self.service
        );
        let _ = writeln!(
            y,
            "  managedFields:\n  - apiVersion: discovery.k8s.io/v1\n    fieldsType: FieldsV1\n    \
             fieldsV1:\n      f:addressType: {{}}\n      f:endpoints: {{}}\n      f:metadata:\n        \
             f:annotations:\n          .: {{}}\n          \
             f:endpoints.kubernetes.io/last-change-trigger-time: {{}}\n        \
             f:generateName: {{}}\n        f:labels:\n          .: {{}}\n          \
             f:app.kubernetes.io/name: {{}}\n          \
             f:endpointslice.kubernetes.io/managed-by: {{}}\n          \
             f:kubernetes.io/service-name: {{}}\n        f:ownerReferences:\n          .: {{}}\n          \
             k:{{\"uid\":\"{owner}\"}}: {{}}\n      f:ports: {{}}\n    \
             manager: kube-controller-manager\n    operation: Update\n    time: \"{UPDATED}\"",
            owner = uid("Service", &self.namespace, &self.service)
        );
        let _ = writeln!(y, "  name: {}\n  namespace: {}", self.name, self.namespace);
        let _ = writeln!(
            y,
            "  ownerReferences:\n  - apiVersion: v1\n    blockOwnerDeletion: true\n    \
             controller: true\n    kind: Service\n    name: {}\n    uid: {}",
            self.service,
            uid("Service", &self.namespace, &self.service)
        );
        let _ = writeln!(y, "  resourceVersion: \"{}\"", next_resource_version());
        let _ = writeln!(
            y,
            "  uid: {}",
            uid("EndpointSlice", &self.namespace, &self.name)
        );
        if self.ports.is_empty() {
            y.push_str("ports: null\n");
        } else {
            y.push_str("ports:\n");
        }
        for p in &self.ports {
            let name = if p.name.is_empty() {
                "\"\"".to_owned()
            } else {
                p.name.clone()
            };
            let _ = writeln!(
                y,
                "- name: {name}\n  port: {}\n  protocol: {}",
                p.port, p.protocol
            );
        }
        y
    }
}

/// Pod-name suffixes like the ReplicaSet controller's (`x2x7k`), stable per address.
fn pod_suffix(address: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = DefaultHasher::new();
    address.hash(&mut h);
    let mut v = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(v % ALPHABET.len() as u64) as usize];
            v /= ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

/// A `v1` Node, as the kubelet registers it: the well-known topology labels and
/// its addresses (the first `InternalIP`s, then a `Hostname`).
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// `topology.kubernetes.io/zone`, when set.
    pub zone: Option<String>,
    /// `InternalIP` addresses, written as given.
    pub internal_ips: Vec<String>,
}

impl Node {
    /// A Node with no zone and no address yet.
    pub fn new(name: &str) -> Self {
        Node {
            name: name.to_owned(),
            zone: None,
            internal_ips: Vec::new(),
        }
    }

    /// Sets the `topology.kubernetes.io/zone` label.
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }

    /// Adds an `InternalIP` address.
    pub fn internal_ip(mut self, ip: impl ToString) -> Self {
        self.internal_ips.push(ip.to_string());
        self
    }

    /// The Node as `kubectl get node -o yaml` prints it (status trimmed to the
    /// fields a proxy reads, plus a Ready condition).
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: v1\nkind: Node\nmetadata:");
        let _ = writeln!(
            y,
            "  annotations:\n    node.alpha.kubernetes.io/ttl: \"0\"\n    \
             volumes.kubernetes.io/controller-managed-attach-detach: \"true\""
        );
        let _ = writeln!(y, "  creationTimestamp: \"{CREATED}\"");
        let _ = writeln!(
            y,
            "  labels:\n    beta.kubernetes.io/arch: amd64\n    beta.kubernetes.io/os: linux\n    \
             kubernetes.io/arch: amd64\n    kubernetes.io/hostname: {name}\n    \
             kubernetes.io/os: linux",
            name = self.name
        );
        if let Some(zone) = &self.zone {
            let _ = writeln!(y, "    topology.kubernetes.io/zone: {zone}");
        }
        let _ = writeln!(y, "  name: {}", self.name);
        let _ = writeln!(y, "  resourceVersion: \"{}\"", next_resource_version());
        let _ = writeln!(y, "  uid: {}", uid("Node", "", &self.name));
        let _ = writeln!(
            y,
            "spec:\n  podCIDR: 10.244.0.0/24\n  podCIDRs:\n  - 10.244.0.0/24"
        );
        y.push_str("status:\n  addresses:\n");
        for ip in &self.internal_ips {
            let _ = writeln!(y, "  - address: {ip}\n    type: InternalIP");
        }
        let _ = writeln!(y, "  - address: {}\n    type: Hostname", self.name);
        let _ = writeln!(
            y,
            "  conditions:\n  - lastHeartbeatTime: \"{UPDATED}\"\n    \
             lastTransitionTime: \"{CREATED}\"\n    message: kubelet is posting ready status\n    \
             reason: KubeletReady\n    status: \"True\"\n    type: Ready"
        );
        y
    }
}

/// Joins documents into one multi-document YAML file.
pub fn documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter()
        .map(|d| d.as_ref())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Writes `contents` to `dir/name` atomically: the data goes to a temporary file
/// beside `dir` (outside the watched directory when possible, so a watcher never
/// sees it), which is then renamed into place. Returns the final path.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, Error> {
    let target = dir.join(name);
    let staging = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => dir,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".manifest-")
        .suffix(".tmp")
        .tempfile_in(staging)
        .map_err(|e| Error::io("creating a temporary manifest", staging, e))?;
    tmp.write_all(contents.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing a temporary manifest", tmp.path().to_owned(), e))?;
    match tmp.persist(&target) {
        Ok(_) => Ok(target),
        // A different filesystem: stage inside `dir` instead (a dotfile ending in
        // `.tmp`, which the proxy must ignore).
        Err(e) if e.error.raw_os_error() == Some(libc::EXDEV) && staging != dir => {
            let mut tmp = tempfile::Builder::new()
                .prefix(".manifest-")
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(|e| Error::io("creating a temporary manifest", dir, e))?;
            tmp.write_all(contents.as_bytes())
                .map_err(|e| Error::io("writing a temporary manifest", dir, e))?;
            tmp.persist(&target)
                .map_err(|e| Error::io("renaming a manifest into place", &target, e.error))?;
            Ok(target)
        }
        Err(e) => Err(Error::io(
            "renaming a manifest into place",
            &target,
            e.error,
        )),
    }
}

/// Deletes `dir/name` (a missing file is not an error).
pub fn remove(dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing a manifest", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_and_uuid_shaped() {
        let a = uid("Service", "demo", "hello");
        assert_eq!(a, uid("Service", "demo", "hello"));
        assert_ne!(a, uid("Service", "demo", "other"));
        let lens: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{a}");
    }

    #[test]
    fn empty_slice_has_null_endpoints() {
        let y = EndpointSlice::new("demo", "hello-abcde", "hello", AddressType::IPv4)
            .port("http", Protocol::Tcp, 8080)
            .to_yaml();
        assert!(y.contains("endpoints: null\n"), "{y}");
        assert!(y.contains("kubernetes.io/service-name: hello\n"), "{y}");
    }

    #[test]
    fn service_lists_families() {
        let y = Service::new("demo", "hello")
            .cluster_ip("10.96.0.10")
            .cluster_ip("fd00:96::10")
            .port("http", Protocol::Tcp, 80, 8080)
            .to_yaml();
        assert!(y.contains("  ipFamilies:\n  - IPv4\n  - IPv6\n"), "{y}");
        assert!(y.contains("  ipFamilyPolicy: PreferDualStack\n"), "{y}");
        assert!(y.contains("  clusterIP: 10.96.0.10\n"), "{y}");
    }

    /// The YAML must be what the API server hands out: it deserializes into the
    /// real Kubernetes types, with the values we asked for.
    #[test]
    fn yaml_deserializes_into_kubernetes_types() {
        use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

        let svc: core::Service = serde_norway::from_str(
            &Service::new("demo", "hello")
                .cluster_ip("10.96.0.10")
                .cluster_ip("fd00:96::10")
                .port("http", Protocol::Tcp, 80, 8080)
                .port("dns", Protocol::Udp, 53, 5353)
                .to_yaml(),
        )
        .expect("a Service");
        let spec = svc.spec.expect("spec");
        assert_eq!(
            spec.cluster_ips,
            Some(vec!["10.96.0.10".into(), "fd00:96::10".into()])
        );
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        assert!(svc.metadata.managed_fields.is_some());

        let slice: discovery::EndpointSlice = serde_norway::from_str(
            &EndpointSlice::new("demo", "hello-abcde", "hello", AddressType::IPv6)
                .endpoint(Endpoint::ready("fd00:244::1"))
                .endpoint(Endpoint::terminating("fd00:244::2"))
                .endpoint(Endpoint {
                    ready: None,
                    serving: None,
                    terminating: None,
                    ..Endpoint::ready("fd00:244::3")
                })
                .port("", Protocol::Tcp, 8080)
                .to_yaml(),
        )
        .expect("an EndpointSlice");
        assert_eq!(slice.address_type, "IPv6");
        let endpoints = slice.endpoints.expect("endpoints");
        assert_eq!(endpoints.len(), 3);
        let c = endpoints[1].conditions.as_ref().expect("conditions");
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        let c = endpoints[2].conditions.as_ref().expect("conditions");
        assert_eq!((c.ready, c.serving, c.terminating), (None, None, None));
        let ports = slice.ports.expect("ports");
        assert_eq!(ports[0].name.as_deref(), Some(""));
        assert_eq!(
            slice.metadata.labels.expect("labels")["kubernetes.io/service-name"],
            "hello"
        );

        let empty: discovery::EndpointSlice = serde_norway::from_str(
            &EndpointSlice::new("demo", "hello-abcde", "hello", AddressType::IPv4)
                .port("http", Protocol::Tcp, 8080)
                .to_yaml(),
        )
        .expect("an empty EndpointSlice (endpoints: null)");
        assert!(empty.endpoints.is_none_or(|e| e.is_empty()));
    }

    /// The north-south fields land where Kubernetes has them.
    #[test]
    fn external_service_yaml_deserializes_into_kubernetes_types() {
        use k8s_openapi::api::core::v1 as core;

        let svc: core::Service = serde_norway::from_str(
            &Service::new("demo", "lb")
                .cluster_ip("10.96.0.40")
                .port("http", Protocol::Tcp, 80, 8080)
                .port("dns", Protocol::Udp, 53, 5353)
                .service_type("LoadBalancer")
                .node_port("http", 30080)
                .external_ip("203.0.113.10")
                .external_traffic_policy("Local")
                .health_check_node_port(32000)
                .load_balancer_ingress("203.0.113.20")
                .load_balancer_ingress_mode("203.0.113.21", "Proxy")
                .to_yaml(),
        )
        .expect("a Service");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.health_check_node_port, Some(32000));
        assert_eq!(spec.external_ips, Some(vec!["203.0.113.10".into()]));
        let ports = spec.ports.expect("ports");
        assert_eq!(ports[0].node_port, Some(30080));
        assert_eq!(ports[1].node_port, None);
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .expect("status.loadBalancer.ingress");
        assert_eq!(ingress[0].ip.as_deref(), Some("203.0.113.20"));
        assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));
        assert_eq!(ingress[1].ip.as_deref(), Some("203.0.113.21"));
        assert_eq!(ingress[1].ip_mode.as_deref(), Some("Proxy"));

        let plain = Service::new("demo", "web")
            .cluster_ip("10.96.0.10")
            .port("http", Protocol::Tcp, 80, 8080)
            .to_yaml();
        assert!(plain.contains("  type: ClusterIP\n"), "{plain}");
        assert!(!plain.contains("externalTrafficPolicy"), "{plain}");
        assert!(!plain.contains("nodePort"), "{plain}");
    }

    #[test]
    fn node_yaml_deserializes_into_a_kubernetes_node() {
        let node: k8s_openapi::api::core::v1::Node = serde_norway::from_str(
            &Node::new("node-1")
                .zone("zone-a")
                .internal_ip("192.168.0.1")
                .to_yaml(),
        )
        .expect("a Node");
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
        let addresses = node.status.and_then(|s| s.addresses).expect("addresses");
        assert_eq!(
            (addresses[0].type_.as_str(), addresses[0].address.as_str()),
            ("InternalIP", "192.168.0.1")
        );
    }

    /// The demo's manifests in `examples/` are valid objects too.
    #[test]
    fn examples_deserialize() {
        use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

        let mut seen = 0;
        for entry in fs::read_dir(crate::examples_dir()).expect("examples/") {
            let path = entry.expect("a directory entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = fs::read_to_string(&path).expect("readable");
            let value: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("Service") => {
                    serde_norway::from_str::<core::Service>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                Some("EndpointSlice") => {
                    serde_norway::from_str::<discovery::EndpointSlice>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
            seen += 1;
        }
        assert!(
            seen >= 2,
            "expected the demo's manifests in examples/, found {seen}"
        );
    }
}
