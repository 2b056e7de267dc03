//! The tc programs on the node's devices, as the daemon manages them: `proxy
//! run --devices … --pod-devices …` inside a sandbox namespace with veths the
//! test creates. Checked through `proxy inspect status` and the pinned
//! `DEVICES`/`NODE_CFG` maps (no bpftool): both programs attached through tcx
//! links on the named device and on the pod devices (including one that
//! appears later, and dropped when it goes), the `DEVICES` flags and the SNAT
//! address; the links taken over in place by a daemon restarted after
//! `kill -9` (same link ids); a link detached by hand re-attached and counted
//! in `proxy_drift_repairs_total{kind="link"}`; and nothing left on the
//! devices after `proxy cleanup`. With `--socket-lb=false`, the socket hooks
//! a previous daemon attached are dropped and the devices get `CLUSTER_IP`.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData};
use common::*;
use proxy_common::{DeviceConfig, LAYOUT_VERSION, NodeConfig, device_flags, names, programs};
use proxy_tests::{ProxyProcess, ifindex, proxy_bin, wait_until};
use serde_json::Value;

const METRICS_ADDR: &str = "127.0.0.1:19259";
/// A short reconcile period, so new devices and repairs come quickly.
const RESYNC_MS: &str = "300";
/// A few reconcile periods.
const SETTLE: Duration = Duration::from_secs(10);

const EXT: &str = "tcext0";
const EXT_ADDR4: &str = "192.0.2.1";
const EXT_ADDR6: &str = "2001:db8:42::1";
const POD1: &str = "tcpod1";
const POD2: &str = "tcpod2";

fn args() -> Vec<&'static str> {
    vec![
        "--mode",
        "ebpf",
        "--devices",
        EXT,
        "--pod-devices",
        "tcpod*",
        "--resync-interval-ms",
        RESYNC_MS,
        "--metrics-bind-address",
        METRICS_ADDR,
    ]
}

fn start(f: &mut Fixture) {
    f.proxy = Some(
        ProxyProcess::start_with_args(
            &proxy_bin(),
            &f.sandbox,
            &f.sandbox.manifests_dir(),
            &args(),
        )
        .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();
}

/// [`start`], with the value `value` of [`args`] replaced by `with`.
fn start_replacing(f: &mut Fixture, value: &str, with: &'static str) {
    let mut args = args();
    let at = args
        .iter()
        .position(|a| *a == value)
        .unwrap_or_else(|| panic!("no {value} among {args:?}"));
    args[at] = with;
    f.proxy = Some(
        ProxyProcess::start_with_args(&proxy_bin(), &f.sandbox, &f.sandbox.manifests_dir(), &args)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_ready();
}

/// A veth pair, both ends in the sandbox, up; the peer is `x<name>`, which
/// no setting selects.
fn add_veth(f: &Fixture, name: &str) {
    f.sandbox
        .ip(&format!("link add {name} type veth peer name x{name}"))
        .unwrap_or_else(|e| panic!("adding {name}: {e}"));
    for dev in [name.to_owned(), format!("x{name}")] {
        f.sandbox
            .ip(&format!("link set {dev} up"))
            .unwrap_or_else(|e| panic!("setting {dev} up: {e}"));
    }
}

fn status(pin: &Path) -> Value {
    let out = Command::new(proxy_bin())
        .args(["inspect", "status", "--output", "json", "--pin-path"])
        .arg(pin)
        .output()
        .unwrap_or_else(|e| panic!("running proxy inspect status: {e}"));
    assert!(
        out.status.success(),
        "inspect status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("inspect status JSON: {e}"))
}

/// `(device, direction, program, link id)` of every attached tc link.
fn tc_links(pin: &Path) -> Vec<(String, String, String, u64)> {
    let status = status(pin);
    let mut out: Vec<_> = status["tc_links"]
        .as_array()
        .unwrap_or_else(|| panic!("no tc_links in {status:#}"))
        .iter()
        .filter(|l| l["attached"] == true)
        .map(|l| {
            (
                l["device"].as_str().unwrap_or("?").to_owned(),
                l["direction"].as_str().unwrap_or("?").to_owned(),
                l["program"].as_str().unwrap_or("?").to_owned(),
                l["link_id"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

fn devices_of(links: &[(String, String, String, u64)]) -> Vec<String> {
    let mut d: Vec<String> = links.iter().map(|l| l.0.clone()).collect();
    d.dedup();
    d
}

fn layout_dir(pin: &Path) -> PathBuf {
    pin.join(format!("v{LAYOUT_VERSION}"))
}

fn map(pin: &Path, name: &str) -> Map {
    let pin = layout_dir(pin).join("maps").join(name);
    let data = MapData::from_pin(&pin)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", pin.display()));
    Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn devices_map(pin: &Path) -> Vec<(u32, u32)> {
    let map: HashMap<MapData, u32, DeviceConfig> =
        HashMap::try_from(map(pin, names::DEVICES)).expect("DEVICES as a hash map");
    let mut out: Vec<(u32, u32)> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k, v.flags))
        .collect();
    out.sort();
    out
}

fn node_config(pin: &Path) -> NodeConfig {
    let array: Array<MapData, NodeConfig> =
        Array::try_from(map(pin, names::NODE_CFG)).expect("NODE_CFG as an array");
    array.get(&0, 0).expect("NODE_CFG[0]")
}

/// `proxy_drift_repairs_total{kind}` from /metrics (None when unreachable).
fn drift_repairs(kind: &str) -> Option<f64> {
    let addr: std::net::SocketAddr = METRICS_ADDR.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE).ok()?;
    stream.set_read_timeout(Some(REQUEST)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let series = format!("proxy_drift_repairs_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
}

/// `BPF_OBJ_GET` + `BPF_LINK_DETACH` on the link pinned at `pin`.
fn detach_link(pin: &Path) {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).expect("a pin path");
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: a valid `bpf_attr` for BPF_OBJ_GET; `path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let mut link_fd = fd as u32;
    // SAFETY: a valid `bpf_attr` for BPF_LINK_DETACH (its first member is the
    // link fd) on the fd just opened.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &mut link_fd as *mut u32,
            std::mem::size_of::<u32>(),
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours, from BPF_OBJ_GET above, and closed once.
    unsafe { libc::close(fd as i32) };
    assert!(rc == 0, "BPF_LINK_DETACH {}: {error}", pin.display());
}

/// How many programs are attached at `device`'s tcx hook `attach_type`
/// (`BPF_PROG_QUERY`, in this thread's network namespace: the sandbox's).
fn tcx_programs(device: &str, attach_type: u32) -> u32 {
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let mut query = Query {
        target_ifindex: ifindex(device),
        attach_type,
        ..Query::default()
    };
    // SAFETY: a valid `bpf_attr` for BPF_PROG_QUERY with no id buffers: the
    // kernel only writes `prog_cnt` (and the flags/revision) into `query`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut query as *mut Query,
            std::mem::size_of::<Query>(),
        )
    };
    assert!(
        rc == 0,
        "BPF_PROG_QUERY {device}: {}",
        std::io::Error::last_os_error()
    );
    query.prog_cnt
}

const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

#[test]
fn tc_programs_follow_the_devices_survive_restarts_and_drift_and_go_with_cleanup() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    add_veth(&f, EXT);
    f.sandbox
        .ip(&format!("addr add {EXT_ADDR4}/24 dev {EXT}"))
        .expect("an IPv4 address on the external device");
    f.sandbox
        .ip(&format!("-6 addr add {EXT_ADDR6}/64 dev {EXT} nodad"))
        .expect("an IPv6 address on the external device");
    add_veth(&f, POD1);
    start(&mut f);
    let pin = f.sandbox.pin_path();

    // Both programs on the named device and the pod device, nowhere else
    // (not on the peers, which match no setting, nor on the sandbox's veth).
    f.wait_for(STARTUP, "tc links on tcext0 and tcpod1", || {
        devices_of(&tc_links(&pin)) == [EXT, POD1]
    });
    let first = tc_links(&pin);
    let want: Vec<(&str, &str, &str)> = vec![
        (EXT, "egress", programs::TC_EGRESS),
        (EXT, "ingress", programs::TC_INGRESS),
        (POD1, "egress", programs::TC_EGRESS),
        (POD1, "ingress", programs::TC_INGRESS),
    ];
    let got: Vec<(&str, &str, &str)> = first
        .iter()
        .map(|l| (l.0.as_str(), l.1.as_str(), l.2.as_str()))
        .collect();
    assert_eq!(got, want, "{first:?}");
    for dev in [EXT, POD1] {
        assert_eq!(tcx_programs(dev, BPF_TCX_INGRESS), 1, "{dev} ingress");
        assert_eq!(tcx_programs(dev, BPF_TCX_EGRESS), 1, "{dev} egress");
    }
    assert_eq!(tcx_programs(&format!("x{POD1}"), BPF_TCX_INGRESS), 0);
    assert_eq!(
        devices_map(&pin),
        [(ifindex(EXT), 0), (ifindex(POD1), device_flags::CLUSTER_IP)]
    );
    let cfg = node_config(&pin);
    assert_eq!(
        Ipv4Addr::from(cfg.snat_v4.octets()),
        EXT_ADDR4.parse::<Ipv4Addr>().expect("v4")
    );
    assert_eq!(
        std::net::Ipv6Addr::from(cfg.snat_v6),
        EXT_ADDR6.parse::<std::net::Ipv6Addr>().expect("v6")
    );

    // The conntrack maps are pinned (the pass-through programs write none).
    let out = Command::new(proxy_bin())
        .args(["inspect", "conntrack", "--output", "json", "--pin-path"])
        .arg(&pin)
        .output()
        .expect("running proxy inspect conntrack");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ct: Value = serde_json::from_slice(&out.stdout).expect("conntrack JSON");
    assert_eq!(ct["map_present"], true, "{ct:#}");
    assert!(ct["flows"].is_array(), "{ct:#}");

    // A pod device that appears later is attached by the reconcile; once it
    // is gone, its links and DEVICES entry are dropped.
    add_veth(&f, POD2);
    f.wait_for(SETTLE, "tc links on the new pod device", || {
        devices_of(&tc_links(&pin)) == [EXT, POD1, POD2]
    });
    assert_eq!(tcx_programs(POD2, BPF_TCX_INGRESS), 1);
    let pod2 = ifindex(POD2);
    assert!(devices_map(&pin).contains(&(pod2, device_flags::CLUSTER_IP)));
    f.sandbox
        .ip(&format!("link del {POD2}"))
        .expect("deleting tcpod2");
    f.wait_for(SETTLE, "the vanished pod device's links dropped", || {
        status(&pin)["tc_links"]
            .as_array()
            .is_some_and(|l| l.len() == 4)
            && !devices_map(&pin).iter().any(|(i, _)| *i == pod2)
    });

    // kill -9, restart: the links are taken over in place (same link ids).
    let status_killed = f.proxy().kill().expect("killing the proxy");
    assert!(!status_killed.success());
    f.proxy = None;
    assert_eq!(tc_links(&pin), first, "the links outlive the daemon");
    start(&mut f);
    let log_path = f.proxy().log_path().to_path_buf();
    f.wait_for(
        STARTUP,
        "the restarted daemon to take the links over",
        || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("hooks attached")),
    );
    assert_eq!(tc_links(&pin), first, "taken over in place: same links");
    let log = f.log();
    assert!(
        !log.contains("drift repaired"),
        "a restart is no drift:\n{log}"
    );

    // Detached by hand: re-attached by the reconcile, and counted.
    let before = drift_repairs("link").expect("scraping /metrics");
    let link_pin = layout_dir(&pin)
        .join("links")
        .join(format!("tc-{}", ifindex(EXT)))
        .join(programs::TC_INGRESS);
    detach_link(&link_pin);
    assert_eq!(tcx_programs(EXT, BPF_TCX_INGRESS), 0, "detached");
    f.wait_for(SETTLE, "tc_ingress re-attached on tcext0", || {
        tcx_programs(EXT, BPF_TCX_INGRESS) == 1
            && tc_links(&pin)
                .iter()
                .any(|l| l.0 == EXT && l.2 == programs::TC_INGRESS)
    });
    f.wait_for(SETTLE, "the repair counted", || {
        drift_repairs("link").is_some_and(|n| n > before)
    });
    let log = f.log();
    assert!(
        log.lines().any(|l| l.contains("drift repaired")
            && l.contains(programs::TC_INGRESS)
            && l.contains("link_detached")),
        "expected a log line about re-attaching tc_ingress:\n{log}"
    );

    // `proxy cleanup`: no program left on any device.
    let stopped = f.proxy().stop().expect("stopping the proxy");
    assert!(stopped.success(), "{stopped}");
    f.proxy = None;
    let out = Command::new(proxy_bin())
        .arg("cleanup")
        .arg("--pin-path")
        .arg(f.sandbox.pin_path())
        .output()
        .expect("running proxy cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel releases a link whose last pin went in deferred work.
    let left = || {
        [EXT, POD1]
            .iter()
            .flat_map(|dev| [BPF_TCX_INGRESS, BPF_TCX_EGRESS].map(|at| (*dev, at)))
            .filter(|(dev, at)| tcx_programs(dev, *at) != 0)
            .collect::<Vec<_>>()
    };
    wait_until(SETTLE, || left().is_empty());
    assert_eq!(left(), [], "programs left on devices after cleanup");
}

#[test]
fn without_socket_lb_the_hooks_go_and_every_device_translates_cluster_ips() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    add_veth(&f, EXT);
    start(&mut f);
    let pin = f.sandbox.pin_path();
    f.wait_for(STARTUP, "tc links on tcext0", || {
        devices_of(&tc_links(&pin)) == [EXT]
    });
    let links = |pin: &Path| status(pin)["links"].as_array().map_or(0, Vec::len);
    assert_eq!(links(&pin), 8, "the socket hooks, with socket LB on");
    assert_eq!(devices_map(&pin), [(ifindex(EXT), 0)]);

    let stopped = f.proxy().stop().expect("stopping the proxy");
    assert!(stopped.success(), "{stopped}");
    f.proxy = None;
    let mut args = args();
    args.extend(["--socket-lb", "false"]);
    f.proxy = Some(
        ProxyProcess::start_with_args(&proxy_bin(), &f.sandbox, &f.sandbox.manifests_dir(), &args)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}")),
    );
    f.wait_for(STARTUP, "the socket hooks dropped", || links(&pin) == 0);
    f.wait_for(SETTLE, "tcext0 flagged CLUSTER_IP", || {
        devices_map(&pin) == [(ifindex(EXT), device_flags::CLUSTER_IP)]
    });
    assert_eq!(devices_of(&tc_links(&pin)), [EXT]);
    assert_eq!(tcx_programs(EXT, BPF_TCX_INGRESS), 1);
    assert_eq!(tcx_programs(EXT, BPF_TCX_EGRESS), 1);
}

#[test]
fn a_new_pod_device_is_attached_on_its_link_notification_not_the_reconcile() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    add_veth(&f, EXT);
    // The reconcile is an hour away: only the notification can do it.
    start_replacing(&mut f, RESYNC_MS, "3600000");
    let pin = f.sandbox.pin_path();
    f.wait_for(STARTUP, "tc links on tcext0", || {
        devices_of(&tc_links(&pin)) == [EXT]
    });
    add_veth(&f, POD1);
    f.wait_for(SETTLE, "tc links on the new pod device", || {
        devices_of(&tc_links(&pin)) == [EXT, POD1]
    });
    assert!(devices_map(&pin).contains(&(ifindex(POD1), device_flags::CLUSTER_IP)));
    f.sandbox
        .ip(&format!("link del {POD1}"))
        .expect("deleting tcpod1");
    f.wait_for(SETTLE, "the deleted pod device's links dropped", || {
        status(&pin)["tc_links"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    });
}

/// `--devices auto` takes the links with the node's addresses, but not the
/// pods' side of the node: a bridge with an address (a CNI's `cni0`) gets no
/// tc programs, so pod-to-pod packets do not pay for them, until it carries
/// the default route (a node whose uplink is a bridge). The uplink here is a
/// veth (as in a kind node), taken for its default route; once the route
/// moves to the bridge, it is a veth like a pod's and is left out.
#[test]
fn auto_leaves_out_a_bridge_until_it_carries_the_default_route() {
    const BRIDGE: &str = "tcbr0";
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    add_veth(&f, EXT);
    for cmd in [
        format!("addr add {EXT_ADDR4}/24 dev {EXT}"),
        format!("link add {BRIDGE} type bridge"),
        format!("addr add 10.244.0.1/24 dev {BRIDGE}"),
        format!("link set {BRIDGE} up"),
        format!("route add default dev {EXT}"),
    ] {
        f.sandbox
            .ip(&cmd)
            .unwrap_or_else(|e| panic!("ip {cmd}: {e}"));
    }
    start_replacing(&mut f, EXT, "auto");
    let pin = f.sandbox.pin_path();
    f.wait_for(STARTUP, "tc links on tcext0", || {
        devices_of(&tc_links(&pin)).contains(&EXT.to_owned())
    });
    // Several reconciles later, still nothing on the bridge.
    std::thread::sleep(Duration::from_secs(1));
    let devices = devices_of(&tc_links(&pin));
    assert!(
        !devices.contains(&BRIDGE.to_owned()),
        "auto attached to the bridge: {devices:?}"
    );

    f.sandbox
        .ip(&format!("route replace default dev {BRIDGE}"))
        .unwrap_or_else(|e| panic!("moving the default route: {e}"));
    f.wait_for(SETTLE, "tc links on the bridge alone", || {
        devices_of(&tc_links(&pin)) == [BRIDGE]
    });
}
