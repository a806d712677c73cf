//! Which certificate a terminating listener or route serves: chosen per
//! ClientHello by its server name against each certificate's own DNS
//! names, then by the client's signature algorithms among the
//! certificates for that name (an RSA and an ECDSA one can coexist, as
//! nginx's and HAProxy's several `ssl_certificate`/`crt` do).
//!
//! Names are matched as RFC 6125 says: exactly, or by a wildcard that
//! stands for one whole label (`*.example.com` takes `a.example.com`, not
//! `a.b.example.com` nor `example.com`). A hello without SNI, or whose
//! name no certificate has, gets the default: the certificates for the
//! first one's names. Lookups are two hash probes; rustls calls
//! [`ResolvesServerCert::resolve`] once per full handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::LoadedCertificate;

/// The certificates of one terminating listener or route, by name.
#[derive(Debug, Default)]
pub struct Certificates {
    /// By exact DNS name.
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// By the parent of a wildcard (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// For hellos without SNI or with a name nobody has.
    default: Vec<Arc<CertifiedKey>>,
}

impl Certificates {
    /// The table for `loaded`, in configuration order: earlier
    /// certificates come first where several share a name and all suit
    /// the client.
    pub fn new(loaded: &[LoadedCertificate]) -> Certificates {
        let mut table = Certificates::default();
        let first_names = loaded.first().map(|c| c.leaf.server_names());
        for certificate in loaded {
            let names = certificate.leaf.server_names();
            for name in &names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut table.wildcard, parent),
                    None => (&mut table.exact, name.as_str()),
                };
                map.entry(key.to_string())
                    .or_default()
                    .push(certificate.key.clone());
            }
            if first_names.as_ref() == Some(&names) {
                table.default.push(certificate.key.clone());
            }
        }
        table
    }

    /// The certificates for `server_name` (lower-case), or the default.
    fn candidates(&self, server_name: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = server_name else {
            return &self.default;
        };
        if let Some(list) = self.exact.get(name) {
            return list;
        }
        let parent = name.split_once('.').map(|(_, parent)| parent);
        match parent.and_then(|p| self.wildcard.get(p)) {
            Some(list) => list,
            None => &self.default,
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let candidates = self.candidates(name.as_deref());
        let schemes = hello.signature_schemes();
        // None suits: the first all the same, so that rustls fails the
        // handshake with `handshake_failure` (nothing in common), not
        // `access_denied` (no certificate at all).
        candidates
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or(candidates.first())
            .cloned()
    }
}
