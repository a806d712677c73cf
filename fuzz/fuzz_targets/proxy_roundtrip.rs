//! Fuzzes the PROXY encoders: any pair of addresses, in either family or
//! mixed, encodes to a v1 line and a v2 header that our strict parser reads
//! back to the same addresses (v4-mapped IPv6 counted as IPv4).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use tcplb::proxy::proxy_protocol::{ProxyHeader, V1_MAX_LEN, encode_v1, encode_v2, parse};

/// Builds an address from the input: a family byte, then 16 address bytes
/// (IPv4 uses the first 4), then a 2-byte port.
fn address(bytes: &[u8]) -> SocketAddr {
    let mut raw = [0u8; 19];
    raw[..bytes.len().min(19)].copy_from_slice(&bytes[..bytes.len().min(19)]);
    let port = u16::from_be_bytes([raw[17], raw[18]]);
    let ip = if raw[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(raw[1], raw[2], raw[3], raw[4]))
    } else {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&raw[1..17]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    SocketAddr::new(ip, port)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fuzz_target!(|data: &[u8]| {
    let source = address(data);
    let destination = address(data.get(19..).unwrap_or(&[]));
    let v1 = encode_v1(source, destination);
    assert!(v1.len() <= V1_MAX_LEN, "{}", String::from_utf8_lossy(&v1));
    for encoded in [v1, encode_v2(source, destination)] {
        let parsed = parse(&encoded).expect("our own encoding parses");
        assert_eq!(parsed.consumed, encoded.len());
        let ProxyHeader::Proxied {
            source: s,
            destination: d,
        } = parsed.header
        else {
            panic!("our own encoding lost its addresses");
        };
        assert_eq!(canonical(s), canonical(source));
        assert_eq!(canonical(d), canonical(destination));
    }
});
