//! `proxy config`: the configuration file of `proxy run --config FILE`
//! ([`crate::config::file`]): print the defaults as a documented file, or
//! check a file and print the settings it gives.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::run::{LOG_FORMAT_HELP, RunArgs};
use crate::config::file;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub what: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting of `proxy run` with its default, as a configuration
    /// file (each field documented; it parses back to the defaults).
    PrintDefaults,
    /// Check a configuration file (ours, or kube-proxy's
    /// `KubeProxyConfiguration`) and print the settings it gives `proxy run`
    /// (its fields over the defaults; flags would override them), then the
    /// kube-proxy fields not used, with the reason.
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Convert kube-proxy's `KubeProxyConfiguration` (its ConfigMap's
    /// `config.conf`) to this proxy's format: the settings it maps to, then
    /// the fields not used, with the reason, as comments.
    Convert {
        /// kube-proxy's configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

const HEADER: &str = "Configuration file of `proxy run --config FILE`. Every field is \
    optional (a missing field keeps the default shown), unknown fields are errors, \
    and flags given on the command line override the file.";

impl ConfigArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let text = match self.what {
            ConfigCommand::PrintDefaults => documented(&RunArgs::default())?,
            ConfigCommand::Check { file } => {
                let loaded = file::load_any::<RunArgs>(&file)?;
                let mut text = documented(&loaded.settings)?;
                if let Some(translation) = &loaded.kube_proxy {
                    text.push('\n');
                    text.push_str(&not_mapped_comments(translation));
                }
                text
            }
            ConfigCommand::Convert { file } => {
                let loaded = file::load_any::<RunArgs>(&file)?;
                let translation = loaded.kube_proxy.with_context(|| {
                    format!(
                        "{} is not a KubeProxyConfiguration (kind: {}); `proxy config check` \
                         reads this proxy's own format",
                        file.display(),
                        crate::config::kube_proxy::KIND
                    )
                })?;
                converted(&file, &translation)?
            }
        };
        super::print(&text)
    }
}

/// A kube-proxy file's settings in our format (only the fields it maps to),
/// then what was not used, as comments. Parses back to those settings.
pub fn converted(
    source: &std::path::Path,
    translation: &crate::config::kube_proxy::Translation,
) -> Result<String, file::ConfigFileError> {
    let mut text = format!(
        "# Converted from kube-proxy's configuration file {} by `proxy config convert`.\n\
         # Settings of `proxy run --config FILE`; every other one keeps its default.\n",
        source.display()
    );
    for m in &translation.settings {
        let mut one = serde_json::Map::new();
        one.insert(m.ours.to_owned(), m.value.clone());
        text.push_str(&format!("\n# from kube-proxy's {}\n", m.from));
        text.push_str(&serde_norway::to_string(&one).map_err(file::ConfigFileError::Print)?);
    }
    text.push('\n');
    text.push_str(&not_mapped_comments(translation));
    Ok(text)
}

/// The kube-proxy fields not used, one comment line each, with the reason.
fn not_mapped_comments(translation: &crate::config::kube_proxy::Translation) -> String {
    if translation.not_mapped.is_empty() {
        return "# Every field of the kube-proxy file was used.\n".to_owned();
    }
    let mut text = String::from("# kube-proxy fields not used:\n");
    for n in &translation.not_mapped {
        text.push_str(&format!("#   {n}\n"));
    }
    text
}

/// `settings` as a configuration file, each field after its flag's help.
pub fn documented(settings: &RunArgs) -> Result<String, file::ConfigFileError> {
    let command = RunArgs::augment_args(clap::Command::new("run"));
    file::document(settings, HEADER, |field| {
        if field == "logFormat" {
            return Some(LOG_FORMAT_HELP.to_owned());
        }
        let arg = command
            .get_arguments()
            .find(|arg| file::field_name(arg.get_id().as_str()) == field)?;
        let help = arg.get_long_help().or(arg.get_help())?;
        let mut text = help.to_string();
        if let Some(long) = arg.get_long() {
            text.push_str(&format!(" (flag: --{long}"));
            if let Some(env) = arg.get_env() {
                text.push_str(&format!(", env {}", env.to_string_lossy()));
            }
            text.push(')');
        }
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::{Cli, Command, LogFormat, run};

    /// `proxy ARGS…` parsed and resolved as `main` does.
    fn settings(args: &[&str]) -> Result<RunArgs, file::ConfigFileError> {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("proxy").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} do not parse: {e}"));
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"));
        let Command::Run(flags) = cli.command else {
            panic!("{args:?} is not `run`")
        };
        let run_matches = matches
            .subcommand_matches("run")
            .unwrap_or_else(|| panic!("no run matches"));
        run::resolve(flags, cli.log_format, run_matches)
    }

    fn write(dir: &Path, text: &str) -> String {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    }

    #[test]
    fn the_defaults_print_as_a_file_that_parses_back_to_them() {
        let text = documented(&RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
        let parsed: RunArgs = file::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, RunArgs::default(), "{text}");
        assert!(text.contains("\nminSyncIntervalMs: 20\n"), "{text}");
        assert!(text.contains("\nhealthzTimeout: 60s\n"), "{text}");
    }

    #[test]
    fn every_flag_of_run_is_a_documented_field_and_every_field_a_flag() {
        let text = documented(&RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
        let fields: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
            .collect();
        let command = RunArgs::augment_args(clap::Command::new("run"));
        let mut flags: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| *id != "config")
            .map(file::field_name)
            .collect();
        // The global `--log-format` is a field too.
        flags.push("logFormat".into());
        let (mut f, mut g) = (fields.clone(), flags.clone());
        f.sort();
        g.sort();
        assert_eq!(f, g, "file fields vs flags");
        for field in &fields {
            let at = text
                .find(&format!("\n{field}:"))
                .unwrap_or_else(|| panic!("{field} missing"));
            let comment = text[..at].rsplit("\n\n").next().unwrap_or_default();
            assert!(
                comment.starts_with("# ") && comment.contains(" --"),
                "{field} has no help comment naming its flag:\n{text}"
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(
            dir.path(),
            "minSyncIntervalMs: 50\nresyncIntervalMs: 5000\ncgroup: /file/cgroup\n\
             logFormat: json\nmetricsBindAddress: \"\"\n",
        );
        let s = settings(&["run", "--config", &path, "--min-sync-interval-ms", "7"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.min_sync_interval_ms, Duration::from_millis(7), "the flag");
        assert_eq!(s.resync_interval_ms, Duration::from_secs(5), "the file");
        assert_eq!(s.cgroup.as_deref(), Some(Path::new("/file/cgroup")));
        assert_eq!(s.metrics_bind_address.addr(), None, "off in the file");
        assert_eq!(s.log_format, LogFormat::Json, "the file");
        assert_eq!(s.healthz_timeout, Duration::from_secs(60), "the default");
        assert_eq!(
            s.initial_list_timeout,
            Duration::from_secs(30),
            "the default"
        );
        assert_eq!(s.config.as_deref(), Some(Path::new(&path)));

        let s = settings(&["--log-format", "text", "run", "--config", &path])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.log_format, LogFormat::Text, "the global flag");
        let s = settings(&["run", "--config", &path, "--cgroup", "/flag"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.cgroup.as_deref(), Some(Path::new("/flag")));
    }

    #[test]
    fn the_mode_and_the_userspace_settings_are_fields_spelled_as_their_flags() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(
            dir.path(),
            "mode: userspace\nbackendGracePeriod: 2m\nudpIdleTimeout: 5s\n\
             serviceMapEntries: 1024\nbackendMapEntries: 2048\nuserspaceCongestionControl: \"\"\n",
        );
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, run::ModeArg::Userspace);
        assert_eq!(s.userspace_congestion_control, "", "the node's default");
        assert_eq!(RunArgs::default().userspace_congestion_control, "cubic");
        assert_eq!(s.backend_grace_period, Duration::from_secs(120));
        assert_eq!(s.udp_idle_timeout, Duration::from_secs(5));
        assert_eq!(s.service_map_entries, Some(1024));
        assert_eq!(s.backend_map_entries, Some(2048));
        let s = settings(&["run", "--config", &path, "--mode", "ebpf"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, run::ModeArg::Ebpf, "the flag");
        let text = documented(&RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\nmode: auto\n"), "{text}");
        assert!(text.contains("\nserviceMapEntries: null\n"), "{text}");
        assert!(text.contains("\nbackendMapEntries: null\n"), "{text}");
    }

    #[test]
    fn nodeport_addresses_from_the_file_and_the_comma_separated_flag() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(dir.path(), "nodeportAddresses: [10.0.0.0/8, fd00::1]\n");
        let shown = |s: &RunArgs| -> Vec<String> {
            s.nodeport_addresses
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&s), ["10.0.0.0/8", "fd00::1/128"]);
        let s = settings(&[
            "run",
            "--config",
            &path,
            "--nodeport-addresses",
            "192.168.0.0/16,192.0.2.7",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&s), ["192.168.0.0/16", "192.0.2.7/32"], "the flag");
        let primary = write(dir.path(), "nodeportAddresses: [primary]\n");
        let s = settings(&["run", "--config", &primary]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&s), ["primary"]);
        let bad = write(dir.path(), "nodeportAddresses: [eth0]\n");
        assert!(settings(&["run", "--config", &bad]).is_err());
        let text = documented(&RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\nnodeportAddresses: []\n"), "{text}");
    }

    #[test]
    fn the_device_settings_are_fields_and_flags() {
        use crate::dataplane::devices::{DeviceSelection, PodDevices};
        let defaults = RunArgs::default();
        assert_eq!(defaults.devices, DeviceSelection::Auto);
        assert_eq!(defaults.pod_devices, PodDevices::default());
        assert!(defaults.socket_lb);
        let text = documented(&defaults).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\ndevices: auto\n"), "{text}");
        assert!(text.contains("\npodDevices: ''\n"), "{text}");
        assert!(text.contains("\nsocketLb: true\n"), "{text}");

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(
            dir.path(),
            "devices: eth0,eth1\npodDevices: veth*,lxc?\nsocketLb: false\n",
        );
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.devices,
            DeviceSelection::Names(vec!["eth0".into(), "eth1".into()])
        );
        assert_eq!(
            s.pod_devices,
            PodDevices(vec!["veth*".into(), "lxc?".into()])
        );
        assert!(!s.socket_lb);
        let s = settings(&[
            "run",
            "--config",
            &path,
            "--devices",
            "auto",
            "--socket-lb=true",
            "--pod-devices",
            "",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.devices, DeviceSelection::Auto, "the flag");
        assert!(s.socket_lb, "the flag");
        assert_eq!(s.pod_devices, PodDevices::default(), "the flag");
        for bad in [
            vec!["run", "--devices", "eth*"],
            vec!["run", "--devices", "eth0,"],
            vec!["run", "--pod-devices", "a/b"],
            vec!["run", "--socket-lb", "maybe"],
        ] {
            let parsed = Cli::command()
                .try_get_matches_from(std::iter::once("proxy").chain(bad.iter().copied()));
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_external_ip_guard_is_a_field_and_a_flag() {
        use run::ExternalIpGuardArg;
        let defaults = RunArgs::default();
        assert_eq!(defaults.external_ip_guard, ExternalIpGuardArg::Default);
        let text = documented(&defaults).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\nexternalIpGuard: default\n"), "{text}");

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(dir.path(), "externalIpGuard: strict\n");
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.external_ip_guard, ExternalIpGuardArg::Strict);
        let s = settings(&["run", "--config", &path, "--external-ip-guard", "default"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.external_ip_guard, ExternalIpGuardArg::Default, "the flag");
        let parsed =
            Cli::command().try_get_matches_from(["proxy", "run", "--external-ip-guard", "off"]);
        assert!(parsed.is_err(), "--external-ip-guard off was accepted");
    }

    #[test]
    fn the_local_traffic_settings_are_kube_proxys_flags_and_fields() {
        use crate::dataplane::local_traffic::DetectLocalMode;
        let defaults = RunArgs::default();
        assert_eq!(defaults.detect_local_mode, DetectLocalMode::ClusterCidr);
        assert!(defaults.cluster_cidr.is_empty());
        assert!(!defaults.masquerade_all);
        let text = documented(&defaults).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("\ndetectLocalMode: ClusterCIDR\n"), "{text}");
        assert!(text.contains("\nclusterCidr: []\n"), "{text}");
        assert!(text.contains("\nmasqueradeAll: false\n"), "{text}");

        let s = settings(&[
            "run",
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10::/56",
            "--detect-local-mode",
            "BridgeInterface",
            "--pod-bridge-interface",
            "cni0",
            "--masquerade-all",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<String> = s.cluster_cidr.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.244.0.0/16", "fd00:10::/56"]);
        assert_eq!(s.detect_local_mode, DetectLocalMode::BridgeInterface);
        assert_eq!(s.pod_bridge_interface, "cni0");
        assert!(
            s.masquerade_all,
            "a bare --masquerade-all is true, as kube-proxy's"
        );
        let s = settings(&["run", "--masquerade-all=false"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.masquerade_all);

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(
            dir.path(),
            "clusterCidr: [10.244.0.0/16]\ndetectLocalMode: InterfaceNamePrefix\npodInterfaceNamePrefix: veth\nmasqueradeAll: true\n",
        );
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.detect_local_mode, DetectLocalMode::InterfaceNamePrefix);
        assert_eq!(s.pod_interface_name_prefix, "veth");
        assert!(s.masquerade_all);
        assert_eq!(s.cluster_cidr.len(), 1);
        for bad in [
            vec!["run", "--detect-local-mode", "cluster-cidr"],
            vec!["run", "--cluster-cidr", "10.0.0.0/33"],
            vec!["run", "--cluster-cidr", "eth0"],
        ] {
            let parsed = Cli::command()
                .try_get_matches_from(std::iter::once("proxy").chain(bad.iter().copied()));
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
        let bad = write(dir.path(), "detectLocalMode: Bridge\n");
        assert!(settings(&["run", "--config", &bad]).is_err());
    }

    const KUBE_PROXY_DEFAULTS: &str = include_str!("../config/testdata/kube-proxy-defaults.yaml");
    const KUBEADM: &str = include_str!("../config/testdata/kubeadm-config.conf");

    #[test]
    fn a_kube_proxy_file_gives_its_mapped_settings_and_flags_override_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(dir.path(), KUBEADM);
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e:#}"));
        let shown: Vec<String> = s.cluster_cidr.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.244.0.0/16"]);
        assert_eq!(
            s.kubeconfig.as_deref(),
            Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(
            s.min_sync_interval_ms,
            Duration::from_secs(1),
            "kube-proxy's default"
        );
        assert_eq!(s.resync_interval_ms, Duration::from_secs(30));
        assert_eq!(
            s.metrics_bind_address.addr(),
            Some("127.0.0.1:10249".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            s.healthz_timeout,
            Duration::from_secs(60),
            "ours, not in the file"
        );
        let t = s
            .kube_proxy
            .as_ref()
            .unwrap_or_else(|| panic!("not kube-proxy's"));
        assert!(t.not_mapped.is_empty(), "{:?}", t.not_mapped);

        let s = settings(&[
            "run",
            "--config",
            &path,
            "--cluster-cidr",
            "10.0.0.0/8",
            "--min-sync-interval-ms",
            "5",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
        let shown: Vec<String> = s.cluster_cidr.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8"], "the flag");
        assert_eq!(s.min_sync_interval_ms, Duration::from_millis(5), "the flag");
        assert!(s.kube_proxy.is_some());

        let path = write(dir.path(), KUBE_PROXY_DEFAULTS);
        let s = settings(&["run", "--config", &path]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            s.healthz_bind_address.addr(),
            Some("0.0.0.0:10256".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(s.kube_proxy.map(|t| t.not_mapped.len()), Some(13));
    }

    #[test]
    fn a_kube_proxy_value_we_refuse_names_its_kube_proxy_field() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (body, field) in [
            ("clusterCIDR: 10.244.0.0/33\n", "clusterCIDR"),
            ("detectLocalMode: LocalModeBridge\n", "detectLocalMode"),
            ("nodePortAddresses: [eth0]\n", "nodePortAddresses"),
            (
                "metricsBindAddress: localhost:10249\n",
                "metricsBindAddress",
            ),
            ("clusterCidr: 10.0.0.0/8\n", "clusterCidr"),
        ] {
            let path = write(
                dir.path(),
                &format!(
                    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"
                ),
            );
            let error = match settings(&["run", "--config", &path]) {
                Ok(s) => panic!("{body:?} was accepted: {s:?}"),
                Err(e) => format!("{:#}", anyhow::Error::from(e)),
            };
            assert!(error.contains(&path), "{error}");
            assert!(error.contains(field), "{body:?}: {error}");
        }
    }

    #[test]
    fn convert_prints_our_format_that_parses_back_to_the_mapped_settings() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = write(dir.path(), KUBE_PROXY_DEFAULTS);
        let loaded =
            file::load_any::<RunArgs>(Path::new(&path)).unwrap_or_else(|e| panic!("{e:#}"));
        let translation = loaded
            .kube_proxy
            .unwrap_or_else(|| panic!("not kube-proxy's"));
        let text = converted(Path::new(&path), &translation).unwrap_or_else(|e| panic!("{e}"));
        let ours: RunArgs = file::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(ours, loaded.settings, "{text}");
        assert!(
            text.contains(
                "\n# from kube-proxy's iptables.minSyncPeriod\nminSyncIntervalMs: 1000\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n# kube-proxy fields not used:\n#   iptables.masqueradeBit: 14 (not used: "
            ),
            "{text}"
        );
        assert_eq!(text.matches("\n#   ").count(), 13, "{text}");
        let ours_path = write(dir.path(), "clusterCidr: [10.0.0.0/8]\n");
        let loaded =
            file::load_any::<RunArgs>(Path::new(&ours_path)).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(loaded.kube_proxy.is_none(), "our own format");
    }

    #[test]
    fn without_a_file_the_flags_are_the_settings() {
        let s = settings(&[
            "run",
            "--healthz-timeout",
            "2m",
            "--initial-list-timeout",
            "5s",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.healthz_timeout, Duration::from_secs(120));
        assert_eq!(s.initial_list_timeout, Duration::from_secs(5));
        assert_eq!(s.config, None);
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (text, field) in [
            ("minSyncIntervalMS: 5\n", "minSyncIntervalMS"),
            ("healthzTimeout: soon\n", "healthzTimeout"),
            ("healthzBindAddress: localhost\n", "healthzBindAddress"),
            ("serviceProxyName: -x-\n", "serviceProxyName"),
            ("logFormat: xml\n", "logFormat"),
            ("resyncIntervalMs: -1\n", "resyncIntervalMs"),
            ("mode: eBPF\n", "mode"),
            ("serviceMapEntries: 0\n", "serviceMapEntries"),
            ("serviceMapEntries: 134217729\n", "serviceMapEntries"),
            ("backendMapEntries: 0\n", "backendMapEntries"),
            ("backendMapEntries: many\n", "backendMapEntries"),
            ("backendGracePeriod: soon\n", "backendGracePeriod"),
            ("devices: veth*\n", "devices"),
            ("devices: a-name-much-too-long\n", "devices"),
            ("podDevices: \"eth0:1\"\n", "podDevices"),
            ("socketLb: sometimes\n", "socketLb"),
            ("externalIpGuard: loose\n", "externalIpGuard"),
        ] {
            let path = write(dir.path(), text);
            let error = match settings(&["run", "--config", &path]) {
                Ok(s) => panic!("{text:?} was accepted: {s:?}"),
                Err(e) => format!("{:#}", anyhow::Error::from(e)),
            };
            assert!(error.contains(&path), "{error}");
            assert!(error.contains(field), "{text:?}: {error}");
        }
        let missing = dir.path().join("missing.yaml").display().to_string();
        let error = settings(&["run", "--config", &missing]).map(|_| ());
        assert!(
            matches!(&error, Err(file::ConfigFileError::Read { path, .. }) if path.display().to_string() == missing),
            "{error:?}"
        );
    }
}
