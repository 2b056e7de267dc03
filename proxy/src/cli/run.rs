//! `proxy run`: the daemon. Chooses the mode, loads the dataplane, starts the
//! sources and the sync loop, and stops cleanly on SIGTERM or SIGINT.
//!
//! Modes (`--mode`): `ebpf` loads the socket hooks or fails; `userspace` serves
//! Services from tokio proxies on local VIPs; `auto` (the default) tries eBPF
//! and falls back to userspace when loading fails (no bpffs, no cgroup2, no
//! privilege, a verifier rejection), with a warning that gives the reason.
//! The programs are loaded and verified at start, but the hooks are attached
//! by the sync loop after the first complete sync (see `datapath`); a failure
//! to attach then is retried, not a fallback. Pins of a newer layout version
//! are never a reason to fall back: `auto` refuses them like `ebpf` does, and
//! leaves them alone. The tc programs (`--devices`, `--pod-devices`) load with
//! the hooks; in `auto` with socket LB on, a tc program the kernel refuses is
//! logged and the socket hooks serve alone (see `dataplane::tc`). One mode at a time: a daemon in userspace mode
//! removes the hooks and maps an eBPF run left (they would steer VIP traffic
//! past it), and a daemon in eBPF mode removes the VIP routes a userspace run
//! left (at its first sync, by the userspace path it keeps for frontends
//! beyond the maps' capacity).
//!
//! On exit the hooks stay attached and the maps stay pinned, on purpose: the
//! node's services keep working while the daemon restarts or is upgraded, and
//! the next daemon takes over the links and the maps' contents (or migrates
//! pins of an older layout version, and refuses pins of a newer one: see
//! `dataplane::loader`). In userspace mode the VIP routes stay (connections
//! are refused, not lost, until the next daemon listens) and the next daemon
//! adopts them. `proxy cleanup` removes all of it, every layout version.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::watch;

pub use super::run_args::{ExternalIpGuardArg, LOG_FORMAT_HELP, ModeArg, RunArgs, resolve};
use crate::{
    admin::AdminServers,
    dataplane::{
        MapError, Writer,
        bpffs::{self, BpffsError},
        cgroup,
        ct_gc::ConntrackGc,
        devices, hooks,
        kernel::KernelMaps,
        loader,
        local_traffic::{self, DetectLocalMode, DetectSettings, LocalDetector},
        pin_lock::PinLock,
        sock_frontends::SockFrontends,
        tc::TcSettings,
        udp_flows::UdpFlowEnder,
    },
    ebpf_datapath::EbpfDatapath,
    events::EventSink,
    healthcheck,
    model::{Index, NodeInfo, SourceRange, selection},
    nodeport::NodePortFilter,
    plan::Scope,
    query,
    snat_ports::{self, PortRange, SnatPortRangeArg},
    source::{
        gate::Gate,
        kube as kube_source,
        manifests::{self, ManifestDir},
        node_addresses,
    },
    sync::{self, SyncSettings},
    telemetry::{Mode, Telemetry},
    userspace::{self, UserspaceDatapath},
};

/// How long `NodeCIDR` waits for the Node's pod CIDRs (kube-proxy's
/// `timeoutForNodePodCIDR`).
const NODE_POD_CIDR_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What `run` loaded.
enum Chosen {
    Ebpf(Box<(Writer<KernelMaps>, loader::SocketHooks)>),
    Userspace,
}

impl RunArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        // One per CPU (the userspace path serves TCP on threads of its own,
        // `userspace::workers`; UDP and everything else runs here).
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        runtime.block_on(self.run())
    }

    /// `--service-cluster-ip-range`, checked as kube-apiserver does.
    fn service_cidrs(&self) -> anyhow::Result<Vec<SourceRange>> {
        let cidrs = &self.service_cluster_ip_range;
        let shown = || {
            cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        anyhow::ensure!(
            crate::nodeport::at_most_one_per_family(cidrs),
            "--service-cluster-ip-range takes at most one IPv4 and one IPv6 CIDR, got {}",
            shown()
        );
        cidrs
            .iter()
            .map(|c| {
                SourceRange::new(c.addr, c.prefix).ok_or_else(|| {
                    anyhow::anyhow!("--service-cluster-ip-range: {c} is not a valid CIDR")
                })
            })
            .collect()
    }

    async fn run(self) -> anyhow::Result<()> {
        let cluster = kube_source::Cluster::detect(self.kubeconfig.as_deref());
        if self.manifests.is_none() && cluster.is_none() && kube_source::in_pod_but_unset() {
            anyhow::bail!(
                "KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is set but empty: set them to \
                 the API server's address as the nodes reach it, not the `kubernetes` Service's \
                 ClusterIP, which this proxy is what serves (deploy/kube-apiserver.yaml)"
            );
        }
        if self.manifests.is_none() && cluster.is_none() {
            anyhow::bail!(
                "no source of Services: pass --manifests DIR and/or --kubeconfig PATH \
                 (in a pod, the in-cluster service account is used without --kubeconfig)"
            );
        }
        if let Some(name) = &self.service_proxy_name {
            selection::validate_proxy_name(name)?;
        }
        if let Some(path) = &self.config {
            tracing::info!(config = %path.display(), "settings read from the configuration file and the flags");
        }
        if let Some(translation) = &self.kube_proxy {
            log_kube_proxy_translation(translation);
        }
        local_traffic::check(&self.detect_settings())?;
        let node_name = kube_source::node_name(self.node_name.as_deref())?;
        let (nodeport_cidrs, nodeport_primary) =
            match NodePortFilter::new(&self.nodeport_addresses)? {
                NodePortFilter::Cidrs(cidrs) => (cidrs, false),
                NodePortFilter::Primary => (Vec::new(), true),
            };
        if nodeport_primary && cluster.is_none() {
            tracing::warn!(
                "--nodeport-addresses primary needs this node's Node object (the Kubernetes \
                 source): without it NodePorts are served on every address, as kube-proxy \
                 does when it cannot tell the node's IP"
            );
        }
        let (kube_client, api_server_addresses) = match &cluster {
            Some(cluster) => {
                let (client, addresses) = kube_source::client_and_addresses(cluster)
                    .await
                    .context("configuring the Kubernetes client")?;
                (Some(client), addresses)
            }
            None => (None, Vec::new()),
        };
        let local = self.local_detector(kube_client.clone(), &node_name).await?;
        // Descriptors for the HTTP servers' clients, in every mode.
        userspace::raise_nofile_limit();
        // One daemon per pin path: checked first, so a second daemon says
        // so rather than failing on a taken port.
        let _pin_lock = self.lock_pins()?;
        // Bind before touching the kernel, so a bad address fails cleanly (a
        // taken one is retried in the background: `admin::retry`).
        let initial_mode = match self.mode {
            ModeArg::Userspace => Mode::Userspace,
            ModeArg::Auto | ModeArg::Ebpf => Mode::Ebpf,
        };
        let telemetry = Telemetry::new(initial_mode, self.healthz_timeout);
        let admin = AdminServers::start(
            self.metrics_bind_address,
            self.healthz_bind_address,
            telemetry.clone(),
        )
        .await?;
        let pins = loader::PinLayout::new(&self.pin_path);
        let chosen = match self.mode {
            ModeArg::Ebpf => Chosen::Ebpf(Box::new(self.load_ebpf(&pins, &telemetry, &local)?)),
            ModeArg::Userspace => {
                tracing::info!("mode userspace (--mode userspace)");
                remove_ebpf_leftovers(&pins);
                Chosen::Userspace
            }
            ModeArg::Auto => match self.load_ebpf(&pins, &telemetry, &local) {
                Ok(loaded) => Chosen::Ebpf(Box::new(loaded)),
                // A newer proxy's pins serve this node: not ours to remove.
                Err(error) if is_newer_layout(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(
                        reason = %format!("{error:#}"),
                        "the eBPF dataplane cannot be used; falling back to the userspace proxies"
                    );
                    remove_ebpf_leftovers(&pins);
                    Chosen::Userspace
                }
            },
        };
        let userspace_settings = userspace::Settings {
            backend_grace: self.backend_grace_period,
            udp_idle_timeout: self.udp_idle_timeout,
            congestion_control: userspace::congestion::resolve(&self.userspace_congestion_control),
            // Pods' sockets too: the namespaces of every process under the
            // cgroup the hooks would serve.
            udp_flow_cgroup: self.cgroup.clone().or_else(|| cgroup::cgroup2_root().ok()),
            netns_dirs: self.netns_dir.clone(),
            ..userspace::Settings::default()
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let mut sources = Vec::new();
        let index = Arc::new(Mutex::new(
            Index::new(NodeInfo::named(node_name.clone()))
                .with_proxy_name(self.service_proxy_name.as_deref())
                .with_external_ip_guard(self.external_ip_guard.into())
                .with_frontend_guard(api_server_addresses, self.service_cidrs()?)
                .with_nodeport_primary(nodeport_primary),
        ));
        if !self.query_socket.as_os_str().is_empty() {
            match query::server::bind(&self.query_socket) {
                Ok(listener) => {
                    tracing::info!(path = %self.query_socket.display(), "query socket listening");
                    sources.push(tokio::spawn(query::server::serve(
                        listener,
                        index.clone(),
                        shutdown_rx.clone(),
                    )));
                }
                Err(error) => tracing::warn!(
                    error = %format!("{:#}", anyhow::Error::from(error)),
                    "no query socket: `proxy explain` and `proxy diff` need --manifests"
                ),
            }
        }
        // The sync loop starts programming once every source has its first
        // complete state (see `source::gate`).
        let mut gate = Gate::new(changes_tx);

        // Link and address notifications: the NodePort addresses follow the
        // node's (below), and in eBPF mode new devices get the tc programs
        // at once rather than at the next reconcile.
        let (link_tx, link_rx) = watch::channel(0u64);
        let link_events = match devices::watch_links(link_tx) {
            Ok(_task) => Some(link_rx),
            Err(error) => {
                tracing::warn!(
                    error = %format!("{:#}", anyhow::Error::from(error)),
                    "no link notifications: address and device changes are seen at the next reconcile"
                );
                None
            }
        };
        // The NodePort addresses: every address of this network namespace
        // (kube-proxy's default), filtered by `--nodeport-addresses`, kept up
        // to date. A gate input, so the first sync already has the NodePorts.
        // The tc devices' addresses are among them; the socket hooks serve
        // the rest to local clients.
        sources.push(node_addresses::start(
            nodeport_cidrs,
            index.clone(),
            gate.input("node addresses"),
            link_events.clone(),
            self.resync_interval_ms,
            shutdown_rx.clone(),
        ));

        if let Some(manifest_dir) = &self.manifests {
            let source = manifests::watch::start(
                ManifestDir::new(manifest_dir)
                    .with_rejects(telemetry.rejects())
                    .with_limits(manifests::Limits {
                        max_bytes: self.manifest_max_bytes,
                        max_depth: self.manifest_max_depth,
                        max_nodes: self.manifest_max_nodes,
                    }),
                index.clone(),
                gate.input("manifests"),
                shutdown_rx.clone(),
            )
            .await
            .with_context(|| {
                format!("starting the manifest source on {}", manifest_dir.display())
            })?;
            tracing::info!(dir = %manifest_dir.display(), "watching manifests");
            sources.push(source);
        }
        // Problems on Services become Events on them, with the Kubernetes source only.
        let mut events = EventSink::default();
        if let (Some(client), Some(cluster)) = (kube_client, &cluster) {
            let (sink, event_messages) = EventSink::channel();
            events = sink;
            let settings = kube_source::Settings {
                initial_list: self.initial_list.into(),
                initial_list_timeout: self.initial_list_timeout,
                node_name,
                proxy_name: self.service_proxy_name.clone(),
                telemetry: telemetry.clone(),
                events: events.clone(),
                event_messages: Some(event_messages),
            };
            sources.push(kube_source::start(
                client,
                settings,
                index.clone(),
                gate.input("kubernetes"),
                shutdown_rx.clone(),
            ));
            tracing::info!(%cluster, "watching the Kubernetes API");
        }
        sources.extend(gate.start(shutdown_rx.clone()));
        // Health-check node ports, in either mode; they follow each sync.
        tokio::spawn(healthcheck::run(telemetry.clone(), shutdown_rx.clone()));

        let settings = SyncSettings {
            min_interval: self.min_sync_interval_ms,
            resync_interval: self.resync_interval_ms,
            events,
        };
        let (mode, syncer) = match chosen {
            Chosen::Ebpf(loaded) => {
                let (writer, hooks) = *loaded;
                let hook_cgroup = hooks.cgroup().to_path_buf();
                let hook_gc_cgroup = hook_cgroup.clone();
                // Frontends that do not fit the maps are served from userspace.
                let overflow =
                    match UserspaceDatapath::start(userspace_settings, telemetry.clone()).await {
                        Ok(userspace) => Some(userspace),
                        Err(error) => {
                            tracing::warn!(
                                error = %format!("{error:#}"),
                                "no userspace path for frontends beyond the maps' capacity \
                                 (they would not be served); VIP routes of an earlier \
                                 userspace run are not removed"
                            );
                            None
                        }
                    };
                // The datapath attaches (or takes over) the hooks after the
                // first complete sync, and checks them at every reconcile.
                let mut datapath = EbpfDatapath::new(writer, telemetry.clone(), overflow)
                    .with_overflow_limit(self.userspace_max_frontends)
                    .with_hooks(hooks)
                    .with_events(settings.events.clone());
                // New pod devices get the tc programs at once, not at the
                // next reconcile.
                if let Some(events) = link_events {
                    datapath = datapath.with_device_events(events);
                }
                // Pods' connected UDP sockets are ended in their own network
                // namespaces: those of every process under the hooks' cgroup,
                // and those pinned in `--netns-dir`.
                let mut ender = UdpFlowEnder::served_by(hook_cgroup, self.netns_dir.clone());
                // Which frontend each socket went through: only sockets of
                // the frontend that lost a backend are ended.
                match SockFrontends::open(&pins.maps()) {
                    Ok(frontends) => ender = ender.with_socket_frontends(frontends),
                    Err(error) => tracing::warn!(
                        error = %error,
                        "cannot read the sockets' frontends: a connected UDP socket is ended \
                         only when no UDP frontend reaches its backend"
                    ),
                }
                datapath = datapath.with_udp_flows(ender);
                self.start_conntrack_gc(&pins, &hook_gc_cgroup, &telemetry);
                let syncer = tokio::spawn(sync::run(
                    index,
                    datapath,
                    changes_rx,
                    shutdown_rx,
                    settings,
                    telemetry.clone(),
                ));
                (Mode::Ebpf, syncer)
            }
            Chosen::Userspace => {
                let datapath = UserspaceDatapath::start(userspace_settings, telemetry.clone())
                    .await
                    .context("starting the userspace proxies")?;
                telemetry.set_mode(Mode::Userspace);
                let syncer = tokio::spawn(sync::run(
                    index,
                    datapath,
                    changes_rx,
                    shutdown_rx,
                    settings,
                    telemetry.clone(),
                ));
                (Mode::Userspace, syncer)
            }
        };
        tracing::info!(mode = %mode, "dataplane mode in force");

        wait_for_signal().await?;
        match mode {
            Mode::Ebpf => tracing::info!(
                "shutting down; hooks stay attached and maps stay pinned (run `proxy cleanup` to remove them)"
            ),
            Mode::Userspace => tracing::info!(
                "shutting down; VIP routes stay for the next daemon (run `proxy cleanup` to remove them)"
            ),
        }
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = syncer.await;
            for source in sources {
                let _ = source.await;
            }
        })
        .await;
        admin.stop().await;
        Ok(())
    }
}

impl RunArgs {
    /// Loads and verifies the programs (attaching none: see
    /// [`EbpfDatapath::with_hooks`]) and adopts the pinned maps' contents.
    /// The pin path's lock (`dataplane::pin_lock`), bpffs mounted there
    /// first in the eBPF modes. `None` when there is nothing to lock: in
    /// userspace mode without pins, or in `auto` when bpffs cannot be mounted
    /// (loading then fails the same way and falls back). A directory that a
    /// mount would hide is refused in both eBPF modes.
    fn lock_pins(&self) -> anyhow::Result<Option<PinLock>> {
        let path = &self.pin_path;
        let mounted = match self.mode {
            ModeArg::Userspace => bpffs::is_bpffs(path),
            ModeArg::Ebpf => {
                bpffs::ensure(path)
                    .with_context(|| format!("preparing the pin path {}", path.display()))?;
                true
            }
            ModeArg::Auto => match bpffs::ensure(path) {
                Ok(()) => true,
                Err(error @ BpffsError::NotEmpty { .. }) => return Err(error.into()),
                Err(_) => false,
            },
        };
        Ok(if mounted {
            Some(PinLock::acquire(path)?)
        } else {
            None
        })
    }

    fn load_ebpf(
        &self,
        pins: &loader::PinLayout,
        telemetry: &Telemetry,
        local: &LocalDetector,
    ) -> anyhow::Result<(Writer<KernelMaps>, loader::SocketHooks)> {
        let cgroup = match self.cgroup.clone() {
            Some(path) => path,
            None => cgroup::cgroup2_root()?,
        };
        let sizes = loader::MapSizes {
            services: self.service_map_entries,
            backends: self.backend_map_entries,
        };
        let tc = loader::TcOptions {
            settings: self.tc_settings(local.clone())?,
            // In `auto` with socket LB on, a tc program the kernel refuses
            // leaves the socket hooks serving ClusterIPs (better than the
            // userspace fallback, which serves no NodePort either).
            optional: self.mode == ModeArg::Auto && self.socket_lb,
        };
        if !self.mount_bpffs {
            bpffs::require(&pins.root)?;
        }
        let dataplane = loader::load(pins, &cgroup, sizes, Some(tc)).with_context(|| {
            format!(
                "loading the dataplane (cgroup {}, pins {})",
                cgroup.display(),
                pins.root.display()
            )
        })?;
        tracing::info!(
            cgroup = %dataplane.hooks.cgroup().display(),
            pin_path = %pins.root.display(),
            layout_version = proxy_common::LAYOUT_VERSION,
            migrating_from = ?dataplane.migrating_from,
            "programs loaded; hooks are attached after the first complete sync"
        );
        if let Some(logger) = dataplane.logger {
            forward_kernel_logs(logger);
        }
        match dataplane.maps.usage_reader(&pins.maps()) {
            Ok(reader) => telemetry.set_dataplane_usage(reader),
            Err(error) => {
                tracing::warn!(error = %error, "map sizes and datapath counters will not be exported")
            }
        }
        let maglev = self.maglev()?;
        let mut maps = dataplane.maps;
        maps.configure_maglev(maglev.as_ref())
            .context("writing the Maglev configuration (MAGLEV_CFG)")?;
        tracing::info!(
            lb_algorithm = ?self.lb_algorithm,
            lb_mode = ?self.lb_mode,
            maglev_table_size = maglev.map(|m| m.size()),
            maglev_seed = maglev.map(|m| m.seed()),
            "external frontends' backend selection"
        );
        let writer = Writer::new(maps)
            .context("reading the pinned maps")?
            .with_backend_grace(self.backend_grace_period)
            .with_maglev(maglev);
        tracing::info!(
            frontends = writer
                .applied()
                .services
                .keys()
                .filter(|(_, scope, slot)| *slot == 0 && *scope == Scope::Internal)
                .count(),
            backends = writer.applied().backends.len(),
            "existing map contents adopted"
        );
        Ok((writer, dataplane.hooks))
    }
}

impl RunArgs {
    /// The Maglev parameters (`--lb-algorithm=maglev`), or `None` (random).
    pub fn maglev(&self) -> anyhow::Result<Option<crate::plan::Maglev>> {
        match self.lb_algorithm {
            super::run_args::LbAlgorithmArg::Random => Ok(None),
            super::run_args::LbAlgorithmArg::Maglev => {
                crate::plan::Maglev::new(self.maglev_table_size, self.maglev_seed)
                    .map(Some)
                    .context("--maglev-table-size")
            }
        }
    }

    /// What decides the tc programs' devices, and the masquerade on them.
    pub fn tc_settings(&self, local: LocalDetector) -> anyhow::Result<TcSettings> {
        Ok(TcSettings {
            devices: self.devices.clone(),
            pod_devices: self.pod_devices.clone(),
            socket_lb: self.socket_lb,
            local,
            masquerade_all: self.masquerade_all,
            dsr: self.lb_mode == super::run_args::LbModeArg::Dsr,
            snat_ports: self.snat_ports()?,
            xdp: self.xdp.into(),
        })
    }

    /// The conntrack GC thread (`--conntrack-gc-interval`); a failure to
    /// start it is logged, not fatal (the LRU still bounds the maps).
    fn start_conntrack_gc(
        &self,
        pins: &loader::PinLayout,
        hook_cgroup: &Path,
        telemetry: &Telemetry,
    ) {
        if self.conntrack_gc_interval.is_zero() {
            tracing::info!("conntrack GC off (--conntrack-gc-interval=0s): the LRU evicts");
            return;
        }
        let sockets = UdpFlowEnder::served_by(hook_cgroup.to_path_buf(), self.netns_dir.clone());
        let started = ConntrackGc::open(&pins.maps(), sockets).and_then(|gc| {
            gc.spawn(self.conntrack_gc_interval, telemetry.clone())
                .map_err(|source| MapError::Syscall {
                    map: "CT_V4",
                    op: "spawn the GC thread",
                    source,
                })
        });
        match started {
            Ok(()) => tracing::info!(
                interval_s = self.conntrack_gc_interval.as_secs_f64(),
                "conntrack GC started"
            ),
            Err(error) => tracing::warn!(
                error = %error,
                "no conntrack GC: expired flows and closed sockets' entries are left to the LRU"
            ),
        }
    }

    /// `--snat-port-range`, checked against this node's ephemeral ports.
    fn snat_ports(&self) -> anyhow::Result<PortRange> {
        let arg: SnatPortRangeArg = self.snat_port_range.parse()?;
        let ephemeral =
            snat_ports::read_ephemeral(Path::new("/proc/sys/net/ipv4/ip_local_port_range"))?;
        let range = snat_ports::choose(arg, ephemeral)?;
        self.reserve_ports(ephemeral);
        tracing::info!(
            snat_port_range = %range,
            ephemeral = %ephemeral,
            requested = %self.snat_port_range,
            "SNATed flows take source ports outside the node's ephemeral ports"
        );
        Ok(range)
    }

    /// Reserves the NodePort range and the daemon's own listening ports out
    /// of the node's ephemeral ports, where they overlap them (see
    /// [`snat_ports::reserved_with`]).
    fn reserve_ports(&self, ephemeral: PortRange) {
        let listening = [self.metrics_bind_address.0, self.healthz_bind_address.0]
            .into_iter()
            .flatten()
            .filter(|a| a.port() != 0)
            .map(|a| PortRange::new(a.port(), a.port()));
        let ranges: Vec<PortRange> = std::iter::once(snat_ports::NODE_PORTS)
            .chain(listening)
            .filter(|r| r.overlaps(ephemeral))
            .collect();
        if ranges.is_empty() {
            return;
        }
        let path = Path::new("/proc/sys/net/ipv4/ip_local_reserved_ports");
        match snat_ports::reserve_ports(path, &ranges) {
            Ok(Some(reserved)) => tracing::info!(
                ephemeral = %ephemeral,
                reserved = %reserved,
                "the NodePort range and the daemon's listening ports are reserved out of the \
                 node's ephemeral ports (a node connection's local port must not be one)"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(
                error = %error,
                ephemeral = %ephemeral,
                "could not reserve the NodePort range and the daemon's listening ports out \
                 of the node's ephemeral ports: a node connection on a NodePort has its \
                 replies translated to that NodePort's backend"
            ),
        }
    }

    /// The local-traffic detector's flags.
    pub fn detect_settings(&self) -> DetectSettings {
        DetectSettings {
            mode: self.detect_local_mode,
            cluster_cidrs: self.cluster_cidr.clone(),
            bridge_interface: self.pod_bridge_interface.clone(),
            interface_name_prefix: self.pod_interface_name_prefix.clone(),
        }
    }

    /// Resolves the local-traffic detector (`NodeCIDR`: waits for this
    /// Node's `spec.podCIDRs`, as kube-proxy does) and logs it.
    async fn local_detector(
        &self,
        client: Option<kube::Client>,
        node_name: &str,
    ) -> anyhow::Result<LocalDetector> {
        let settings = self.detect_settings();
        let node_pod_cidrs = match (self.detect_local_mode, client) {
            (DetectLocalMode::NodeCidr, Some(client)) => {
                kube_source::wait_for_pod_cidrs(client, node_name, NODE_POD_CIDR_TIMEOUT).await?
            }
            (DetectLocalMode::NodeCidr, None) => anyhow::bail!(
                "--detect-local-mode=NodeCIDR reads this Node's spec.podCIDRs from the Kubernetes \
                 API: pass --kubeconfig (or run in a pod), or use --detect-local-mode=ClusterCIDR \
                 with --cluster-cidr"
            ),
            _ => Vec::new(),
        };
        let local = local_traffic::detector(&settings, &node_pod_cidrs);
        if local == LocalDetector::None {
            tracing::info!(
                mode = %self.detect_local_mode,
                "no local-traffic detector: ClusterIP traffic is never masqueraded for coming from \
                 outside the cluster (set --cluster-cidr to detect it)"
            );
        } else {
            tracing::info!(mode = %self.detect_local_mode, detector = %local.describe(), masquerade_all = self.masquerade_all, "local-traffic detector");
        }
        Ok(local)
    }
}

/// The load failed because the pin path holds a newer layout version.
fn is_newer_layout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<hooks::LoadError>(),
            Some(hooks::LoadError::Pins(
                crate::dataplane::pins::PinsError::NewerLayout { .. }
            ))
        ) || matches!(
            cause.downcast_ref::<crate::dataplane::pins::PinsError>(),
            Some(crate::dataplane::pins::PinsError::NewerLayout { .. })
        )
    })
}

/// Hooks an eBPF run left attached (or a failed load half attached) would
/// steer VIP traffic past the userspace proxies, with stale backends: remove
/// every pin of every layout version (`pins::remove_all`), which detaches them.
fn remove_ebpf_leftovers(pins: &loader::PinLayout) {
    if !pins.root.exists() {
        return;
    }
    match loader::cleanup(pins) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => tracing::info!(
            pins = removed.len(),
            pin_path = %pins.root.display(),
            "removed the hooks and maps of an earlier eBPF run"
        ),
        Err(error) => tracing::warn!(
            error = %error,
            pin_path = %pins.root.display(),
            "could not remove the hooks and maps of an earlier eBPF run; they may steer VIP traffic"
        ),
    }
}

/// Forwards the programs' aya-log records (rare paths only) to our logs.
fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer fd, and flushing neither closes
    // nor replaces it, so the registered fd stays valid while registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(error) => {
            tracing::warn!(error = %error.into_parts().1, "cannot watch the kernel log buffer");
            return;
        }
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Once at start: each kube-proxy field mapped (debug) and each one not
/// used, with the reason (warn, one line per field).
fn log_kube_proxy_translation(translation: &crate::config::kube_proxy::Translation) {
    tracing::info!(
        mapped = translation.settings.len(),
        not_mapped = translation.not_mapped.len(),
        "the configuration file is kube-proxy's KubeProxyConfiguration"
    );
    for m in &translation.settings {
        tracing::debug!(kube_proxy_field = m.from, setting = m.ours, value = %m.value, "kube-proxy field mapped");
    }
    for n in &translation.not_mapped {
        tracing::warn!(kube_proxy_field = %n.field, value = %n.value, reason = n.reason, "kube-proxy field not used");
    }
}
