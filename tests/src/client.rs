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
    let socket = udp_connected_socket(addr, timeout)?;
    let peer = socket.peer_addr()?;
    Ok((udp_ask(&socket)?, peer))
}

/// A fresh UDP socket of `addr`'s family, connected to `addr`, each step
/// bounded by `timeout`: a long-lived connected socket for [`udp_ask`].
pub fn udp_connected_socket(addr: SocketAddr, timeout: Duration) -> io::Result<UdpSocket> {
    let socket = udp_socket(addr, timeout)?;
    socket.connect(addr)?;
    Ok(socket)
}

/// One request on a connected UDP socket, and its reply.
pub fn udp_ask(socket: &UdpSocket) -> io::Result<Reply> {
    socket.send(REQUEST)?;
    let mut buf = [0u8; MAX_REPLY];
    let n = socket.recv(&mut buf)?;
    parse_datagram(&buf[..n])
}

/// One TCP connection kept open for several requests (to a backend started
/// with [`crate::TcpBackend::start_sessions`]): a long-lived flow.
pub struct TcpSession {
    stream: TcpStream,
}

impl TcpSession {
    /// Connects to `addr`; each later step is bounded by `timeout`.
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(TcpSession { stream })
    }

    /// The connection's local (client) port.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.stream.local_addr()?.port())
    }

    /// Sends a line on the connection and reads the reply line.
    pub fn request(&mut self) -> io::Result<Reply> {
        self.stream.write_all(REQUEST)?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") && line.len() < MAX_REPLY {
            match self.stream.read(&mut byte)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the session",
                    ));
                }
                _ => line.push(byte[0]),
            }
        }
        parse_datagram(&line)
    }
}

/// An HTTP response: status, headers (names lowercased) and body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; every step bounded by
/// `timeout`. Understands `Content-Length`, chunked bodies and close-delimited ones.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: proxy-tests\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
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

    #[test]
    fn parses_http_responses() {
        let r = parse_http_response(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
              X-Load-Balancing-Endpoint-Weight: 0\r\nContent-Length: 2\r\n\r\n{}junk",
        )
        .expect("valid");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-load-balancing-endpoint-weight"), Some("0"));
        assert_eq!(r.body, "{}");
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("valid");
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
