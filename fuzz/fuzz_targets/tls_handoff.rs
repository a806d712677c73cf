//! Fuzzes what a terminating listener does with a client's first bytes
//! before rustls takes over: tcplb's own ClientHello reader, and, for what
//! it accepts, the hand-over of those exact bytes to rustls' `Acceptor`
//! (as `proxy::tls::Terminator::accept` does). Neither may panic. rustls
//! may want more: the reader stops at the end of the hello, rustls at the
//! end of its record, which may claim more bytes than the message (this
//! target found it); the terminator then reads on within its handshake
//! timeout.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcplb::proxy::client_hello::parse;

fuzz_target!(|data: &[u8]| {
    if parse(data).is_err() {
        return;
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let _ = (hello.server_name(), hello.signature_schemes(), hello.alpn().map(|a| a.count()));
        }
        Ok(None) | Err(_) => {}
    }
});
