//! Fuzzes the TLS ClientHello reader with arbitrary bytes. Besides never
//! panicking, it checks what the reader relies on:
//! - an accepted hello is accepted the same with any bytes after it (the
//!   client's next flight must not change the routing decision);
//! - `Incomplete` is only ever said of at most `MAX_BUFFERED` bytes, so the
//!   reader's buffer is bounded;
//! - every prefix of an accepted hello is `Incomplete` (the reader may stop
//!   at the first complete hello, never before).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcplb::proxy::client_hello::{HelloError, MAX_BUFFERED, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(hello) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\x17\x03\x03\x00\x01\x00 trailing");
            assert_eq!(parse(&more).ok(), Some(hello), "trailing bytes changed the hello");
            // Prefixes cost a parse each: check them on small inputs only.
            if data.len() <= 4096 {
                let first_ok = (0..=data.len()).find(|&k| parse(&data[..k]).is_ok());
                if let Some(k) = first_ok {
                    for j in 0..k {
                        assert!(
                            matches!(parse(&data[..j]), Err(HelloError::Incomplete)),
                            "prefix {j} of a hello complete at {k} is not incomplete"
                        );
                    }
                }
            }
        }
        Err(HelloError::Incomplete) => assert!(data.len() <= MAX_BUFFERED),
        Err(_) => {}
    }
});
