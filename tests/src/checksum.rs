//! Checksums of an Ethernet frame's IPv4 header and TCP, UDP, ICMP or
//! ICMPv6 message, computed from scratch: [`fix`] writes them, [`verify`]
//! checks them. The packet fuzzer fixes its inputs, so that a checksum the
//! tc programs get wrong when they rewrite a packet shows up in the output.
//!
//! Only what can be checked is: the IPv4 header when it fits the frame; the
//! transport checksum of an unfragmented packet whose IP length fits the
//! frame, the transport header directly after the IP header (IPv6
//! extension headers are not followed), and a UDP length equal to the IP
//! payload's. Anything else is [`Checkable::No`].

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Whether the transport checksum could be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkable {
    /// Checked (and valid, for [`verify`]).
    Yes,
    /// Not IP, a fragment, truncated, or not TCP, UDP or ICMP.
    No,
}

/// Where the transport message is and how its checksum is computed.
struct L4 {
    proto: u8,
    /// The checksum field's offset in the frame.
    field: usize,
    /// The message (header and payload).
    start: usize,
    end: usize,
    /// The pseudo-header's sum (0 for ICMPv4, which has none).
    pseudo: u32,
    /// IPv4 UDP: a zero checksum means "none".
    zero_means_none: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The 16-bit one's complement sum of `bytes` (odd length padded), added to
/// `sum` without folding.
fn add(mut sum: u32, bytes: &[u8]) -> u32 {
    let (pairs, rest) = bytes.as_chunks::<2>();
    for pair in pairs {
        sum += u32::from(u16::from_be_bytes(*pair));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 header's range in the frame, when it fits.
fn ipv4_header(frame: &[u8]) -> Option<(usize, usize)> {
    if be16(frame, 12)? != ETH_P_IP {
        return None;
    }
    let vihl = *frame.get(ETH_LEN)?;
    let len = usize::from(vihl & 0x0f) * 4;
    (vihl >> 4 == 4 && len >= 20 && ETH_LEN + len <= frame.len())
        .then_some((ETH_LEN, ETH_LEN + len))
}

fn l4(frame: &[u8]) -> Option<L4> {
    let (proto, start, end, pseudo) = match be16(frame, 12)? {
        ETH_P_IP => {
            let (ip, hdr_end) = ipv4_header(frame)?;
            let total = usize::from(be16(frame, ip + 2)?);
            let frag = be16(frame, ip + 6)?;
            if frag & 0x3fff != 0 || ip + total > frame.len() || ip + total < hdr_end {
                return None;
            }
            let proto = frame[ip + 9];
            let len = ip + total - hdr_end;
            let pseudo = if proto == ICMP {
                0
            } else {
                add(u32::from(proto) + len as u32, &frame[ip + 12..ip + 20])
            };
            (proto, hdr_end, ip + total, pseudo)
        }
        ETH_P_IPV6 => {
            let ip = ETH_LEN;
            if frame.len() < ip + 40 || frame[ip] >> 4 != 6 {
                return None;
            }
            let payload = usize::from(be16(frame, ip + 4)?);
            let proto = frame[ip + 6];
            let (start, end) = (ip + 40, ip + 40 + payload);
            if end > frame.len() {
                return None;
            }
            let pseudo = add(u32::from(proto) + payload as u32, &frame[ip + 8..ip + 40]);
            (proto, start, end, pseudo)
        }
        _ => return None,
    };
    let (field, min) = match proto {
        TCP => (16, 20),
        UDP => (6, 8),
        ICMP if be16(frame, 12)? == ETH_P_IP => (2, 8),
        ICMPV6 if be16(frame, 12)? == ETH_P_IPV6 => (2, 8),
        _ => return None,
    };
    if end - start < min {
        return None;
    }
    if proto == TCP && usize::from(frame[start + 12] >> 4) * 4 > end - start {
        return None;
    }
    if proto == UDP && usize::from(be16(frame, start + 4)?) != end - start {
        return None;
    }
    Some(L4 {
        proto,
        field: start + field,
        start,
        end,
        pseudo,
        zero_means_none: proto == UDP && be16(frame, 12)? == ETH_P_IP,
    })
}

/// Writes the IPv4 header checksum and the transport checksum (see the
/// module docs for which are written). An IPv4 UDP checksum of zero
/// ("none") is left so.
pub fn fix(frame: &mut [u8]) -> Checkable {
    if let Some((start, end)) = ipv4_header(frame) {
        frame[start + 10..start + 12].fill(0);
        let sum = !fold(add(0, &frame[start..end]));
        frame[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let Some(l4) = l4(frame) else {
        return Checkable::No;
    };
    if l4.zero_means_none && be16(frame, l4.field) == Some(0) {
        return Checkable::Yes;
    }
    frame[l4.field..l4.field + 2].fill(0);
    let mut sum = !fold(add(l4.pseudo, &frame[l4.start..l4.end]));
    if l4.proto == UDP && sum == 0 {
        sum = 0xffff;
    }
    frame[l4.field..l4.field + 2].copy_from_slice(&sum.to_be_bytes());
    Checkable::Yes
}

/// Checks the IPv4 header checksum and the transport checksum; `Err` says
/// which is wrong.
pub fn verify(frame: &[u8]) -> Result<Checkable, String> {
    if let Some((start, end)) = ipv4_header(frame)
        && fold(add(0, &frame[start..end])) != 0xffff
    {
        return Err("IPv4 header checksum".into());
    }
    let Some(l4) = l4(frame) else {
        return Ok(Checkable::No);
    };
    let stored = be16(frame, l4.field).unwrap_or(0);
    if l4.zero_means_none && stored == 0 {
        return Ok(Checkable::Yes);
    }
    if l4.proto == UDP && stored == 0 {
        return Err("IPv6 UDP checksum 0".into());
    }
    if fold(add(l4.pseudo, &frame[l4.start..l4.end])) != 0xffff {
        let name = match l4.proto {
            TCP => "TCP",
            UDP => "UDP",
            _ => "ICMP",
        };
        return Err(format!("{name} checksum {stored:#06x}"));
    }
    Ok(Checkable::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 TCP SYN 10.0.0.1:40000 → 10.0.0.2:80,
    /// checksums zero.
    fn tcp4() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f
    }

    fn udp6() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0, 0, 12, UDP, 64];
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 12, 0, 0, b'a', b'b', b'c', b'd']);
        f
    }

    #[test]
    fn a_fixed_frame_verifies() {
        for mut f in [tcp4(), udp6()] {
            assert_eq!(fix(&mut f), Checkable::Yes);
            assert_eq!(verify(&f), Ok(Checkable::Yes));
        }
    }

    #[test]
    fn known_checksums() {
        // Computed independently (RFC 1071, in Python).
        let mut f = tcp4();
        fix(&mut f);
        assert_eq!(be16(&f, 14 + 10), Some(0x149a));
        assert_eq!(be16(&f, 34 + 16), Some(0xff4e));
    }

    #[test]
    fn a_rewritten_address_without_its_checksum_update_fails() {
        let mut f = tcp4();
        fix(&mut f);
        // The destination address changes, the header checksum follows (as a
        // program would with l3_csum_replace), the TCP checksum does not.
        f[14 + 19] = 3;
        let header = 14..34;
        f[14 + 10..14 + 12].fill(0);
        let sum = !fold(add(0, &f[header]));
        f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(verify(&f), Err("TCP checksum 0xff4e".into()));
        f[14 + 8] = 63;
        assert_eq!(verify(&f), Err("IPv4 header checksum".into()));
    }

    #[test]
    fn what_cannot_be_checked_is_said() {
        let mut fragment = tcp4();
        fragment[14 + 6] = 0x20; // more fragments
        assert_eq!(fix(&mut fragment), Checkable::No);
        let mut truncated = udp6();
        truncated.truncate(60);
        assert_eq!(fix(&mut truncated), Checkable::No);
        assert_eq!(verify(&[0u8; 60]), Ok(Checkable::No));
    }

    #[test]
    fn ipv4_udp_without_a_checksum_is_valid() {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 10, 0, 0, 1, 2]);
        assert_eq!(fix(&mut f), Checkable::Yes);
        assert_eq!(be16(&f, 34 + 6), Some(0));
        assert_eq!(verify(&f), Ok(Checkable::Yes));
    }
}
