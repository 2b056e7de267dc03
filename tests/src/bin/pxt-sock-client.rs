//! A socket-LB client driven through stdin, for tests that need the client
//! in its own process (moved into the socket hooks' cgroup by the test, so
//! the hooks see its `connect()` and `getpeername()`). Its sockets live as
//! long as the process: a test can check them across a daemon restart.
//!
//! Commands, one a line, each answered on one line (`ok …`, or
//! `err KIND MESSAGE`):
//! - `udp ADDR`: a new UDP socket connected to `ADDR`; answers its index;
//! - `peer I`: `getpeername()` of UDP socket `I`;
//! - `ask I`: sends a request on UDP socket `I`; answers the backend;
//! - `tcp ADDR`: one TCP request to `ADDR` on a new connection; answers the
//!   backend (for session affinity).

use std::{
    io::{self, BufRead, Write},
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use proxy_tests::{tcp_request_timeout, udp_ask, udp_connected_socket};

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() {
    let mut sockets: Vec<UdpSocket> = Vec::new();
    let stdout = io::stdout();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (command, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match command {
            "udp" => addr(arg)
                .and_then(|a| udp_connected_socket(a, TIMEOUT))
                .map(|s| {
                    sockets.push(s);
                    (sockets.len() - 1).to_string()
                }),
            "peer" => socket(&sockets, arg).and_then(|s| s.peer_addr().map(|a| a.to_string())),
            "ask" => socket(&sockets, arg).and_then(|s| udp_ask(s).map(|r| r.backend)),
            "tcp" => addr(arg).and_then(|a| tcp_request_timeout(a, TIMEOUT).map(|r| r.backend)),
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

fn addr(s: &str) -> io::Result<SocketAddr> {
    s.parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?}: {e}")))
}

fn socket<'a>(sockets: &'a [UdpSocket], index: &str) -> io::Result<&'a UdpSocket> {
    index
        .parse::<usize>()
        .ok()
        .and_then(|i| sockets.get(i))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no socket {index}")))
}
