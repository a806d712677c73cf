//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): a header a
//! proxy puts before the client's first byte so the next hop learns who the
//! client really was.
//!
//! tcplb writes it to backends (`--send-proxy`) and reads it from clients
//! (`--accept-proxy`). The parser is a pure function over bytes that tells a
//! header that is merely incomplete from one that can never become valid, so
//! it can be fuzzed and so the reader can consume exactly the header and not
//! one byte of the payload behind it.
//!
//! Mixed address families (say an IPv4 client on an IPv6 listener) are sent
//! as TCP6 / AF_INET6 with the IPv4 side written as a v4-mapped IPv6 address
//! (`::ffff:a.b.c.d`), so no address is lost; two IPv4 (or v4-mapped)
//! addresses are sent as TCP4 / AF_INET.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use log::debug;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ProxyVersion, ServiceConfig};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line, CRLF included, is never longer than this.
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a version 2 header: signature, version/command, family, length.
pub const V2_FIXED_LEN: usize = 16;

const V1_PREFIX: &[u8] = b"PROXY ";
/// Address block sizes of version 2 families (two addresses, then two ports if any).
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// What a PROXY header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed TCP connection: the original client and the address it reached.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, v2 `LOCAL`, or a v2 family we do not carry (UNSPEC,
    /// UDP, UNIX): the real connection endpoints stand.
    Local,
}

impl ProxyHeader {
    /// The original client, if the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }

    /// The address the original client connected to, if carried.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { destination, .. } => Some(*destination),
            ProxyHeader::Local => None,
        }
    }
}

/// A complete header found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub header: ProxyHeader,
    /// Length of the header in bytes; the payload starts right after.
    pub consumed: usize,
    /// Where the v2 `PP2_TYPE_AUTHORITY` value (the host name the client
    /// asked for, e.g. from TLS SNI) sits in the header bytes, if sent;
    /// read it with [`Parsed::authority`].
    pub authority_at: Option<(usize, usize)>,
}

impl Parsed {
    /// The authority TLV's host name, given the header's bytes; checked
    /// to be non-empty UTF-8 when parsed.
    pub fn authority<'a>(&self, header: &'a [u8]) -> Option<&'a str> {
        let (start, len) = self.authority_at?;
        std::str::from_utf8(header.get(start..start + len)?).ok()
    }
}

/// v2 TLV types tcplb reads (spec 2.2.1 onwards); others are skipped.
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_CRC32C: u8 = 0x03;

#[derive(Debug)]
pub enum ProxyError {
    /// The bytes so far are the start of a valid header; more are needed.
    Incomplete,
    /// The bytes can never become a valid header, whatever follows.
    Invalid(&'static str),
    /// The peer closed the connection before a complete header.
    Closed,
    /// No complete header within the allowed time.
    Timeout,
    Io(io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Incomplete => f.write_str("incomplete PROXY header"),
            ProxyError::Invalid(why) => write!(f, "invalid PROXY header: {why}"),
            ProxyError::Closed => f.write_str("closed before a complete PROXY header"),
            ProxyError::Timeout => f.write_str("no complete PROXY header in time"),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Both addresses in one family: TCP4 when both are IPv4 (or v4-mapped),
/// otherwise IPv6 with any IPv4 address v4-mapped.
enum Pair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn pair(src: IpAddr, dst: IpAddr) -> Pair {
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let map = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match (unmap(src), unmap(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Pair::V4(s, d),
        _ => Pair::V6(map(src), map(dst)),
    }
}

/// A version 1 line for a connection from `src` to `dst`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (sport, dport) = (src.port(), dst.port());
    let line = match pair(src.ip(), dst.ip()) {
        Pair::V4(s, d) => format!("PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
        Pair::V6(s, d) => format!("PROXY TCP6 {s} {d} {sport} {dport}\r\n"),
    };
    line.into_bytes()
}

/// A version 2 PROXY-command header (TCP over IPv4 or IPv6, no TLVs).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    encode_v2_with_authority(src, dst, None)
}

/// [`encode_v2`] with a `PP2_TYPE_AUTHORITY` TLV carrying `authority`
/// (the host name the client asked for), when given and at most 255 bytes.
pub fn encode_v2_with_authority(
    src: SocketAddr,
    dst: SocketAddr,
    authority: Option<&str>,
) -> Vec<u8> {
    encode_v2_with(src, dst, authority, None)
}

/// A version 2 PROXY-command header for a UDP datagram from `src` to
/// `dst` (UDP over IPv4 or IPv6, the spec's DGRAM transport, no TLVs): a
/// UDP listener's `send_proxy = "v2"` puts one before every datagram.
pub fn encode_v2_datagram(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = encode_v2_with(src, dst, None, None);
    // The family byte's low nibble is the transport: 0x2 is DGRAM.
    out[13] = (out[13] & 0xf0) | 0x2;
    out
}

/// What a terminated TLS connection tells its backend in v2 TLVs, as
/// HAProxy and ghostunnel send them: the negotiated ALPN
/// (`PP2_TYPE_ALPN`) and `PP2_TYPE_SSL` with the version, the cipher and
/// the client certificate's CN.
#[derive(Clone, Copy, Debug, Default)]
pub struct SslTlv<'a> {
    /// `TLSv1.3` or `TLSv1.2` (`PP2_SUBTYPE_SSL_VERSION`).
    pub version: &'a str,
    /// The cipher suite's IANA name (`PP2_SUBTYPE_SSL_CIPHER`).
    pub cipher: &'a str,
    /// The ALPN protocol negotiated, if any.
    pub alpn: Option<&'a str>,
    /// Whether the client presented a certificate (verified: tcplb refuses
    /// any other), and its CN (`PP2_SUBTYPE_SSL_CN`).
    pub client_cert: bool,
    pub client_cn: Option<&'a str>,
}

const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// `client` bits of the SSL TLV: over TLS, with a certificate on this
/// connection, with a certificate on this session.
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// Appends one TLV; values over 65,535 bytes are never written (none of
/// ours come near).
fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    if let Ok(len) = u16::try_from(value.len()) {
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
}

/// A v2 header with the authority and, for a terminated connection, the
/// ALPN and SSL TLVs.
pub fn encode_v2_with(
    src: SocketAddr,
    dst: SocketAddr,
    authority: Option<&str>,
    ssl: Option<&SslTlv<'_>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_INET6_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match pair(src.ip(), dst.ip()) {
        Pair::V4(s, d) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        Pair::V6(s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    let plain = out.len();
    if let Some(name) = authority.filter(|n| !n.is_empty() && n.len() <= 255) {
        push_tlv(&mut out, PP2_TYPE_AUTHORITY, name.as_bytes());
    }
    if let Some(ssl) = ssl {
        if let Some(alpn) = ssl.alpn {
            push_tlv(&mut out, PP2_TYPE_ALPN, alpn.as_bytes());
        }
        let mut client = PP2_CLIENT_SSL;
        if ssl.client_cert {
            client |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS;
        }
        // client, then verify (0: the certificate verified, or none sent).
        let mut value = vec![client, 0, 0, 0, 0];
        push_tlv(&mut value, PP2_SUBTYPE_SSL_VERSION, ssl.version.as_bytes());
        push_tlv(&mut value, PP2_SUBTYPE_SSL_CIPHER, ssl.cipher.as_bytes());
        if let Some(cn) = ssl.client_cn {
            push_tlv(&mut value, PP2_SUBTYPE_SSL_CN, cn.as_bytes());
        }
        push_tlv(&mut out, PP2_TYPE_SSL, &value);
    }
    if out.len() > plain {
        let body_len = u16::try_from(out.len() - V2_FIXED_LEN).unwrap_or(u16::MAX);
        out[14..16].copy_from_slice(&body_len.to_be_bytes());
    }
    out
}

/// Parses a header (either version) at the start of `buf`.
///
/// `Incomplete` promises that every byte of `buf` belongs to the header, so
/// a reader may consume them all and wait for more.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    match buf.first() {
        None => Err(ProxyError::Incomplete),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::Invalid("no PROXY signature")),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let prefix_len = buf.len().min(V1_PREFIX.len());
    if buf[..prefix_len] != V1_PREFIX[..prefix_len] {
        return Err(ProxyError::Invalid("no PROXY signature"));
    }
    // Find the CRLF within the first 107 bytes, rejecting as early as
    // possible anything that is not printable US-ASCII or a lone CR or LF.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(ProxyError::Invalid("CR not followed by LF")),
                None => {}
            },
            b' '..=b'~' => {}
            b'\n' => return Err(ProxyError::Invalid("LF without CR")),
            _ => return Err(ProxyError::Invalid("non-ASCII byte in v1 line")),
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::Invalid("v1 line longer than 107 bytes"))
        } else {
            Err(ProxyError::Incomplete)
        };
    };
    // Only printable ASCII so far, so this cannot fail.
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| ProxyError::Invalid("non-ASCII byte in v1 line"))?;
    let header = parse_v1_fields(line)?;
    Ok(Parsed {
        header,
        consumed: end + 2,
        authority_at: None,
    })
}

/// The part of a v1 line after `PROXY ` and before CRLF.
fn parse_v1_fields(line: &str) -> Result<ProxyHeader, ProxyError> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The spec: ignore anything after UNKNOWN up to the CRLF.
        return Ok(ProxyHeader::Local);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Invalid("v1 line needs exactly 6 fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| ProxyError::Invalid("bad TCP4 source address"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| ProxyError::Invalid("bad TCP4 destination address"))?
                .into(),
        ),
        "TCP6" => (
            parse_v1_ipv6(src).ok_or(ProxyError::Invalid("bad TCP6 source address"))?,
            parse_v1_ipv6(dst).ok_or(ProxyError::Invalid("bad TCP6 destination address"))?,
        ),
        _ => return Err(ProxyError::Invalid("unknown v1 protocol family")),
    };
    let sport = parse_port(sport).ok_or(ProxyError::Invalid("bad v1 source port"))?;
    let dport = parse_port(dport).ok_or(ProxyError::Invalid("bad v1 destination port"))?;
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(src, sport),
        destination: SocketAddr::new(dst, dport),
    })
}

/// An IPv6 address in hex-and-colons form: no zone, no brackets. The
/// dotted IPv4 tail (`::ffff:1.2.3.4`) is accepted since senders write it.
fn parse_v1_ipv6(text: &str) -> Option<IpAddr> {
    if !text
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// A decimal port 0-65535 with no sign and no heading zeroes.
fn parse_port(text: &str) -> Option<u16> {
    let digits_only =
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] != V2_SIGNATURE[..sig_len] {
        return Err(ProxyError::Invalid("no PROXY signature"));
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Err(ProxyError::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Invalid("v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Invalid("unknown v2 command")),
    };
    let Some(&family) = buf.get(13) else {
        return Err(ProxyError::Incomplete);
    };
    // LOCAL ignores the family byte entirely (spec 2.2); PROXY needs a
    // combination the spec lists.
    let address_len = match family {
        _ if local => 0,
        0x00 => 0,
        0x11 | 0x12 => V2_INET_LEN,
        0x21 | 0x22 => V2_INET6_LEN,
        0x31 | 0x32 => V2_UNIX_LEN,
        _ => return Err(ProxyError::Invalid("bad v2 address family or protocol")),
    };
    let Some(len_bytes) = buf.get(14..16) else {
        return Err(ProxyError::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    if len < address_len {
        return Err(ProxyError::Invalid("v2 length shorter than its addresses"));
    }
    let total = V2_FIXED_LEN + len;
    let Some(body) = buf.get(V2_FIXED_LEN..total) else {
        return Err(ProxyError::Incomplete);
    };
    if local || family == 0x00 {
        return Ok(Parsed {
            header: ProxyHeader::Local,
            consumed: total,
            authority_at: None,
        });
    }
    let (addresses, _) = body.split_at(address_len);
    let authority_at = check_tlvs(&buf[..total], V2_FIXED_LEN + address_len)?;
    let header = match family {
        0x11 => {
            let ip = |at: usize| {
                IpAddr::from([
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                ])
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UDP and UNIX: valid, but not something a TCP balancer can carry;
        // the spec says to fall back to the real endpoints.
        _ => ProxyHeader::Local,
    };
    Ok(Parsed {
        header,
        consumed: total,
        authority_at,
    })
}

/// Walks the TLVs of the complete v2 `header`, which start at `start`:
/// each must fit exactly in what the length declared. A `PP2_TYPE_CRC32C`
/// must match the CRC32c of the whole header computed with its own value
/// zeroed (spec 2.2.2); a `PP2_TYPE_AUTHORITY` must be non-empty UTF-8.
/// Neither may appear twice. Other types are skipped. Returns where the
/// authority's value is, if there is one.
fn check_tlvs(header: &[u8], start: usize) -> Result<Option<(usize, usize)>, ProxyError> {
    let mut at = start;
    let mut authority = None;
    let mut crc = None;
    while at < header.len() {
        // Type (1 byte), then the value's length (2 bytes, big-endian).
        let Some(tlv) = header.get(at..at + 3) else {
            return Err(ProxyError::Invalid("truncated v2 TLV header"));
        };
        let value_len = usize::from(u16::from_be_bytes([tlv[1], tlv[2]]));
        let value = at + 3;
        if value + value_len > header.len() {
            return Err(ProxyError::Invalid("v2 TLV longer than the header"));
        }
        match tlv[0] {
            PP2_TYPE_AUTHORITY => {
                if authority.is_some() {
                    return Err(ProxyError::Invalid("v2 authority TLV sent twice"));
                }
                let name = &header[value..value + value_len];
                if name.is_empty() || std::str::from_utf8(name).is_err() {
                    return Err(ProxyError::Invalid("v2 authority TLV is not a UTF-8 name"));
                }
                authority = Some((value, value_len));
            }
            PP2_TYPE_CRC32C => {
                if crc.is_some() {
                    return Err(ProxyError::Invalid("v2 CRC32C TLV sent twice"));
                }
                if value_len != 4 {
                    return Err(ProxyError::Invalid("v2 CRC32C TLV is not 4 bytes"));
                }
                crc = Some(value);
            }
            _ => {}
        }
        at = value + value_len;
    }
    if let Some(value) = crc {
        let sent = u32::from_be_bytes([
            header[value],
            header[value + 1],
            header[value + 2],
            header[value + 3],
        ]);
        // Only headers that carry a checksum pay for the copy.
        let mut zeroed = header.to_vec();
        zeroed[value..value + 4].fill(0);
        if crc32c::crc32c(&zeroed) != sent {
            return Err(ProxyError::Invalid("v2 CRC32C mismatch"));
        }
    }
    Ok(authority)
}

/// Reads one PROXY header from `stream`, consuming exactly its bytes: the
/// client's payload after it stays unread for the caller.
///
/// It peeks at what has arrived, parses, and consumes only bytes the parser
/// has placed inside the header, so a client that sends its header and
/// payload in one segment loses nothing.
/// Returns the header and, for v2, the authority TLV's name if one was sent.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(ProxyHeader, Option<String>), ProxyError> {
    tokio::time::timeout(timeout, read_header_inner(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_header_inner(
    stream: &mut TcpStream,
) -> Result<(ProxyHeader, Option<String>), ProxyError> {
    // Bytes already consumed, all known to belong to the header.
    let mut header: Vec<u8> = Vec::with_capacity(V1_MAX_LEN);
    let mut peeked = [0u8; 512];
    loop {
        let n = stream.peek(&mut peeked).await.map_err(ProxyError::Io)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let before = header.len();
        header.extend_from_slice(&peeked[..n]);
        match parse(&header) {
            Ok(parsed) => {
                // consumed > before: `header[..before]` alone was
                // incomplete. `min` only guards the slice below.
                let rest = parsed.consumed.saturating_sub(before).min(n);
                stream
                    .read_exact(&mut peeked[..rest])
                    .await
                    .map_err(ProxyError::Io)?;
                let authority = parsed.authority(&header).map(str::to_string);
                return Ok((parsed.header, authority));
            }
            Err(ProxyError::Incomplete) => {
                stream
                    .read_exact(&mut peeked[..n])
                    .await
                    .map_err(ProxyError::Io)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a client's PROXY header said (with `accept_proxy`), kept until the
/// pool is known: the header this connection sends on depends on it.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// The original client and destination, when a header carried them.
    pub header: Option<ProxyHeader>,
    /// The authority (host name) TLV a v2 header carried.
    pub authority: Option<String>,
}

/// Reads the client's PROXY header when `config` accepts one. Returns the
/// client address to use from here on (the header's, else `peer`) and
/// what the header said.
pub async fn receive(
    client: &mut TcpStream,
    peer: SocketAddr,
    config: &ServiceConfig,
) -> Result<(SocketAddr, Received), ProxyError> {
    if !config.accept_proxy {
        return Ok((peer, Received::default()));
    }
    let (header, authority) = read_header(client, config.connect_timeout).await?;
    if let Some(source) = header.source() {
        debug!("{peer}: PROXY header: client {source}, authority {authority:?}");
    }
    let source = header.source().unwrap_or(peer);
    Ok((
        source,
        Received {
            header: Some(header),
            authority,
        },
    ))
}

/// The header to write to the backend first: empty when `version` is
/// `None`. It names `source` and the destination a received header
/// carried (so a chain of proxies relays the original, as HAProxy does),
/// else the address the client reached on this listener. v2 carries the
/// server name as the authority TLV: the `server_name` tcplb read from the
/// ClientHello, else one a received header brought.
pub fn greeting(
    client: &TcpStream,
    source: SocketAddr,
    received: &Received,
    version: Option<ProxyVersion>,
    server_name: Option<&str>,
    ssl: Option<&SslTlv<'_>>,
) -> std::io::Result<Vec<u8>> {
    let Some(version) = version else {
        return Ok(Vec::new());
    };
    let destination = match received.header.as_ref().and_then(|h| h.destination()) {
        Some(addr) => addr,
        None => client.local_addr()?,
    };
    Ok(match version {
        ProxyVersion::V1 => encode_v1(source, destination),
        ProxyVersion::V2 => {
            let authority = server_name.or(received.authority.as_deref());
            encode_v2_with(source, destination, authority, ssl)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(src),
            destination: addr(dst),
        }
    }

    fn ok(buf: &[u8]) -> Parsed {
        match parse(buf) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(buf)),
        }
    }

    fn invalid(buf: &[u8]) {
        match parse(buf) {
            Err(ProxyError::Invalid(_)) => {}
            other => panic!("{:?} should be invalid, got {other:?}", buf),
        }
    }

    fn incomplete(buf: &[u8]) {
        match parse(buf) {
            Err(ProxyError::Incomplete) => {}
            other => panic!("{:?} should be incomplete, got {other:?}", buf),
        }
    }

    /// Every strict prefix of a header is incomplete, and the header parses
    /// the same with or without payload after it.
    fn check_prefixes(header: &[u8], expected: ProxyHeader) {
        for k in 0..header.len() {
            incomplete(&header[..k]);
        }
        let want = Parsed {
            header: expected,
            consumed: header.len(),
            authority_at: None,
        };
        assert_eq!(ok(header), want);
        let mut with_payload = header.to_vec();
        with_payload.extend_from_slice(b"\r\n\r\nPROXY payload\xff\x00");
        assert_eq!(ok(&with_payload), want);
    }

    fn v2(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    const V4_BODY: [u8; 12] = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb];

    fn v6_body() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        body
    }

    #[test]
    fn spec_v1_examples_parse() {
        let example = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
        assert_eq!(
            ok(example),
            Parsed {
                header: proxied("192.168.0.1:56324", "192.168.0.11:443"),
                consumed: 47,
                authority_at: None,
            }
        );
        let max4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(max4.len(), 56);
        check_prefixes(
            max4,
            proxied("255.255.255.255:65535", "255.255.255.255:65535"),
        );
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let max6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(max6.len(), 104);
        check_prefixes(
            max6.as_bytes(),
            proxied(&format!("[{ffff}]:65535"), &format!("[{ffff}]:65535")),
        );
        check_prefixes(b"PROXY UNKNOWN\r\n", ProxyHeader::Local);
        let worst = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(worst.len(), V1_MAX_LEN);
        check_prefixes(worst.as_bytes(), ProxyHeader::Local);
    }

    #[test]
    fn v1_edge_values_parse() {
        check_prefixes(
            b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
            proxied("0.0.0.0:0", "0.0.0.0:0"),
        );
        check_prefixes(
            b"PROXY TCP6 ::1 ::ffff:10.0.0.1 1 65535\r\n",
            proxied("[::1]:1", "[::ffff:10.0.0.1]:65535"),
        );
        check_prefixes(
            b"PROXY TCP6 2001:DB8::A 0000:0000:0000:0000:0000:0000:0000:0001 80 8080\r\n",
            proxied("[2001:db8::a]:80", "[::1]:8080"),
        );
        // UNKNOWN ignores whatever precedes the CRLF.
        check_prefixes(b"PROXY UNKNOWN whatever  goes\r\n", ProxyHeader::Local);
    }

    #[test]
    fn malformed_v1_lines_are_invalid() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\r\n",
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY unknown\r\n",
            // Family mismatch.
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
            // Bad IPv4 forms.
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.-8 1 2\r\n",
            b"PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
            // Bad IPv6 forms.
            b"PROXY TCP6 [::1] ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP6 ::1/128 ::1 1 2\r\n",
            b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
            b"PROXY TCP6 12345::1 ::1 1 2\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
            // Bad ports.
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n",
            // Line endings and bytes outside printable ASCII.
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r",
            b"PROXY UNKNOWN\n",
            b"PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n",
            b"PROXY UNKNOWN \xc3\xa9\r\n",
            // Early rejection: no need to wait for the CRLF.
            b"PROXY TCP4 1.2\n",
            b"PROXY \x00",
            b"PROXX",
            b"X",
        ];
        for case in cases {
            invalid(case);
        }
    }

    #[test]
    fn v1_line_length_is_bounded() {
        // 105 characters plus CRLF is fine; a CRLF beyond byte 107 is not.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(ok(&line).consumed, V1_MAX_LEN);
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        long.extend_from_slice(b"\r\n");
        invalid(&long);
        // Without a CRLF: incomplete up to 106 bytes, invalid from 107.
        let mut open = b"PROXY UNKNOWN ".to_vec();
        open.resize(V1_MAX_LEN - 1, b'x');
        incomplete(&open);
        open.push(b'x');
        invalid(&open);
        // A CR as byte 107 with its LF as byte 108 is too long as well.
        let mut split = b"PROXY UNKNOWN ".to_vec();
        split.resize(V1_MAX_LEN - 1, b'x');
        split.push(b'\r');
        incomplete(&split[..split.len() - 1]);
        invalid(&split);
        split.push(b'\n');
        invalid(&split);
    }

    #[test]
    fn incomplete_v1_waits_for_more() {
        for case in [
            &b""[..],
            b"P",
            b"PROX",
            b"PROXY",
            b"PROXY ",
            b"PROXY TCP4 1.2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
            // Garbage is only judged once the CRLF arrives.
            b"PROXY TCP9 nonsense",
        ] {
            incomplete(case);
        }
    }

    #[test]
    fn spec_v2_examples_parse() {
        let tcp4 = v2(0x21, 0x11, &V4_BODY);
        assert_eq!(
            tcp4,
            [
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
                0x00, 0x0c, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0x0b, 0xdc, 0x04, 0x01, 0xbb
            ]
        );
        check_prefixes(&tcp4, proxied("192.168.0.1:56324", "192.168.0.11:443"));
        check_prefixes(
            &v2(0x21, 0x21, &v6_body()),
            proxied("[2001:db8::1]:56324", "[2001:db8::2]:443"),
        );
        // LOCAL: no address, or an address block that must still be skipped.
        check_prefixes(&v2(0x20, 0x00, &[]), ProxyHeader::Local);
        check_prefixes(&v2(0x20, 0x11, &V4_BODY), ProxyHeader::Local);
        // LOCAL ignores even a family byte PROXY would reject.
        check_prefixes(&v2(0x20, 0xff, &[1, 2, 3]), ProxyHeader::Local);
        // PROXY over UNSPEC, UDP or UNIX falls back to the real endpoints.
        check_prefixes(&v2(0x21, 0x00, &[]), ProxyHeader::Local);
        check_prefixes(&v2(0x21, 0x00, &[9; 7]), ProxyHeader::Local);
        check_prefixes(&v2(0x21, 0x12, &V4_BODY), ProxyHeader::Local);
        check_prefixes(&v2(0x21, 0x22, &v6_body()), ProxyHeader::Local);
        check_prefixes(&v2(0x21, 0x31, &[0; 216]), ProxyHeader::Local);
        check_prefixes(&v2(0x21, 0x32, &[0; 216]), ProxyHeader::Local);
    }

    #[test]
    fn v2_tlvs_are_skipped_within_bounds() {
        let mut body = V4_BODY.to_vec();
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]); // NOOP, 2 bytes
        body.extend_from_slice(&[0x05, 0x00, 0x00]); // UNIQUE_ID, empty
        body.extend_from_slice(&[0xe0, 0x00, 0x01, 0x7f]); // custom
        check_prefixes(
            &v2(0x21, 0x11, &body),
            proxied("192.168.0.1:56324", "192.168.0.11:443"),
        );
        let mut big = V4_BODY.to_vec();
        big.extend_from_slice(&[0x04, 0x01, 0x00]);
        big.extend_from_slice(&[0u8; 256]);
        assert_eq!(ok(&v2(0x21, 0x11, &big)).consumed, 16 + 12 + 3 + 256);

        for tlvs in [
            &[0x04][..],
            &[0x04, 0x00],
            &[0x04, 0x00, 0x01],
            &[0x04, 0x00, 0x03, 0xaa, 0xbb],
            &[0x04, 0xff, 0xff],
            &[0x04, 0x00, 0x00, 0x05],
        ] {
            let mut body = V4_BODY.to_vec();
            body.extend_from_slice(tlvs);
            invalid(&v2(0x21, 0x11, &body));
        }
    }

    #[test]
    fn malformed_v2_headers_are_invalid() {
        let good = v2(0x21, 0x11, &V4_BODY);
        // Any changed signature byte.
        for i in 0..V2_SIGNATURE.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            invalid(&bad);
            invalid(&bad[..=i]);
        }
        // Versions other than 2, and unassigned commands.
        for ver_cmd in [0x01, 0x11, 0x31, 0xf1, 0x22, 0x2f, 0x10] {
            let mut bad = good.clone();
            bad[12] = ver_cmd;
            invalid(&bad);
            invalid(&bad[..13]);
        }
        // Families and protocols the spec does not list.
        for family in [0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x41, 0xf1, 0x1f] {
            let mut bad = good.clone();
            bad[13] = family;
            invalid(&bad);
            invalid(&bad[..14]);
        }
        // Lengths shorter than the address block.
        invalid(&v2(0x21, 0x11, &V4_BODY[..11]));
        invalid(&v2(0x21, 0x11, &[]));
        invalid(&v2(0x21, 0x21, &V4_BODY));
        invalid(&v2(0x21, 0x21, &v6_body()[..35]));
        invalid(&v2(0x21, 0x31, &[0; 215]));
        // ...judged as soon as the length is known.
        invalid(&v2(0x21, 0x21, &V4_BODY)[..16]);
    }

    #[test]
    fn truncated_v2_is_incomplete_not_accepted() {
        let good = v2(0x21, 0x21, &v6_body());
        for k in 0..good.len() {
            incomplete(&good[..k]);
        }
        // A declared length beyond what arrived: still waiting.
        let mut long = v2(0x21, 0x11, &V4_BODY);
        long[15] = 200;
        incomplete(&long);
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        huge.extend_from_slice(&[0; 1000]);
        incomplete(&huge);
    }

    #[test]
    fn encoders_write_the_exact_bytes() {
        let (s4, d4) = (addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        assert_eq!(
            encode_v1(s4, d4),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(encode_v2(s4, d4), v2(0x21, 0x11, &V4_BODY));
        let (s6, d6) = (addr("[2001:db8::1]:56324"), addr("[2001:db8::2]:443"));
        assert_eq!(
            encode_v1(s6, d6),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"
        );
        assert_eq!(encode_v2(s6, d6), v2(0x21, 0x21, &v6_body()));
    }

    #[test]
    fn mixed_families_become_v4_mapped_ipv6() {
        let (src, dst) = (addr("10.0.0.7:4000"), addr("[::1]:80"));
        assert_eq!(
            encode_v1(src, dst),
            b"PROXY TCP6 ::ffff:10.0.0.7 ::1 4000 80\r\n"
        );
        let want = proxied("[::ffff:10.0.0.7]:4000", "[::1]:80");
        assert_eq!(ok(&encode_v1(src, dst)).header, want);
        assert_eq!(ok(&encode_v2(src, dst)).header, want);
        assert_eq!(encode_v2(src, dst)[13], 0x21);
        // Two v4-mapped addresses (a dual-stack listener) are plain TCP4.
        let (src, dst) = (
            addr("[::ffff:10.0.0.7]:4000"),
            addr("[::ffff:127.0.0.1]:80"),
        );
        assert_eq!(
            encode_v1(src, dst),
            b"PROXY TCP4 10.0.0.7 127.0.0.1 4000 80\r\n"
        );
        assert_eq!(encode_v2(src, dst)[13], 0x11);
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let pairs = [
            ("1.2.3.4:1", "5.6.7.8:65535"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
            ("127.0.0.1:54321", "127.0.0.1:8080"),
            ("[::1]:1", "[::]:0"),
            ("[2001:db8:0:1:2:3:4:5]:443", "[fe80::1]:22"),
            ("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[::2]:2"),
        ];
        for (src, dst) in pairs {
            let (src, dst) = (addr(src), addr(dst));
            let want = ProxyHeader::Proxied {
                source: src,
                destination: dst,
            };
            check_prefixes(&encode_v1(src, dst), want);
            check_prefixes(&encode_v2(src, dst), want);
        }
    }

    /// A connected loopback pair: (what the balancer reads, the client).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// A v2 TCP4 header with the TLVs given as (type, value), and, when
    /// `crc` says so, a CRC32C TLV last holding the right checksum.
    fn v2_with_tlvs(tlvs: &[(u8, &[u8])], crc: bool) -> Vec<u8> {
        let mut body = V4_BODY.to_vec();
        for (kind, value) in tlvs {
            body.push(*kind);
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
        }
        if crc {
            body.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        }
        let mut header = v2(0x21, 0x11, &body);
        if crc {
            let sum = crc32c::crc32c(&header);
            let at = header.len() - 4;
            header[at..].copy_from_slice(&sum.to_be_bytes());
        }
        header
    }

    #[test]
    fn v2_crc32c_is_verified() {
        let good = v2_with_tlvs(&[(0x04, b"noop")], true);
        assert_eq!(ok(&good).consumed, good.len());
        // Every prefix of a good header is merely incomplete.
        for k in 0..good.len() {
            incomplete(&good[..k]);
        }
        // One flipped bit anywhere after the command byte: rejected. (A flip
        // of the command to LOCAL makes the spec discard the whole block,
        // checksum included: the real endpoints are used then.)
        for at in 13..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(
                !matches!(parse(&bad), Ok(p) if p.consumed == good.len()),
                "a flip at byte {at} went unnoticed"
            );
        }
        let mut wrong = good.clone();
        let last = wrong.len() - 1;
        wrong[last] ^= 0xff;
        match parse(&wrong) {
            Err(ProxyError::Invalid(why)) => assert_eq!(why, "v2 CRC32C mismatch"),
            other => panic!("{other:?}"),
        }
        invalid(&v2_with_tlvs(&[(PP2_TYPE_CRC32C, &[1, 2, 3])], false));
        let twice = v2_with_tlvs(&[(PP2_TYPE_CRC32C, &[0, 0, 0, 0])], true);
        match parse(&twice) {
            Err(ProxyError::Invalid(why)) => assert_eq!(why, "v2 CRC32C TLV sent twice"),
            other => panic!("{other:?}"),
        }
        // The spec's own test: the CRC32c of "123456789" is 0xe3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn v2_authority_is_read_and_checked() {
        let header = v2_with_tlvs(&[(PP2_TYPE_AUTHORITY, b"db.example.com")], true);
        let parsed = ok(&header);
        assert_eq!(parsed.authority(&header), Some("db.example.com"));
        assert_eq!(
            parsed.header,
            proxied("192.168.0.1:56324", "192.168.0.11:443")
        );
        invalid(&v2_with_tlvs(&[(PP2_TYPE_AUTHORITY, b"")], false));
        invalid(&v2_with_tlvs(&[(PP2_TYPE_AUTHORITY, b"\xff\xfe")], false));
        invalid(&v2_with_tlvs(
            &[
                (PP2_TYPE_AUTHORITY, b"a.test"),
                (PP2_TYPE_AUTHORITY, b"b.test"),
            ],
            false,
        ));
        // Written by us, read back the same.
        let src: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let encoded = encode_v2_with_authority(src, dst, Some("a.test"));
        let parsed = ok(&encoded);
        assert_eq!(parsed.consumed, encoded.len());
        assert_eq!(parsed.authority(&encoded), Some("a.test"));
        assert_eq!(parsed.header.source(), Some(src));
        assert_eq!(
            encode_v2_with_authority(src, dst, None),
            encode_v2(src, dst)
        );
    }

    #[tokio::test]
    async fn reader_returns_the_authority_and_leaves_the_payload() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = socket_pair().await;
        let mut sent = v2_with_tlvs(&[(PP2_TYPE_AUTHORITY, b"a.test")], true);
        sent.extend_from_slice(b"PAYLOAD");
        client.write_all(&sent).await.unwrap();
        drop(client);
        let (header, authority) = read_header(&mut server, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(header, proxied("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(authority.as_deref(), Some("a.test"));
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"PAYLOAD");
    }

    #[tokio::test]
    async fn reader_takes_exactly_the_header_even_byte_by_byte() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = socket_pair().await;
        let sent = b"PROXY TCP4 10.1.2.3 10.0.0.1 1234 80\r\nPAYLOAD";
        let writer = tokio::spawn(async move {
            for byte in sent {
                client.write_all(&[*byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client
        });
        let header = read_header(&mut server, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(header, (proxied("10.1.2.3:1234", "10.0.0.1:80"), None));
        drop(writer.await.unwrap());
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"PAYLOAD");
    }

    #[tokio::test]
    async fn reader_reports_eof_timeout_and_garbage() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = socket_pair().await;
        client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        client.shutdown().await.unwrap();
        let e = read_header(&mut server, Duration::from_secs(20)).await;
        assert!(matches!(e, Err(ProxyError::Closed)), "{e:?}");

        let (mut server, _client) = socket_pair().await;
        let e = read_header(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(e, Err(ProxyError::Timeout)), "{e:?}");

        let (mut server, mut client) = socket_pair().await;
        client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
        let e = read_header(&mut server, Duration::from_secs(20)).await;
        assert!(matches!(e, Err(ProxyError::Invalid(_))), "{e:?}");
    }
}
