//! Fuzzes the PROXY protocol parser with arbitrary client bytes: it must
//! never panic, and its answers must be consistent with reading a stream
//! (see the invariants below), since `read_header` relies on them to consume
//! exactly the header.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tcplb::proxy::proxy_protocol::{
    Parsed, ProxyError, ProxyHeader, V1_MAX_LEN, V2_FIXED_LEN, encode_v1, encode_v2, parse,
};

/// Prefix checks are quadratic; this keeps each input fast.
const PREFIX_CHECK_MAX: usize = 300;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(parsed) => check_complete(data, parsed),
        Err(ProxyError::Incomplete) => {
            // Everything seen so far must fit in some header.
            let limit = if data.first() == Some(&b'P') {
                V1_MAX_LEN - 1
            } else {
                V2_FIXED_LEN + usize::from(u16::MAX) - 1
            };
            assert!(data.len() <= limit, "incomplete after {} bytes", data.len());
        }
        Err(ProxyError::Invalid(_)) => {}
        Err(other) => panic!("parse gave a stream error: {other}"),
    }
    if data.len() <= PREFIX_CHECK_MAX {
        check_prefixes(data);
    }
});

fn check_complete(data: &[u8], parsed: Parsed) {
    let n = parsed.consumed;
    assert!(n >= 1 && n <= data.len());
    if data[0] == b'P' {
        assert!(n <= V1_MAX_LEN);
    } else {
        assert!(n >= V2_FIXED_LEN);
    }
    // The header alone parses the same; one byte less is incomplete.
    assert_eq!(parse(&data[..n]).ok(), Some(parsed));
    assert!(matches!(parse(&data[..n - 1]), Err(ProxyError::Incomplete)));
    // What we parsed, we can send on, and it reads back the same.
    if let ProxyHeader::Proxied {
        source,
        destination,
    } = parsed.header
    {
        for encoded in [
            encode_v1(source, destination),
            encode_v2(source, destination),
        ] {
            let again = parse(&encoded).expect("our own encoding parses");
            assert_eq!(again.consumed, encoded.len());
            let ProxyHeader::Proxied {
                source: s,
                destination: d,
            } = again.header
            else {
                panic!("our own encoding lost its addresses");
            };
            assert_eq!(canonical(s), canonical(source));
            assert_eq!(canonical(d), canonical(destination));
        }
    }
}

/// Fed one byte at a time, the parser says Incomplete until it says either
/// Ok (exactly at the header's end, then the same Ok forever) or Invalid
/// (then Invalid forever).
fn check_prefixes(data: &[u8]) {
    let mut done: Option<Parsed> = None;
    let mut invalid = false;
    for k in 0..=data.len() {
        match parse(&data[..k]) {
            Ok(p) => {
                assert!(!invalid, "valid after invalid at {k}");
                match done {
                    Some(first) => assert_eq!(p, first),
                    None => {
                        assert_eq!(p.consumed, k);
                        done = Some(p);
                    }
                }
            }
            Err(ProxyError::Invalid(_)) => {
                assert!(done.is_none(), "invalid after valid at {k}");
                invalid = true;
            }
            Err(ProxyError::Incomplete) => {
                assert!(!invalid && done.is_none(), "incomplete again at {k}");
            }
            Err(other) => panic!("parse gave a stream error: {other}"),
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
