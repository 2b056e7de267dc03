//! A UDP client driven through stdin, for tests that need the client in its
//! own process (a pod's network namespace, entered with `nsenter --net`).
//!
//! Argument: the socket's read timeout in milliseconds. Commands, one a line:
//! - `connect ADDR`: a fresh socket connected to `ADDR`;
//! - `ask`: sends a request on it and reads the reply.
//!
//! Each command is answered on one line: `ok [BACKEND]`, or
//! `err KIND MESSAGE` (`KIND` is the `io::ErrorKind`, e.g. `ConnectionAborted`
//! when the proxy destroyed the socket, `WouldBlock` on a timeout).

use std::{
    io::{self, BufRead, Write},
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use proxy_tests::{udp_ask, udp_connected_socket};

fn main() {
    let timeout = std::env::args()
        .nth(1)
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    let mut socket: Option<UdpSocket> = None;
    let stdout = io::stdout();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("connect", addr) => parse(addr)
                .and_then(|a| udp_connected_socket(a, timeout))
                .map(|s| {
                    socket = Some(s);
                    String::new()
                }),
            ("ask", _) => match &socket {
                Some(s) => udp_ask(s).map(|r| r.backend),
                None => Err(io::Error::other("not connected")),
            },
            _ => Err(io::Error::other(format!("unknown command {line:?}"))),
        };
        let text = match answer {
            Ok(words) => format!("ok {words}"),
            Err(e) => format!("err {:?} {e}", e.kind()),
        };
        let mut out = stdout.lock();
        if writeln!(out, "{}", text.trim_end())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
}

fn parse(addr: &str) -> io::Result<SocketAddr> {
    addr.parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?}: {e}")))
}
