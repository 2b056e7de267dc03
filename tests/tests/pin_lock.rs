//! One daemon per pin path, with two real daemons: the second exits with a
//! message naming the first's pid and leaves the first's dataplane alone; a
//! pin path that is an ordinary directory with files is never mounted over;
//! and `proxy inspect status` on a directory that is not bpffs fails.

mod common;

use std::{ffi::OsStr, path::Path, process::Command, time::Duration};

use common::*;
use proxy_tests::{ProxyProcess, proxy_bin, tcp_request_timeout, wait_until};

fn wait_exit(proxy: &mut ProxyProcess, within: Duration) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(within, || {
        status = proxy.exited();
        status.is_some()
    });
    status.unwrap_or_else(|| panic!("expected the proxy to exit; log:\n{}", proxy.log()))
}

#[test]
fn a_second_daemon_on_the_same_pin_path_exits_naming_the_first() {
    // In userspace mode too: it would remove the first's pins as leftovers.
    for mode in ["ebpf", "auto", "userspace"] {
        let mut f = Fixture::with_web(Mode::Ebpf);
        let first = f.proxy().pid();
        let dir = f.sandbox.manifests_dir();
        let mut second =
            ProxyProcess::start_with_args(&proxy_bin(), &f.sandbox, &dir, &["--mode", mode])
                .expect("starting the second proxy");
        let status = wait_exit(&mut second, STARTUP);
        let log = second.log();
        assert!(
            !status.success(),
            "{mode}: the second daemon exited with {status}; log:\n{log}"
        );
        assert!(
            log.contains("already uses the pin path") && log.contains(&format!("pid {first}")),
            "{mode}: expected the second daemon to name the first (pid {first}); log:\n{log}"
        );
        // The first keeps its dataplane: nothing was detached or overwritten.
        f.assert_proxy_running();
        let vip = sock(WEB_VIP4, TCP_PORT);
        tcp_request_timeout(vip, REQUEST)
            .unwrap_or_else(|e| panic!("{mode}: {vip} stopped answering: {e}"));
        // Once the first is gone, a new daemon takes over.
        f.proxy().stop().expect("stopping the first proxy");
        f.proxy = None;
        f.start_proxy();
        f.wait_ready();
    }
}

#[test]
fn an_ordinary_directory_with_files_is_refused_as_pin_path() {
    let f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let pins = f.sandbox.dir().join("ordinary");
    std::fs::create_dir(&pins).expect("creating the directory");
    std::fs::write(pins.join("keep.txt"), "mine").expect("writing a file in it");
    for mode in ["ebpf", "auto"] {
        let dir = f.sandbox.manifests_dir();
        let pin_arg = pins.to_str().expect("a UTF-8 path");
        let cgroup = f.sandbox.cgroup_path();
        // The query socket in the sandbox, never the host's default path.
        let query = format!(
            "--query-socket={}",
            f.sandbox.dir().join("proxy.sock").display()
        );
        let args: Vec<&OsStr> = vec![
            "run".as_ref(),
            query.as_ref(),
            "--manifests".as_ref(),
            dir.as_os_str(),
            "--cgroup".as_ref(),
            cgroup.as_os_str(),
            "--pin-path".as_ref(),
            pin_arg.as_ref(),
            "--mode".as_ref(),
            mode.as_ref(),
        ];
        let mut proxy = ProxyProcess::start_raw(&proxy_bin(), &f.sandbox, &args, &[], None)
            .expect("starting the proxy");
        let mut status = None;
        wait_until(STARTUP, || {
            status = proxy.exited();
            status.is_some()
        });
        if is_mount_point(&pins) {
            // Leave nothing mounted in the sandbox's directory.
            let _ = proxy.kill();
            let _ = Command::new("umount").arg("-l").arg(&pins).status();
            panic!("{mode}: bpffs was mounted over {pin_arg}");
        }
        let log = proxy.log();
        let status = status.unwrap_or_else(|| panic!("{mode}: expected an exit; log:\n{log}"));
        assert!(
            !status.success(),
            "{mode}: exited with {status}; log:\n{log}"
        );
        assert!(
            log.contains("refusing to mount bpffs over") && log.contains(pin_arg),
            "{mode}: expected the refusal naming {pin_arg}; log:\n{log}"
        );
        assert_eq!(
            std::fs::read_to_string(pins.join("keep.txt"))
                .ok()
                .as_deref(),
            Some("mine"),
            "{mode}: the directory's file is hidden or gone"
        );
    }
}

#[test]
fn inspect_status_outside_bpffs_fails_clearly() {
    let f = Fixture::new(Mode::Ebpf);
    let pins = f.sandbox.dir().join("not-bpffs");
    // What a daemon's pins look like, in an ordinary directory.
    let maps = pins
        .join(format!("v{}", proxy_common::LAYOUT_VERSION))
        .join("maps");
    std::fs::create_dir_all(&maps).expect("creating the directories");
    let out = Command::new(proxy_bin())
        .args(["inspect", "status", "--pin-path"])
        .arg(&pins)
        .output()
        .expect("running proxy inspect status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "exited {}: {stdout}{stderr}",
        out.status
    );
    assert!(
        stderr.contains("not on a BPF filesystem") && stderr.contains(&*pins.to_string_lossy()),
        "expected a clear message naming {}; got:\n{stdout}{stderr}",
        pins.display()
    );
}

/// True when `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    path.parent().is_some_and(|parent| dev(path) != dev(parent))
}
