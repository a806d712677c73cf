//! Fuzzes the admin endpoint's request-head parser with arbitrary bytes: it
//! must never panic, and its verdicts must agree with reading a stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcplb::admin::{Error, MAX_HEAD, parse_request};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            // A complete head stays complete (and the same) with more bytes after it.
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"trailing body bytes");
            let again = parse_request(&longer).expect("a parsed head must still parse");
            assert_eq!(again.method, request.method);
            assert_eq!(again.path, request.path);
            assert!(!request.path.contains('?'), "the query must be cut off");
        }
        Err(Error::Incomplete) => {
            assert!(data.len() < MAX_HEAD, "incomplete past the size limit");
            assert!(
                !data.windows(4).any(|w| w == b"\r\n\r\n"),
                "incomplete although the head ended"
            );
        }
        Err(Error::TooLarge) => assert!(data.len() > MAX_HEAD - 4),
        Err(Error::Malformed(why)) => assert!(!why.is_empty()),
    }
});
