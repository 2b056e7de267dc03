//! Clients for the test backends: one request, one [`Reply`], every step bounded
//! by a timeout ([`DEFAULT_TIMEOUT`] unless given), so nothing can hang a test.
//!
//! Each call opens a fresh socket, so with the proxy in place each call is a new
//! backend choice (TCP: per connection; UDP: per socket).

use std::{
    fmt,
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    str::FromStr,
    time::Duration,
};

/// The timeout of each step (connect, send, receive) unless a caller gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

const REQUEST: &[u8] = b"hello\n";
const MAX_REPLY: usize = 1024;

/// A backend's answer: who answered, and the client address it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub backend: String,
    pub peer: SocketAddr,
}

impl FromStr for Reply {
    type Err = io::Error;

    /// Parses `backend=<name> peer=<addr:port>` (surrounding whitespace ignored).
    fn from_str(line: &str) -> io::Result<Self> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a backend reply: {line:?}"),
            )
        };
        let (mut backend, mut peer) = (None, None);
        for field in line.split_whitespace() {
            match field.split_once('=') {
                Some(("backend", v)) => backend = Some(v.to_owned()),
                Some(("peer", v)) => peer = Some(v.parse().map_err(|_| bad())?),
                _ => {}
            }
        }
        Ok(Reply {
            backend: backend.ok_or_else(bad)?,
            peer: peer.ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend={} peer={}", self.backend, self.peer)
    }
}

/// Connects to `addr`, sends a line and reads the reply line.
pub fn tcp_request(addr: SocketAddr) -> io::Result<Reply> {
    tcp_request_timeout(addr, DEFAULT_TIMEOUT)
}

/// [`tcp_request`] with each step bounded by `timeout`.
pub fn tcp_request_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(REQUEST)?;
    let mut buf = [0u8; MAX_REPLY];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        match stream.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    std::str::from_utf8(&buf[..len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .parse()
}

/// Connects to `addr` and returns what `getpeername()` says (nothing is sent).
pub fn tcp_peer_name(addr: SocketAddr) -> io::Result<SocketAddr> {
    TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?.peer_addr()
}

fn udp_socket(addr: SocketAddr, timeout: Duration) -> io::Result<UdpSocket> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket)
}

fn parse_datagram(buf: &[u8]) -> io::Result<Reply> {
    std::str::from_utf8(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .parse()
}

/// From a fresh unconnected socket, `sendto(addr)` a line and `recvfrom` the
/// reply. Returns the reply and the address it came from.
pub fn udp_unconnected_request(addr: SocketAddr) -> io::Result<(Reply, SocketAddr)> {
    udp_unconnected_request_timeout(addr, DEFAULT_TIMEOUT)
}

/// [`udp_unconnected_request`] with each step bounded by `timeout`.
pub fn udp_unconnected_request_timeout(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<(Reply, SocketAddr)> {
    let socket = udp_socket(addr, timeout)?;
    socket.send_to(REQUEST, addr)?;
    let mut buf = [0u8; MAX_REPLY];
    let (n, from) = socket.recv_from(&mut buf)?;
    Ok((parse_datagram(&buf[..n])?, from))
}

/// From a fresh socket, `connect(addr)`, send a line and receive the reply.
/// Returns the reply and what `getpeername()` says.
pub fn udp_connected_request(addr: SocketAddr) -> io::Result<(Reply, SocketAddr)> {
    udp_connected_request_timeout(addr, DEFAULT_TIMEOUT)
}

/// [`udp_connected_request`] with each step bounded by `timeout`.
pub fn udp_connected_request_timeout(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<(Reply, SocketAddr)> {
    let socket = udp_socket(addr, timeout)?;
    socket.connect(addr)?;
    let peer = socket.peer_addr()?;
    socket.send(REQUEST)?;
    let mut buf = [0u8; MAX_REPLY];
    let n = socket.recv(&mut buf)?;
    Ok((parse_datagram(&buf[..n])?, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let r: Reply = "backend=b1 peer=10.0.0.9:41234\n".parse().expect("valid");
        assert_eq!(r.backend, "b1");
        assert_eq!(r.peer, "10.0.0.9:41234".parse().expect("addr"));
        let r: Reply = "backend=b2 peer=[fd00:244::1]:5\n".parse().expect("valid");
        assert_eq!(r.peer, "[fd00:244::1]:5".parse().expect("addr"));
        assert!("backend=b1".parse::<Reply>().is_err());
        assert!("".parse::<Reply>().is_err());
        assert!("backend=b1 peer=nope".parse::<Reply>().is_err());
    }
}
