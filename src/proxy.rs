//! The PROXY protocol (versions 1 and 2): the real client address, sent by a load
//! balancer in front of qqmx before any SMTP.
//!
//! The header is read with exact-size reads, so not one byte of the SMTP conversation
//! that may follow it is consumed here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes that open a version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// The header was malformed.
    #[error("bad PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection failed or closed while the header was read.
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> ProxyError {
    ProxyError::Io(e.to_string())
}

/// Reads a header; returns the client address it carries, or `None` when it carries no
/// IP address — a `LOCAL` (v2) or `UNKNOWN` (v1) header, or a v2 header for an `AF_UNIX`
/// or unspecified family — where the connection's own peer address stands.
pub(crate) async fn read_header<S>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let mut start = [0u8; 12];
    stream.read_exact(&mut start).await.map_err(io)?;
    if start == V2_SIGNATURE {
        return read_v2(stream).await;
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("v1 header longer than 107 bytes"));
        }
        line.push(stream.read_u8().await.map_err(io)?);
    }
    parse_v1(&line[..line.len() - 2])
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let text =
        std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 header is not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("bad source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("address does not match the family"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyError::Malformed(
            "v1 header is not PROXY TCP4|TCP6|UNKNOWN ...",
        )),
    }
}

async fn read_v2<S>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.map_err(io)?;
    let [version_command, family, hi, lo] = head;
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 header with another version"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(io)?;
    match version_command & 0x0f {
        0 => return Ok(None), // LOCAL: a health check from the proxy itself
        1 => {}
        _ => {
            return Err(ProxyError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ));
        }
    }
    match family >> 4 {
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(ip.into(), port)))
        }
        2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)))
        }
        // UNSPEC, or AF_UNIX (socket paths): no client IP, so the peer address stands.
        0 | 3 => Ok(None),
        1 | 2 => Err(ProxyError::Malformed("v2 address block too short")),
        _ => Err(ProxyError::Malformed(
            "v2 address family is not UNSPEC, IPv4, IPv6 or UNIX",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut stream = bytes;
        let header = read_header(&mut stream).await;
        (header, stream.to_vec())
    }

    #[tokio::test]
    async fn version_1() {
        let (addr, rest) = read(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 25\r\nEHLO x\r\n").await;
        assert_eq!(addr, Ok(Some("203.0.113.9:5555".parse().expect("addr"))));
        assert_eq!(rest, b"EHLO x\r\n", "the SMTP that follows is untouched");
        let (addr, _) = read(b"PROXY TCP6 2001:db8::1 ::1 1 25\r\n").await;
        assert_eq!(addr, Ok(Some("[2001:db8::1]:1".parse().expect("addr"))));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(None));
        assert_eq!(
            read(b"EHLO client.example\r\n").await.0,
            Err(ProxyError::Missing)
        );
        assert!(matches!(
            read(b"PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n").await.0,
            Err(ProxyError::Malformed(_))
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(ProxyError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn version_2() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 7, 127, 0, 0, 1, 0x30, 0x39, 0, 25,
        ]);
        header.extend_from_slice(b"QUIT\r\n");
        let (addr, rest) = read(&header).await;
        assert_eq!(addr, Ok(Some("198.51.100.7:12345".parse().expect("addr"))));
        assert_eq!(rest, b"QUIT\r\n");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0, Ok(None));
        // LOCAL with addresses, and PROXY over AF_UNIX (two 108-byte paths) or UNSPEC:
        // no client IP in them, so the connection's own peer address stands.
        let mut local_with_addresses = V2_SIGNATURE.to_vec();
        local_with_addresses.extend_from_slice(&[0x20, 0x11, 0, 12]);
        local_with_addresses.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0, 1, 0, 25]);
        assert_eq!(read(&local_with_addresses).await.0, Ok(None));
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.extend_from_slice(&[b'/'; 216]);
        unix.extend_from_slice(b"EHLO x\r\n");
        let (addr, rest) = read(&unix).await;
        assert_eq!(addr, Ok(None));
        assert_eq!(rest, b"EHLO x\r\n");
        let mut unix_dgram = V2_SIGNATURE.to_vec();
        unix_dgram.extend_from_slice(&[0x21, 0x32, 0, 0]);
        assert_eq!(read(&unix_dgram).await.0, Ok(None));
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 3, 1, 2, 3]);
        assert_eq!(read(&unspec).await.0, Ok(None));
        let mut unknown_family = V2_SIGNATURE.to_vec();
        unknown_family.extend_from_slice(&[0x21, 0x41, 0, 0]);
        assert!(matches!(
            read(&unknown_family).await.0,
            Err(ProxyError::Malformed(_))
        ));
        let truncated = [&V2_SIGNATURE[..], &[0x21, 0x11, 0, 12, 1, 2]].concat();
        assert!(matches!(read(&truncated).await.0, Err(ProxyError::Io(_))));
    }
}
