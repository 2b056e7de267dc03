//! Bad manifests are skipped alone, with a log line naming the file and the
//! reason, while the good ones keep working and updating (reliability.md #12–13).

mod common;

use std::{fs, path::Path};

use common::*;
use proxy_tests::wait_until;

/// Not YAML at all: an unclosed flow sequence and a tab where indentation goes.
const NOT_YAML: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: [broken\n\t:: :\n";
const BAD_IP: &str = "10.96.999.1";

/// The first log line that names `file`, if any.
fn line_naming(log: &str, file: &str) -> Option<String> {
    log.lines().find(|l| l.contains(file)).map(str::to_owned)
}

/// Waits (bounded) until the log at `path` has a line naming `file`.
fn wait_for_line(path: &Path, file: &str) -> Option<String> {
    let mut line = None;
    wait_until(PROPAGATION, || {
        line = line_naming(&fs::read_to_string(path).unwrap_or_default(), file);
        line.is_some()
    });
    line
}

fn assert_reported(f: &Fixture, file: &str, reason_words: &[&str]) {
    let path = f
        .proxy
        .as_ref()
        .expect("the proxy was started")
        .log_path()
        .to_owned();
    let Some(line) = wait_for_line(&path, file) else {
        panic!(
            "expected the proxy log to name the bad file {file}; log:\n{}",
            f.log()
        )
    };
    eprintln!("proxy reported {file}: {line}");
    // The reason, not just the name: look past the file name itself.
    let rest = line.replace(file, "").to_lowercase();
    assert!(
        reason_words
            .iter()
            .any(|w| rest.contains(&w.to_lowercase())),
        "expected the log line about {file} to give a reason (one of {reason_words:?}), saw: {line}"
    );
}

fn write_bad_files(f: &Fixture) {
    f.write("broken.yaml", NOT_YAML);
    f.write(
        "bad-ip.yaml",
        &service("bad-ip", &[BAD_IP], TCP_PORT, UDP_PORT),
    );
}

fn assert_reasons(f: &Fixture) {
    assert_reported(
        f,
        "broken.yaml",
        &[
            "yaml", "parse", "invalid", "expected", "error", "mapping", "scan", "syntax",
        ],
    );
    assert_reported(f, "bad-ip.yaml", &[BAD_IP, "ip address"]);
}

fn assert_web_works() {
    for vip in [sock(WEB_VIP4, TCP_PORT), sock(WEB_VIP6, TCP_PORT)] {
        tally(Kind::Tcp, vip, 5);
    }
    for vip in [sock(WEB_VIP4, UDP_PORT), sock(WEB_VIP6, UDP_PORT)] {
        tally(Kind::UdpUnconnected, vip, 5);
    }
}

#[test]
fn bad_manifests_at_startup_are_reported_and_skipped() {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    write_bad_files(&f);
    f.start_proxy();
    f.wait_ready();
    assert_web_works();
    assert_reasons(&f);
    f.assert_proxy_running();
}

#[test]
fn bad_manifests_while_running_do_not_stop_updates() {
    let mut f = Fixture::with_web(Mode::Ebpf);
    write_bad_files(&f);
    assert_reasons(&f);
    assert_web_works();

    // Later good changes still apply: drop the first endpoint of each family.
    f.write_web_slices(&BACKENDS_V4[1..], &BACKENDS_V6[1..]);
    for (vip, removed) in [
        (sock(WEB_VIP4, TCP_PORT), BACKENDS_V4[0]),
        (sock(WEB_VIP6, TCP_PORT), BACKENDS_V6[0]),
    ] {
        let removed = backend_name(removed, TCP_TARGET);
        f.wait_for(
            PROPAGATION,
            &format!("{vip} to stop reaching {removed} while bad files are present"),
            || stopped_reaching(Kind::Tcp, vip, &removed),
        );
    }
    f.assert_proxy_running();
}
