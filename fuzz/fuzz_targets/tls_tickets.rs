//! Fuzzes the shared ticket-key file's tickets, which clients send back
//! and tcplb decrypts before rustls reads the session inside: arbitrary
//! bytes never panic and never decrypt (they are not sealed under the
//! key), and what is encrypted decrypts to itself. The key file's parser
//! gets the same bytes as text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::server::ProducesTickets;
use tcplb::proxy::tls::tickets::SharedKeys;

const KEYS: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f\n\
                    ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2eff\n";

fuzz_target!(|data: &[u8]| {
    let keys = SharedKeys::parse(KEYS, "fuzz").unwrap();
    assert!(keys.decrypt(data).is_none(), "forged ticket accepted");
    let sealed = keys.encrypt(data).unwrap();
    assert_eq!(keys.decrypt(&sealed).as_deref(), Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SharedKeys::parse(text, "fuzz");
    }
});
