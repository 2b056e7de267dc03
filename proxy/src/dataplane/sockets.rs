//! Ending connected UDP sockets that still point at a backend that is gone.
//!
//! Socket-level LB translates a connected UDP socket once, at `connect()`; the
//! kernel then sends every datagram straight to the chosen backend. When that
//! backend leaves its Service, no map change reaches the socket, so the proxy
//! destroys it through netlink `SOCK_DESTROY` (as Cilium does): the
//! application sees `ECONNABORTED` and reconnects, which picks a live backend
//! (or is refused at once when none is left). Unconnected UDP needs nothing:
//! `sendmsg` re-selects on every datagram.
//!
//! Scope: the network namespace of the calling thread. `udp_flows` calls it
//! once per namespace of the node (pods' included), each entered in turn.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    message::SockDiagDestroy,
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// Errors talking sock_diag.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("sock_diag {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sock_diag reply does not decode: {0}")]
    Decode(String),
}

/// Destroys every UDP socket in this network namespace whose peer is one of
/// `gone`. Returns how many were destroyed. A socket that vanished meanwhile
/// is not an error.
pub fn destroy_udp_sockets_to(gone: &[SocketAddr]) -> Result<usize, SockDiagError> {
    destroy_udp_sockets_where(gone, &|_, _| true)
}

/// Destroys the UDP sockets in this network namespace whose peer is one of
/// `gone` and for which `decide(peer, cookie)` holds (the cookie is
/// `bpf_get_socket_cookie`'s). Returns how many were destroyed.
pub fn destroy_udp_sockets_where(
    gone: &[SocketAddr],
    decide: &dyn Fn(SocketAddr, u64) -> bool,
) -> Result<usize, SockDiagError> {
    if gone.is_empty() {
        return Ok(0);
    }
    let mut destroyed = 0;
    for family in [AF_INET, AF_INET6] {
        let wanted: Vec<&SocketAddr> = gone
            .iter()
            .filter(|a| family_of(a.ip()) == family)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for id in dump_udp(family)? {
            let peer = SocketAddr::new(id.destination_address, id.destination_port);
            if wanted.contains(&&peer)
                && decide(peer, super::sock_frontends::diag_cookie(id.cookie))
                && destroy(family, id)?
            {
                destroyed += 1;
            }
        }
    }
    Ok(destroyed)
}

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn open() -> Result<Socket, SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
    socket.bind_auto().map_err(SockDiagError::Socket)?;
    socket
        .connect(&NlAddr::new(0, 0))
        .map_err(SockDiagError::Socket)?;
    Ok(socket)
}

fn request(family: u8, protocol: u8, socket_id: SocketId) -> InetRequest {
    InetRequest {
        family,
        protocol,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id,
    }
}

fn send<T: netlink_packet_core::NetlinkSerializable + std::fmt::Debug>(
    socket: &Socket,
    mut message: NetlinkMessage<T>,
) -> Result<(), SockDiagError> {
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map(|_| ())
        .map_err(|source| SockDiagError::Io {
            what: "send",
            source,
        })
}

/// The cookies of every TCP and UDP socket of both families in this
/// namespace (`bpf_get_socket_cookie`'s numbering).
pub fn socket_cookies() -> Result<Vec<u64>, SockDiagError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            // A TIME_WAIT socket has no user left: its entry is not needed.
            let states = StateFlags::all() - StateFlags::TIME_WAIT;
            out.extend(
                dump(family, protocol, states)?
                    .into_iter()
                    .map(|id| super::sock_frontends::diag_cookie(id.cookie)),
            );
        }
    }
    Ok(out)
}

/// Every UDP socket of one family in this namespace.
fn dump_udp(family: u8) -> Result<Vec<SocketId>, SockDiagError> {
    dump(family, IPPROTO_UDP, StateFlags::all())
}

/// Every socket of one family and protocol in this namespace.
fn dump(family: u8, protocol: u8, states: StateFlags) -> Result<Vec<SocketId>, SockDiagError> {
    let socket = open()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let any = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            states,
            ..request(family, protocol, any)
        })
        .into(),
    );
    send(&socket, message)?;

    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|source| SockDiagError::Io {
                what: "dump",
                source,
            })?;
        let mut offset = 0;
        while offset < size {
            let reply = <NetlinkMessage<SockDiagMessage>>::deserialize(&buf[offset..size])
                .map_err(|e| SockDiagError::Decode(e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    out.push(response.header.socket_id);
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(SockDiagError::Io {
                        what: "dump",
                        source: e.to_io(),
                    });
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// `SOCK_DESTROY` for one socket. `Ok(false)` when it was already gone.
fn destroy(family: u8, id: SocketId) -> Result<bool, SockDiagError> {
    let socket = open()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let message =
        NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(SockDiagDestroy::new(SockDiagMessage::InetRequest(
                request(family, IPPROTO_UDP, id),
            ))),
        );
    send(&socket, message)?;
    let mut buf = vec![0u8; 8 * 1024];
    let size = socket
        .recv(&mut &mut buf[..], 0)
        .map_err(|source| SockDiagError::Io {
            what: "destroy",
            source,
        })?;
    let reply = <NetlinkMessage<SockDiagMessage>>::deserialize(&buf[..size])
        .map_err(|e| SockDiagError::Decode(e.to_string()))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_none() => Ok(true),
        NetlinkPayload::Error(e) => {
            let error = e.to_io();
            if error.raw_os_error() == Some(libc::ENOENT) {
                Ok(false)
            } else {
                Err(SockDiagError::Io {
                    what: "destroy",
                    source: error,
                })
            }
        }
        _ => Ok(true),
    }
}
