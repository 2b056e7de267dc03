//! `proxy inspect` against a real dataplane: the daemon programs two Services
//! (one with ClientIP affinity), a client connects, and every subcommand's
//! JSON names what the kernel holds. It keeps working once the daemon has
//! stopped (SIGTERM leaves the pins), and a pin path with nothing pinned is a
//! clear error with a non-zero exit. `status` says the mode in force: eBPF
//! with pinned maps, userspace with none but VIP routes of ours.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
};

use common::*;
use proxy_tests::{
    manifest::{AddressType, Protocol, Service},
    proxy_bin,
};
use serde_json::Value;

const API: &str = "api";
const API_VIP4: &str = "10.96.0.11";
const AFFINITY_TIMEOUT: u64 = 3600;

/// `proxy inspect ARGS --pin-path PIN --output json`, run to completion.
fn run_inspect(pin: &Path, args: &[&str]) -> Output {
    Command::new(proxy_bin())
        .arg("inspect")
        .args(args)
        .arg("--pin-path")
        .arg(pin)
        .args(["--output", "json"])
        .output()
        .unwrap_or_else(|e| panic!("running proxy inspect {args:?}: {e}"))
}

/// [`run_inspect`], which must succeed and print JSON.
fn inspect(pin: &Path, args: &[&str]) -> Value {
    let out = run_inspect(pin, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "expected `proxy inspect {args:?}` to succeed, it exited with {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("`proxy inspect {args:?}` printed no JSON ({e}):\n{stdout}"))
}

/// The entry of `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON list, got {list}"))
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("expected an entry with {key} = {value:?} in {list:#}"))
}

/// Backend `addr:port` strings of a `services` entry's slots.
fn slot_backends(service: &Value) -> BTreeSet<String> {
    service["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots in {service:#}"))
        .iter()
        .map(|s| {
            let addr = s["addr"]
                .as_str()
                .unwrap_or_else(|| panic!("slot without a backend: {s}"));
            let port = s["port"]
                .as_u64()
                .unwrap_or_else(|| panic!("slot without a port: {s}"));
            sock(addr, u16::try_from(port).expect("a port")).to_string()
        })
        .collect()
}

/// `web` with ClientIP affinity (both families), and `api` (IPv4, one endpoint).
fn start() -> Fixture {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write(
        "web-service.yaml",
        &Service::new(NAMESPACE, WEB)
            .cluster_ip(WEB_VIP4)
            .cluster_ip(WEB_VIP6)
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
            .session_affinity(AFFINITY_TIMEOUT as u32)
            .to_yaml(),
    );
    f.write_web_slices(&BACKENDS_V4, &BACKENDS_V6);
    f.write(
        "api-service.yaml",
        &service(API, &[API_VIP4], TCP_PORT, UDP_PORT),
    );
    f.write(
        "api-slice.yaml",
        &slice(
            API,
            &slice_name(API, AddressType::IPv4),
            AddressType::IPv4,
            &BACKENDS_V4[..1],
        ),
    );
    f.start_proxy();
    f.wait_ready();
    let api = sock(API_VIP4, TCP_PORT);
    f.wait_for(PROPAGATION, &format!("{api} to be served"), || {
        Kind::Tcp.request(api, PROBE).is_ok()
    });
    f
}

/// `services` names `web`'s frontends and lists their backends, whether or
/// not the daemon still runs. Returns the whole list.
fn assert_web_named(pin: &Path) -> Value {
    let services = inspect(pin, &["services"]);
    let list = &services["services"];
    let web4 = find(list, "frontend", &format!("{WEB_VIP4}:{TCP_PORT}/TCP"));
    assert_eq!(
        web4["service"],
        serde_json::json!({"namespace": NAMESPACE, "name": WEB, "port_name": "http"}),
        "web's IPv4 TCP frontend: {web4:#}"
    );
    assert_eq!(web4["vip"], WEB_VIP4);
    assert_eq!(web4["affinity_timeout_seconds"], AFFINITY_TIMEOUT);
    assert_eq!(web4["traffic_policy"], "Cluster");
    assert_eq!(web4["slot_count"], 3);
    assert_eq!(
        slot_backends(web4),
        names(&BACKENDS_V4, TCP_TARGET).into_iter().collect(),
        "web's IPv4 TCP slots: {web4:#}"
    );
    let web6 = find(list, "frontend", &format!("[{WEB_VIP6}]:{UDP_PORT}/UDP"));
    assert_eq!(web6["service"]["port_name"], "dns");
    assert_eq!(
        slot_backends(web6),
        names(&BACKENDS_V6, UDP_TARGET).into_iter().collect()
    );
    services
}

/// [`assert_web_named`], and `api` beside it: filters, shared backends.
fn assert_services_named(pin: &Path) {
    let services = assert_web_named(pin);
    let api = find(
        &services["services"],
        "frontend",
        &format!("{API_VIP4}:{TCP_PORT}/TCP"),
    );
    assert_eq!(api["service"]["name"], API);
    assert_eq!(api["affinity_timeout_seconds"], Value::Null);

    // Filters.
    let only_api = inspect(
        pin,
        &["services", "--service", &format!("{NAMESPACE}/{API}")],
    );
    let frontends: BTreeSet<&str> = only_api["services"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["frontend"].as_str())
        .collect();
    assert_eq!(
        frontends,
        BTreeSet::from(["10.96.0.11:53/UDP", "10.96.0.11:80/TCP"]),
        "--service {NAMESPACE}/{API}"
    );
    let on_vip6 = inspect(pin, &["services", "--vip", WEB_VIP6]);
    assert_eq!(
        on_vip6["services"].as_array().map(Vec::len),
        Some(2),
        "--vip {WEB_VIP6}: {on_vip6:#}"
    );

    // 10.244.1.1:8080 is behind web's and api's TCP ports.
    let backends = inspect(pin, &["backends"]);
    let shared = backends["backends"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|b| b["addr"] == BACKENDS_V4[0] && b["port"] == TCP_TARGET)
        .unwrap_or_else(|| panic!("no backend {}:{TCP_TARGET} in {backends:#}", BACKENDS_V4[0]));
    assert_eq!(shared["frontends"], 2, "{shared}");
    assert_eq!(shared["protocol"], "TCP");
}

fn assert_affinity_entry(pin: &Path) {
    let affinity = inspect(
        pin,
        &["affinity", "--service", &format!("{NAMESPACE}/{WEB}")],
    );
    let entry = find(
        &affinity["affinity"],
        "frontend",
        &format!("{WEB_VIP4}:{TCP_PORT}/TCP"),
    );
    assert_eq!(entry["service"]["name"], WEB);
    assert_eq!(entry["timeout_seconds"], AFFINITY_TIMEOUT);
    assert_eq!(entry["expired"], false, "{entry:#}");
    let backend = entry["backend"].as_str().unwrap_or_default().to_owned();
    assert!(
        names(&BACKENDS_V4, TCP_TARGET).contains(&backend),
        "the affinity entry's backend {backend:?} is none of web's: {entry:#}"
    );
    assert!(
        entry["age_ms"]
            .as_u64()
            .is_some_and(|age| age < AFFINITY_TIMEOUT * 1000),
        "{entry:#}"
    );
}

fn assert_translated(pin: &Path) {
    let stats = inspect(pin, &["stats"]);
    let translated = find(&stats["stats"], "reason", "translated");
    assert!(
        translated["count"].as_u64().is_some_and(|n| n > 0),
        "expected a non-zero translated count: {stats:#}"
    );
}

#[test]
fn inspect_names_what_the_daemon_programmed_and_works_after_it_stops() {
    let mut f = start();
    let pin = f.sandbox.pin_path();
    // A few connections through the sticky Service.
    tally(Kind::Tcp, sock(WEB_VIP4, TCP_PORT), 3);

    assert_services_named(&pin);
    assert_affinity_entry(&pin);
    assert_translated(&pin);

    let status = inspect(&pin, &["status"]);
    assert_eq!(status["mode"], "ebpf");
    assert_eq!(status["datapath"], "socket-lb");
    assert_eq!(status["pin_path"], pin.display().to_string());
    assert_eq!(
        status["vip_routes"],
        serde_json::json!([]),
        "everything fits the maps: no VIP served from userspace"
    );
    let links = status["links"].as_array().expect("a list of links");
    assert_eq!(links.len(), 8, "expected the 8 socket hooks: {status:#}");
    let cgroup = f
        .sandbox
        .cgroup_path()
        .canonicalize()
        .expect("the sandbox cgroup");
    for link in links {
        assert!(
            link["link_id"].is_u64() && link["program_id"].is_u64(),
            "{link:#}"
        );
        assert!(
            link["attach_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("cgroup_")),
            "{link:#}"
        );
        assert_eq!(
            link["cgroup_path"],
            cgroup.display().to_string(),
            "{link:#}"
        );
    }
    let connect4 = find(&status["links"], "program", "sock_connect4");
    assert_eq!(connect4["attach_type"], "cgroup_inet4_connect");
    let svc4 = find(&status["maps"], "name", "SVC_V4");
    assert!(
        svc4["entries"].as_u64().is_some_and(|n| n > 0) && svc4["max_entries"].as_u64() > Some(0),
        "{svc4:#}"
    );
    let names_map = find(&status["maps"], "name", "SVC_NAMES");
    assert_eq!(names_map["present"], true);
    assert_eq!(
        names_map["entries"], 6,
        "one name per frontend: {names_map:#}"
    );

    let conntrack = inspect(&pin, &["conntrack"]);
    // The conntrack maps are pinned; only the tc path writes them, and no
    // device here carries it (the sandbox's veth has no address).
    assert_eq!(conntrack["map_present"], true, "{conntrack:#}");
    assert_eq!(conntrack["flows"], serde_json::json!([]));

    // The table is for people: check it names the Service too.
    let table = Command::new(proxy_bin())
        .args(["inspect", "services", "--pin-path"])
        .arg(&pin)
        .output()
        .expect("running proxy inspect services");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("pxt/web:http")
            && table
                .lines()
                .next()
                .is_some_and(|h| h.starts_with("FRONTEND")),
        "expected a table naming pxt/web:http:\n{table}"
    );

    // Removing a Service removes its frontends' names with them.
    f.remove("api-service.yaml");
    f.remove("api-slice.yaml");
    f.wait_for(
        PROPAGATION,
        "api's frontends and names to be removed",
        || {
            let status = inspect(&pin, &["status"]);
            find(&status["maps"], "name", "SVC_NAMES")["entries"] == 4
                && inspect(&pin, &["services", "--vip", API_VIP4])["services"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
        },
    );
    f.assert_proxy_running();

    let exit = f.proxy().stop().expect("stopping the proxy");
    assert!(exit.success(), "the proxy exited with {exit} on SIGTERM");
    assert_web_named(&pin);
    assert_affinity_entry(&pin);
    assert_translated(&pin);
}

/// `maglev` shows the table size and seed the daemon was given and, for two
/// ExternalIPs of three endpoints, one table per port (both addresses share
/// it, as a NodePort's frontends on several node addresses do) whose entries
/// are split ⌊M/N⌋ / ⌈M/N⌉ between the three; a ClusterIP-only Service has
/// none. The `--vip` filter keeps that frontend's tables, the table view
/// names them.
#[test]
fn maglev_shows_each_external_frontends_share_of_its_table() {
    const EXT: &str = "ext";
    const EXTERNAL_IP: &str = "203.0.113.50";
    const EXTERNAL_IP_2: &str = "203.0.113.51";
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    f.write(
        "ext-service.yaml",
        &Service::new(NAMESPACE, EXT)
            .cluster_ip("10.96.0.12")
            .port("http", Protocol::Tcp, TCP_PORT, TCP_TARGET)
            .port("dns", Protocol::Udp, UDP_PORT, UDP_TARGET)
            .external_ip(EXTERNAL_IP)
            .external_ip(EXTERNAL_IP_2)
            .to_yaml(),
    );
    f.write(
        "ext-slice.yaml",
        &slice(
            EXT,
            &slice_name(EXT, AddressType::IPv4),
            AddressType::IPv4,
            &BACKENDS_V4,
        ),
    );
    f.start_proxy_with(&["--maglev-table-size", "251", "--maglev-seed", "7"]);
    f.wait_ready();
    let pin = f.sandbox.pin_path();
    f.wait_for(PROPAGATION, "the ExternalIP's Maglev tables", || {
        inspect(&pin, &["maglev"])["tables"]
            .as_array()
            .is_some_and(|t| t.len() == 2)
    });
    let view = inspect(&pin, &["maglev"]);
    assert_eq!(view["algorithm"], "maglev", "{view:#}");
    assert_eq!(view["table_size"], 251);
    assert_eq!(view["seed"], 7);
    assert_eq!(view["memory_bytes"], 2 * 4096);
    let mut frontends = BTreeSet::new();
    for table in view["tables"].as_array().expect("tables") {
        assert_eq!(table["service"]["name"], EXT, "{table:#}");
        assert_eq!(table["entries"], 251, "{table:#}");
        let shares: Vec<u64> = table["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["entries"].as_u64().expect("entries"))
            .collect();
        assert_eq!(shares.len(), 3, "{table:#}");
        assert_eq!(shares.iter().sum::<u64>(), 251, "{table:#}");
        assert!(shares.iter().all(|n| (83..=84).contains(n)), "{table:#}");
        for fe in table["frontends"].as_array().expect("frontends") {
            frontends.insert(fe.as_str().expect("a frontend").to_owned());
        }
    }
    assert_eq!(
        frontends,
        BTreeSet::from([
            format!("{EXTERNAL_IP}:{TCP_PORT}/TCP"),
            format!("{EXTERNAL_IP}:{UDP_PORT}/UDP"),
            format!("{EXTERNAL_IP_2}:{TCP_PORT}/TCP"),
            format!("{EXTERNAL_IP_2}:{UDP_PORT}/UDP")
        ])
    );
    for table in view["tables"].as_array().expect("tables") {
        assert_eq!(
            table["frontends"].as_array().map(Vec::len),
            Some(2),
            "{table:#}"
        );
    }
    // `status` counts the tables too (their memory: 4 KiB each).
    let status = inspect(&pin, &["status"]);
    let maglev_map = find(&status["maps"], "name", "MAGLEV");
    assert_eq!(maglev_map["entries"], 2, "{maglev_map:#}");
    let web_only = inspect(&pin, &["maglev", "--vip", WEB_VIP4]);
    assert_eq!(web_only["tables"], serde_json::json!([]), "{web_only:#}");
    let table = Command::new(proxy_bin())
        .args(["inspect", "maglev", "--vip", EXTERNAL_IP, "--pin-path"])
        .arg(&pin)
        .output()
        .expect("running proxy inspect maglev");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("algorithm: maglev  table size: 251  seed: 7")
            && table.contains("pxt/ext:http"),
        "expected the table to name the size, seed and Service:\n{table}"
    );
}

#[test]
fn a_pin_path_with_nothing_pinned_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pin = dir.path().join("not-pinned");
    for what in ["services", "status", "conntrack"] {
        let out = run_inspect(&pin, &[what]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "expected `proxy inspect {what}` on {} to fail, it exited with {}",
            pin.display(),
            out.status
        );
        assert!(
            stderr.contains("no pinned maps at") && stderr.contains(&pin.display().to_string()),
            "expected the error to name the pin path and say nothing is pinned; stderr:\n{stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout, got {:?}",
            out.stdout
        );
    }
}

/// The userspace mode pins nothing: `status` reports it from our VIP routes,
/// the other views say nothing is pinned.
#[test]
fn status_reports_the_userspace_mode_from_its_vip_routes() {
    let mut f = Fixture::with_web(Mode::Userspace);
    let pin = f.sandbox.pin_path();
    let status = inspect(&pin, &["status"]);
    assert_eq!(status["mode"], "userspace", "{status:#}");
    assert_eq!(status["datapath"], "userspace-proxy", "{status:#}");
    assert_eq!(status["links"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["maps"], serde_json::json!([]), "{status:#}");
    let routes: BTreeSet<&str> = status["vip_routes"]
        .as_array()
        .unwrap_or_else(|| panic!("expected a list of VIP routes: {status:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from([WEB_VIP4, WEB_VIP6]),
        "expected web's VIPs: {status:#}"
    );

    let table = Command::new(proxy_bin())
        .args(["inspect", "status", "--pin-path"])
        .arg(&pin)
        .output()
        .expect("running proxy inspect status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("mode:      userspace (userspace-proxy)"),
        "expected the table to name the userspace mode:\n{table}"
    );

    let out = run_inspect(&pin, &["services"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no pinned maps at"),
        "expected `inspect services` to say nothing is pinned; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.assert_proxy_running();
}

/// reliability.md item 17: the pin directory is the root's alone (0700), and
/// the handles `proxy inspect` and `proxy diff` read the maps through are
/// read-only: the kernel refuses a write through them, while the same write
/// through an ordinary handle (what the daemon holds) goes through.
#[test]
fn the_pin_directory_is_private_and_readers_cannot_write() {
    use std::os::unix::fs::MetadataExt as _;

    use aya::maps::{HashMap, Map, MapData};
    use proxy::dataplane::reader::PinnedMaps;
    use proxy_common::{LAYOUT_VERSION, ServiceName, names};

    let f = start();
    let pin = f.sandbox.pin_path();
    for dir in [pin.clone(), pin.join(format!("v{LAYOUT_VERSION}"))] {
        let meta = std::fs::metadata(&dir)
            .unwrap_or_else(|e| panic!("the pin directory {}: {e}", dir.display()));
        assert_eq!(
            (meta.mode() & 0o777, meta.uid()),
            (0o700, 0),
            "{} must be 0700 and the root's",
            dir.display()
        );
    }

    let maps_dir = pin.join(format!("v{LAYOUT_VERSION}")).join("maps");
    let hash = |data: MapData| -> HashMap<MapData, u32, ServiceName> {
        let map = Map::from_map_data(data).expect("a map");
        HashMap::try_from(map).expect("SVC_NAMES as a hash map")
    };
    let readers = PinnedMaps::new(&maps_dir);
    let mut read_only = hash(readers.require(names::SVC_NAMES).expect("SVC_NAMES pinned"));
    let key = read_only
        .keys()
        .next()
        .expect("one rev-NAT id with a name")
        .expect("reading SVC_NAMES' keys");
    let value = read_only.get(&key, 0).expect("its name");
    let err = read_only
        .insert(&key, &value, 0)
        .expect_err("a write through inspect's read-only handle must be refused");
    assert!(
        err.to_string().contains("update") || format!("{err:?}").contains("PermissionDenied"),
        "expected EPERM, got {err:?}"
    );
    // The same write through a read-write handle: allowed (so the refusal
    // above is the handle's, not the map's).
    let mut writable = hash(MapData::from_pin(maps_dir.join(names::SVC_NAMES)).expect("SVC_NAMES"));
    writable
        .insert(&key, &value, 0)
        .expect("rewriting an entry with its own value");
}
