//! Hostile manifest files against the real proxy: `/livez` and `/healthz`
//! keep answering while a big file is parsed (parsing runs off the async
//! runtime), and a file over a limit is rejected by name and counted while
//! the rest keeps working.
//!
//! The admin servers listen on loopback inside the sandbox's namespace only.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proxy_tests::tcp_request_timeout;

const METRICS_ADDR: &str = "127.0.0.1:19249";
const HEALTHZ_ADDR: &str = "127.0.0.1:19256";

fn fixture(extra: &[&str]) -> Fixture {
    let mut f = Fixture::new(Mode::Ebpf);
    f.write_web(&BACKENDS_V4, &BACKENDS_V6);
    let mut args = vec![
        "--metrics-bind-address",
        METRICS_ADDR,
        "--healthz-bind-address",
        HEALTHZ_ADDR,
    ];
    args.extend_from_slice(extra);
    f.start_proxy_with(&args);
    f.wait_ready();
    f
}

/// A ConfigMap (a kind the proxy does not use: one problem, one log line)
/// whose data is `n` short strings: within the default limits (8 MiB, a
/// million values) and still seconds of parsing.
fn big_manifest(n: usize) -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pad, namespace: pxt}\ndata:\n  pad: [",
    );
    for i in 0..n {
        text.push_str(&format!("v{:05},", i % 100_000));
    }
    text.push_str("end]\n");
    text
}

fn metric(name: &str) -> f64 {
    let (code, body) = http_get(METRICS_ADDR, "/metrics")
        .unwrap_or_else(|e| panic!("scraping http://{METRICS_ADDR}/metrics failed: {e}"));
    assert_eq!(code, 200, "/metrics said {code}: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn health_answers_while_a_big_manifest_is_parsed() {
    let f = fixture(&[]);
    let text = big_manifest(900_000);
    assert!(text.len() < 8 << 20, "{} bytes", text.len());
    f.write("big.yaml", &text);
    let start = Instant::now();
    let (mut probes, mut slowest) = (0, Duration::ZERO);
    // Until the parse has finished (the ConfigMap is reported by file name).
    while !f.log().contains("big.yaml") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the big manifest was never parsed; log:\n{}",
            f.log()
        );
        for path in ["/livez", "/healthz"] {
            let asked = Instant::now();
            match http_get(HEALTHZ_ADDR, path) {
                Ok((200, _)) => {}
                Ok((code, body)) => panic!("{path} said {code} during the parse: {body}"),
                Err(e) => panic!(
                    "{path} did not answer within {HTTP_TIMEOUT:?} during the parse \
                     ({:?} after the write): {e}",
                    start.elapsed()
                ),
            }
            slowest = slowest.max(asked.elapsed());
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "parse took about {:?}; {probes} health probes answered, the slowest in {slowest:?}",
        start.elapsed()
    );
    let vip = sock(WEB_VIP4, TCP_PORT);
    tcp_request_timeout(vip, REQUEST).unwrap_or_else(|e| panic!("{vip} stopped answering: {e}"));
}

#[test]
fn files_over_the_limits_are_rejected_by_name_and_counted() {
    let mut f = fixture(&[
        "--manifest-max-bytes",
        "4096",
        "--manifest-max-depth",
        "16",
        "--manifest-max-nodes",
        "5000",
    ]);
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    f.write("bomb.yaml", &bomb);
    f.write("deep.yaml", &"[".repeat(3_000));
    f.write("large.yaml", &format!("# {}\n", "x".repeat(5_000)));
    std::fs::write(
        f.sandbox.manifests_dir().join("latin1.yaml"),
        b"kind: Caf\xe9\n",
    )
    .expect("writing latin1.yaml");
    let series = |reason: &str| {
        format!(r#"proxy_config_rejects_total{{source="manifests",reason="{reason}"}}"#)
    };
    f.wait_for(PROPAGATION, "each file's reject to be counted", || {
        ["too_many_nodes", "too_deep", "too_large", "not_utf8"]
            .iter()
            .all(|r| metric(&series(r)) >= 1.0)
    });
    let log = f.log();
    for (file, reason) in [
        ("bomb.yaml", "--manifest-max-nodes"),
        ("deep.yaml", "--manifest-max-depth"),
        ("large.yaml", "--manifest-max-bytes"),
        ("latin1.yaml", "not UTF-8"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(reason)),
            "expected a line naming {file} and {reason:?}; log:\n{log}"
        );
    }
    // Rescans (every 5 s) do not count or log the same files again.
    let before = metric(&series("not_utf8"));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(metric(&series("not_utf8")), before);
    assert_eq!(
        f.log().matches("latin1.yaml").count(),
        log.matches("latin1.yaml").count(),
        "latin1.yaml reported again without a change"
    );
    let vip = sock(WEB_VIP4, TCP_PORT);
    tcp_request_timeout(vip, REQUEST).unwrap_or_else(|e| panic!("{vip} stopped answering: {e}"));
}
