//! Tests of the manifest parser: documents, kinds, and what is refused and why.

use std::net::IpAddr;

use rstest::rstest;

use super::*;
use crate::model::{
    AddressType, Index, IpMode, ObjectRef, Protocol, SourceId,
    convert::{ConvertWarning, SkipReason},
};
use crate::telemetry::{ConfigRejects, ConfigSource};

const KUBECTL_LIST: &str = include_str!("../testdata/kubectl-get-svc-endpointslice.yaml");

fn parse(text: &str) -> ParsedFile {
    parse_file(Path::new("m.yaml"), text).unwrap_or_else(|e| panic!("expected YAML, got {e}"))
}

fn problems(parsed: &ParsedFile) -> Vec<String> {
    parsed.problems.iter().map(ToString::to_string).collect()
}

/// A Service `shop/web` with the given `spec:` body (indented two spaces).
fn service_yaml(spec: &str) -> String {
    let head = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n";
    format!("{head}spec:\n{spec}")
}

fn ips(parsed: &ParsedFile) -> Vec<IpAddr> {
    parsed
        .services
        .iter()
        .flat_map(|s| s.cluster_ips.iter().copied())
        .collect()
}

#[test]
fn kubectl_list_fixture() {
    let parsed = parse(KUBECTL_LIST);
    assert_eq!(problems(&parsed), Vec::<String>::new());
    let services: Vec<String> = parsed.services.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        services,
        ["default/kubernetes", "default/web", "kube-system/kube-dns"]
    );
    let slices: Vec<String> = parsed.slices.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        slices,
        [
            "default/kubernetes",
            "default/web-7hq4m",
            "default/web-xk2p9",
            "kube-system/kube-dns-8fmnv"
        ]
    );
    assert_eq!(parsed.skipped.len(), 1);
    assert_eq!(parsed.skipped[0].reason, SkipReason::Headless);

    let web = &parsed.services[1];
    assert_eq!(
        web.cluster_ips,
        [
            "10.96.12.34".parse::<IpAddr>().unwrap(),
            "fd00:10:96::1234".parse().unwrap()
        ]
    );
    let v6 = &parsed.slices[1];
    assert_eq!(
        (v6.service_name.as_str(), v6.address_type),
        ("web", AddressType::IPv6)
    );
    let v4 = &parsed.slices[2];
    assert_eq!(v4.endpoints.len(), 3);
    assert_eq!(v4.endpoints[0].node_name.as_deref(), Some("worker-1"));
    assert_eq!(v4.endpoints[0].zone.as_deref(), Some("zone-a"));
    assert!(v4.endpoints[2].terminating && v4.endpoints[2].serving && !v4.endpoints[2].ready);

    // End to end through the Index.
    let mut idx = Index::default();
    idx.reset(SourceId::Manifests, parsed.services, parsed.slices);
    let state = idx.desired();
    let backends = |f: &str| -> Vec<String> {
        let (_, spec) = state
            .frontends
            .iter()
            .find(|(k, _)| k.to_string() == f)
            .unwrap();
        spec.backends.iter().map(ToString::to_string).collect()
    };
    assert_eq!(backends("10.96.0.1:443/TCP"), ["172.18.0.2:6443"]);
    assert_eq!(
        backends("10.96.12.34:80/TCP"),
        ["10.244.1.5:8080", "10.244.2.7:8080"]
    );
    assert_eq!(
        backends("10.96.12.34:9090/TCP"),
        ["10.244.1.5:9090", "10.244.2.7:9090"]
    );
    assert_eq!(
        backends("[fd00:10:96::1234]:80/TCP"),
        ["[fd00:10:244:1::5]:8080"]
    );
    assert_eq!(
        backends("10.96.0.10:53/UDP"),
        ["10.244.0.3:53", "10.244.0.4:53"]
    );
    assert_eq!(
        backends("10.96.0.10:53/TCP"),
        ["10.244.0.3:53", "10.244.0.4:53"]
    );
    assert_eq!(
        backends("10.96.0.10:9153/TCP"),
        ["10.244.0.3:9153", "10.244.0.4:9153"]
    );
    assert_eq!(
        backends("[fd00:10:96::1234]:9090/TCP"),
        ["[fd00:10:244:1::5]:9090"]
    );
    assert_eq!(state.frontends.len(), 8);
}

/// `prune` is a safety net, not a requirement: k8s-openapi reads kubectl's
/// full output, server-set fields included.
#[test]
fn kubectl_list_fixture_decodes_unpruned() {
    let list: Value = serde_norway::from_str(KUBECTL_LIST).unwrap();
    let items = list["items"].as_array().unwrap();
    for item in items {
        match item["kind"].as_str().unwrap() {
            "Service" => drop(serde_json::from_value::<core::Service>(item.clone()).unwrap()),
            "EndpointSlice" => {
                drop(serde_json::from_value::<discovery::EndpointSlice>(item.clone()).unwrap())
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    assert_eq!(items.len(), 8);
}

#[rstest]
#[case::empty("")]
#[case::only_separators("---\n---\n")]
#[case::only_comments("# nothing here\n")]
fn empty_file_has_no_objects(#[case] text: &str) {
    assert_eq!(parse(text), ParsedFile::default());
}

#[rstest]
#[case::not_yaml("apiVersion: v1\nkind: Service\n  metadata: {name: web\n")]
#[case::tab_indentation("kind: Service\nspec:\n\tports: []\n")]
#[case::truncated_in_quoted_string("apiVersion: v1\nkind: Service\nmetadata:\n  name: \"we")]
#[case::truncated_flow_mapping(
    "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Service, metadata: {name: web"
)]
#[case::error_in_a_later_document(
    concat!(
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata: {name: a}\n",
        "spec: {clusterIP: 10.96.0.1}\n",
        "---\n",
        "kind: [\n",
    )
)]
fn invalid_yaml_rejects_the_whole_file(#[case] text: &str) {
    let err = parse_file(Path::new("/etc/proxy/m.yaml"), text).unwrap_err();
    assert!(matches!(err, ManifestError::Yaml { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("/etc/proxy/m.yaml: not valid YAML: "),
        "{err}"
    );
}

#[test]
fn multi_document_with_empty_documents() {
    let text = concat!(
        "---\n",
        "---\n",
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata: {name: a}\n",
        "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
        "---\n",
        "\n",
        "---\n",
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata: {name: b}\n",
        "spec: {clusterIP: 10.96.0.2}\n",
    );
    let parsed = parse(text);
    assert_eq!(problems(&parsed), Vec::<String>::new());
    assert_eq!(
        ips(&parsed),
        [
            "10.96.0.1".parse::<IpAddr>().unwrap(),
            "10.96.0.2".parse().unwrap()
        ]
    );
    assert_eq!(parsed.services[0].ports[0].protocol, Protocol::Tcp);
    assert_eq!(parsed.services[0].id, ObjectRef::new("default", "a"));
}

/// One bad object is reported and left out; the file's other objects stay.
#[rstest]
#[case::unknown_kind(
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    "m.yaml: document 1: unknown kind Deployment (apiVersion apps/v1)"
)]
#[case::core_kind_wrong_group(
    "apiVersion: v1\nkind: EndpointSlice\nmetadata: {name: web}\n",
    "m.yaml: document 1: unknown kind EndpointSlice (apiVersion v1)"
)]
#[case::beta_slice(
    "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n",
    "m.yaml: document 1: unknown kind EndpointSlice (apiVersion discovery.k8s.io/v1beta1)"
)]
#[case::no_api_version(
    "kind: Service\n",
    "m.yaml: document 1: unknown kind Service (apiVersion <none>)"
)]
#[case::no_kind(
    "apiVersion: v1\nmetadata: {name: web}\n",
    "m.yaml: document 1: has no kind"
)]
#[case::scalar("just a string\n", "m.yaml: document 1: not a mapping")]
#[case::sequence("- a\n- b\n", "m.yaml: document 1: not a mapping")]
#[case::invalid_ip(
    &service_yaml("  clusterIP: 10.96.0.300\n"),
    "m.yaml: Service shop/web: invalid clusterIP \"10.96.0.300\""
)]
#[case::invalid_second_ip(
    &service_yaml("  clusterIP: 10.96.0.3\n  clusterIPs: [10.96.0.3, 'fd00::zz']\n"),
    "m.yaml: Service shop/web: invalid clusterIP \"fd00::zz\""
)]
#[case::port_out_of_range(
    &service_yaml("  clusterIP: 10.96.0.3\n  ports: [{name: http, port: 65536}]\n"),
    "m.yaml: Service shop/web: port 65536 (\"http\") is outside 1..=65535"
)]
#[case::port_zero(
    &service_yaml("  clusterIP: 10.96.0.3\n  ports: [{name: http, port: 0}]\n"),
    "m.yaml: Service shop/web: port 0 (\"http\") is outside 1..=65535"
)]
#[case::no_cluster_ip(
    &service_yaml("  ports: [{port: 80}]\n"),
    "m.yaml: Service shop/web: has no clusterIP"
)]
#[case::empty_cluster_ip(
    &service_yaml("  clusterIP: ''\n"),
    "m.yaml: Service shop/web: has no clusterIP"
)]
#[case::no_spec(
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n",
    "m.yaml: Service shop/web: has no clusterIP"
)]
#[case::no_name(
    "apiVersion: v1\nkind: Service\nspec: {clusterIP: 10.96.0.3}\n",
    "m.yaml: Service default/<unnamed>: has no metadata.name"
)]
#[case::schema_mismatch(
    &service_yaml("  clusterIP: 10.96.0.3\n  ports: [{port: http}]\n"),
    "m.yaml: Service shop/web: cannot decode: invalid type: string \"http\", expected i32"
)]
#[case::non_string_key(
    "? [a, b]\n: c\nkind: Service\n",
    "m.yaml: document 1: cannot decode: key must be a string"
)]
fn bad_object_is_a_problem(#[case] bad: &str, #[case] want: &str) {
    let good = concat!(
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata: {name: ok, namespace: shop}\n",
        "spec: {clusterIP: 10.96.0.1}\n",
    );
    let parsed = parse(&format!("{bad}\n---\n{good}"));
    assert_eq!(problems(&parsed), [want]);
    assert!(!parsed.problems[0].is_warning());
    assert_eq!(parsed.services.len(), 1, "the good object is kept");
    assert_eq!(parsed.services[0].id, ObjectRef::new("shop", "ok"));
}

#[rstest]
#[case::headless(
    &service_yaml("  clusterIP: None\n  clusterIPs: [None]\n"),
    SkipReason::Headless
)]
#[case::headless_clusterip_only(&service_yaml("  clusterIP: None\n"), SkipReason::Headless)]
#[case::external_name(
    &service_yaml("  type: ExternalName\n  externalName: db.example.com\n"),
    SkipReason::ExternalName
)]
#[case::fqdn_slice(
    concat!(
        "apiVersion: discovery.k8s.io/v1\n",
        "kind: EndpointSlice\n",
        "metadata: {name: ext-1, labels: {kubernetes.io/service-name: ext}}\n",
        "addressType: FQDN\n",
        "endpoints: [{addresses: [db.example.com]}]\n",
    ),
    SkipReason::FqdnAddressType
)]
fn skipped_quietly(#[case] text: &str, #[case] reason: SkipReason) {
    let parsed = parse(text);
    assert_eq!(problems(&parsed), Vec::<String>::new());
    assert!(parsed.services.is_empty() && parsed.slices.is_empty());
    assert_eq!(
        parsed.skipped.iter().map(|s| s.reason).collect::<Vec<_>>(),
        [reason]
    );
}

#[test]
fn slice_without_service_name_label_is_a_warning() {
    let text = concat!(
        "apiVersion: discovery.k8s.io/v1\n",
        "kind: EndpointSlice\n",
        "metadata: {name: orphan, namespace: shop}\n",
        "addressType: IPv4\n",
        "endpoints: [{addresses: [10.1.0.5]}]\n",
    );
    let parsed = parse(text);
    assert!(parsed.slices.is_empty());
    assert_eq!(
        problems(&parsed),
        ["m.yaml: EndpointSlice shop/orphan: skipped: no kubernetes.io/service-name label"]
    );
    assert!(parsed.problems[0].is_warning());
}

#[test]
fn sctp_port_skipped_rest_kept() {
    let parsed = parse(&service_yaml(concat!(
        "  clusterIP: 10.96.0.3\n",
        "  ports:\n",
        "  - {name: http, port: 80, protocol: TCP}\n",
        "  - {name: sig, port: 3868, protocol: SCTP}\n",
        "  - {name: dns, port: 53, protocol: UDP}\n",
    )));
    assert_eq!(
        problems(&parsed),
        ["m.yaml: Service shop/web: port 3868 (\"sig\") skipped: unsupported protocol SCTP"]
    );
    assert!(parsed.problems[0].is_warning());
    let ports: Vec<(&str, u16, Protocol)> = parsed.services[0]
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [("http", 80, Protocol::Tcp), ("dns", 53, Protocol::Udp)]
    );
}

#[test]
fn dual_stack_cluster_ips() {
    let parsed = parse(&service_yaml(concat!(
        "  clusterIP: 10.96.0.3\n",
        "  clusterIPs: [10.96.0.3, 'fd00:96::3']\n",
        "  ipFamilies: [IPv4, IPv6]\n",
        "  ipFamilyPolicy: RequireDualStack\n",
    )));
    assert_eq!(
        ips(&parsed),
        [
            "10.96.0.3".parse::<IpAddr>().unwrap(),
            "fd00:96::3".parse().unwrap()
        ]
    );
}

#[test]
fn ipv6_primary_cluster_ip() {
    let parsed = parse(&service_yaml("  clusterIP: 'fd00:96::3'\n"));
    assert_eq!(ips(&parsed), ["fd00:96::3".parse::<IpAddr>().unwrap()]);
}

#[test]
fn list_items_are_positioned_in_problems() {
    let text = concat!(
        "apiVersion: v1\n",
        "kind: List\n",
        "items:\n",
        "- apiVersion: v1\n",
        "  kind: ConfigMap\n",
        "  metadata: {name: c}\n",
        "- apiVersion: v1\n",
        "  kind: Service\n",
        "  metadata: {name: a}\n",
        "  spec: {clusterIP: 10.96.0.1}\n",
        "- apiVersion: v1\n",
        "  kind: List\n",
        "  items: []\n",
        "metadata:\n",
        "  resourceVersion: \"\"\n",
    );
    let parsed = parse(text);
    assert_eq!(
        problems(&parsed),
        [
            "m.yaml: document 1 item 1: unknown kind ConfigMap (apiVersion v1)",
            "m.yaml: document 1 item 3: a List inside a List is not supported",
        ]
    );
    assert_eq!(parsed.services.len(), 1);
}

#[rstest]
#[case::empty_items("apiVersion: v1\nkind: List\nitems: []\n", &[])]
#[case::null_items("apiVersion: v1\nkind: List\nitems:\n", &[])]
#[case::no_items("apiVersion: v1\nkind: List\n", &[])]
#[case::items_not_a_list(concat!(
    "apiVersion: v1\n",
    "kind: List\n",
    "items: {a: b}\n",
), &["m.yaml: document 1: items is not a list"])]
fn list_shapes(#[case] text: &str, #[case] want: &[&str]) {
    let parsed = parse(text);
    assert_eq!(problems(&parsed), want);
    assert!(parsed.services.is_empty());
}

#[test]
fn bad_endpoint_dropped_others_kept() {
    let text = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: nope}
- {name: sig, port: 3868, protocol: SCTP}
endpoints:
- addresses: [10.1.0.5]
- addresses: [not-an-ip]
- addresses: ['fd00::5']
- addresses: [10.1.0.6, 10.1.0.99]
  conditions: {ready: false, serving: true, terminating: true}
";
    let parsed = parse(text);
    assert_eq!(
        problems(&parsed),
        [
            "m.yaml: EndpointSlice shop/web-1: port \"nope\" skipped: has no port number",
            "m.yaml: EndpointSlice shop/web-1: port 3868 (\"sig\") skipped: unsupported protocol SCTP",
            "m.yaml: EndpointSlice shop/web-1: endpoint \"not-an-ip\" skipped: not an IP address",
            "m.yaml: EndpointSlice shop/web-1: endpoint \"fd00::5\" skipped: not an IPv4 address",
        ]
    );
    assert!(parsed.problems.iter().all(ManifestError::is_warning));
    assert!(matches!(
        &parsed.problems[2],
        ManifestError::Warning { warning, .. }
            if matches!(**warning, ConvertWarning::EndpointBadAddress { .. })
    ));
    let slice = &parsed.slices[0];
    let addrs: Vec<String> = slice
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, ["10.1.0.5", "10.1.0.6"]);
    assert_eq!(slice.ports.len(), 1);
}

#[test]
fn problem_names_the_file() {
    let err = parse_file(
        Path::new("/srv/manifests/web.yaml"),
        "kind: Pod\napiVersion: v1\n",
    )
    .unwrap()
    .problems
    .remove(0);
    assert_eq!(err.file(), Path::new("/srv/manifests/web.yaml"));
    assert_eq!(
        err.to_string(),
        "/srv/manifests/web.yaml: document 1: unknown kind Pod (apiVersion v1)"
    );
}

/// Fields the proxy does not read cannot reject an object.
#[test]
fn unread_fields_are_not_validated() {
    let text = concat!(
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata:\n",
        "  name: web\n",
        "  creationTimestamp: yesterday\n",
        "  managedFields: 7\n",
        "spec: {clusterIP: 10.96.0.3}\n",
        "status: {loadBalancer: oops}\n",
    );
    let parsed = parse(text);
    assert_eq!(problems(&parsed), Vec::<String>::new());
    assert_eq!(parsed.services.len(), 1);
}

/// `status.loadBalancer.ingress` is read, `ipMode` too (LoadBalancer IPs are
/// frontends);
/// the rest of `status` is not.
#[test]
fn load_balancer_ingress_ips_are_read_from_status() {
    let text = concat!(
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata: {name: lb}\n",
        "spec: {type: LoadBalancer, clusterIP: 10.96.0.3, ports: [{port: 80, nodePort: 30080}]}\n",
        "status:\n",
        "  conditions: oops\n",
        "  loadBalancer:\n",
        "    ingress:\n",
        "    - ip: 203.0.113.20\n",
        "      ipMode: VIP\n",
        "    - ip: 203.0.113.21\n",
        "      ipMode: Proxy\n",
    );
    let parsed = parse(text);
    assert_eq!(problems(&parsed), Vec::<String>::new());
    let read: Vec<(IpAddr, IpMode)> = parsed.services[0]
        .load_balancer_ips
        .iter()
        .map(|lb| (lb.addr, lb.mode))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        read,
        [
            (ip("203.0.113.20"), IpMode::Vip),
            (ip("203.0.113.21"), IpMode::Proxy)
        ]
    );
}

#[test]
fn a_manifest_problem_counts_under_its_reason() {
    let rejects = ConfigRejects::default();
    let yaml = ManifestError::Yaml {
        file: PathBuf::from("a.yaml"),
        reason: "bad indent".into(),
    };
    rejects.record(ConfigSource::Manifests, yaml.label());
    rejects.record(ConfigSource::Manifests, yaml.label());
    assert_eq!(rejects.count(ConfigSource::Manifests, "invalid_yaml"), 2);
    assert_eq!(rejects.count(ConfigSource::Kubernetes, "invalid_yaml"), 0);
}
