//! Client certificates (mTLS): rustls' `WebPkiClientVerifier` checks the
//! chain against `client_ca` and the CRLs; on top of it, the allow-lists
//! (SAN DNS, SAN URI such as SPIFFE IDs, subject CN, SPKI SHA-256 pin) pick
//! which of the CA's certificates may connect. A certificate that chains
//! but matches no list is refused inside the handshake with
//! `access_denied`, the alert RFC 8446 names for it, and counted as
//! `not_allowed`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::certs;
use crate::config::{ClientAllowList, ClientAuthConfig, ClientAuthMode};

/// The verifier for `config`: every file read now. `Err`: a file is
/// unreadable or not what it should be, said in one line.
pub fn verifier(config: &ClientAuthConfig) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = certs::read_roots(&config.ca)?;
    let crls = certs::read_crls(&config.crls)?;
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), certs::provider())
            .with_crls(crls);
    if config.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|e| {
        format!(
            "{}: cannot verify clients with it: {e}",
            config.ca.display()
        )
    })?;
    if config.allow.is_empty() {
        return Ok(inner);
    }
    Ok(Arc::new(AllowListed {
        inner,
        allow: config.allow.clone(),
    }))
}

/// Whether a client certificate matches one entry of `allow` (which is not
/// empty).
pub fn allowed(allow: &ClientAllowList, cert: &certs::Inspected) -> bool {
    cert.dns_names.iter().any(|n| allow.san_dns.contains(n))
        || cert.uris.iter().any(|u| allow.san_uri.contains(u))
        || cert
            .common_name
            .as_ref()
            .is_some_and(|cn| allow.subject_cn.contains(cn))
        || allow.spki_sha256.contains(&cert.spki_sha256)
}

/// The CA's verifier, then the allow-lists.
#[derive(Debug)]
struct AllowListed {
    inner: Arc<dyn ClientCertVerifier>,
    allow: ClientAllowList,
}

impl ClientCertVerifier for AllowListed {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let refused =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        let cert = certs::inspect(end_entity).map_err(|_| refused())?;
        if allowed(&self.allow, &cert) {
            Ok(verified)
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
