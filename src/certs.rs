//! What both TLS sides read from disk, and what a certificate says: chains
//! and keys (checked to match), CA bundles, CRLs, and a certificate's names,
//! validity and identity (subject CN, SAN DNS and URI, SPKI SHA-256).
//!
//! It sits below `proxy` (termination) and `pool` (origination, health
//! checks), so loading and inspecting exist once. PEM is read by
//! rustls-pki-types, keys by the aws-lc-rs provider, X.509 fields by
//! x509-parser; nothing here parses certificate bytes by hand.
//!
//! Every error is one line that names the file and says why, as reloads and
//! `tcplb check` print it. [`Stamps`] tells when files changed, for the
//! reload poller.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::CertificatePaths;
use crate::stats::tls::TlsFailure;

/// The crypto provider every TLS config of tcplb uses: rustls' aws-lc-rs,
/// with its default cipher suites and key exchanges.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// What tcplb needs to know of one certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspected {
    /// The subject, as `CN=a.test, O=Example` (RFC 4514 order of x509-parser).
    pub subject: String,
    /// The subject's first common name, if any.
    pub common_name: Option<String>,
    /// DNS names in the subject alternative name, lower-case.
    pub dns_names: Vec<String>,
    /// URIs in the subject alternative name (SPIFFE IDs among them).
    pub uris: Vec<String>,
    /// Not valid before, in seconds since the Unix epoch.
    pub not_before: i64,
    /// Not valid after, in seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
}

impl Inspected {
    /// The names a server certificate is chosen by: its SAN DNS names, or
    /// its CN when it has none (as browsers no longer do, but old
    /// certificates need).
    pub fn server_names(&self) -> Vec<String> {
        if self.dns_names.is_empty() {
            self.common_name
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect()
        } else {
            self.dns_names.clone()
        }
    }
}

/// Reads what `der` says. `Err`: not an X.509 certificate.
pub fn inspect(der: &[u8]) -> Result<Inspected, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut inspected = Inspected {
        subject: cert.subject().to_string(),
        common_name,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        ..Inspected::default()
    };
    let spki = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    inspected.spki_sha256.copy_from_slice(spki.as_ref());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => inspected.dns_names.push(dns.to_ascii_lowercase()),
                GeneralName::URI(uri) => inspected.uris.push(uri.to_string()),
                _ => {}
            }
        }
    }
    Ok(inspected)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Formats seconds since the epoch as an RFC 3339 UTC date for messages.
pub fn format_time(unix: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The certificates of a PEM file, in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: malformed PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PRIVATE KEY block in the file", path.display())
        }
        e => format!("{}: malformed PEM: {e}", path.display()),
    })
}

/// A certificate chain and its key, ready to serve, with what the leaf says.
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    pub leaf: Inspected,
    /// The files it came from.
    pub paths: CertificatePaths,
}

/// Loads a chain and its key and checks them: the key must be the leaf's
/// (a mismatch is an error) and the leaf valid now (an expired or
/// not-yet-valid one is an error: it would fail every handshake).
pub fn load_certificate(paths: &CertificatePaths) -> Result<LoadedCertificate, String> {
    let chain = read_certificates(&paths.cert)?;
    let leaf = inspect(&chain[0]).map_err(|e| format!("{}: {e}", paths.cert.display()))?;
    let key = read_key(&paths.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}: the key does not match the certificate {}",
            paths.key.display(),
            paths.cert.display()
        ),
        e => format!("{}: unusable key: {e}", paths.key.display()),
    })?;
    let now = now_unix();
    if leaf.not_after < now {
        return Err(format!(
            "{}: the certificate expired on {}",
            paths.cert.display(),
            format_time(leaf.not_after)
        ));
    }
    if leaf.not_before > now {
        return Err(format!(
            "{}: the certificate is not valid before {}",
            paths.cert.display(),
            format_time(leaf.not_before)
        ));
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        leaf,
        paths: paths.clone(),
    })
}

/// The CA certificates of a PEM file as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The operating system's trust store (rustls-native-certs: on Linux the
/// distribution's bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(format!("the system's trust store has no usable CA: {why}"));
    }
    Ok(roots)
}

/// The CRLs of PEM files, each with at least one `X509 CRL` block.
pub fn read_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut crls = Vec::new();
    for path in paths {
        let pem = read(path)?;
        let found = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: malformed PEM: {e}", path.display()))?;
        if found.is_empty() {
            return Err(format!("{}: no X509 CRL block in the file", path.display()));
        }
        crls.extend(found);
    }
    Ok(crls)
}

/// Why a handshake failed, from the error rustls or the socket gave, and
/// the alert involved when there was one (sent by us, or received).
pub fn failure_of(error: &std::io::Error) -> (TlsFailure, Option<String>) {
    use std::io::ErrorKind;
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            ErrorKind::TimedOut => (TlsFailure::Timeout, None),
            _ => (TlsFailure::Closed, None),
        };
    };
    classify(tls)
}

/// [`failure_of`] for a rustls error.
pub fn classify(error: &rustls::Error) -> (TlsFailure, Option<String>) {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error, PeerIncompatible};
    let alert = |a: Alert| Some(format!("{a:?}"));
    match error {
        Error::AlertReceived(a) => (TlsFailure::PeerAlert, alert(*a)),
        Error::NoCertificatesPresented => {
            (TlsFailure::NoCertificate, alert(Alert::CertificateRequired))
        }
        Error::InvalidCertificate(cert) => {
            let failure = match cert {
                Cert::UnknownIssuer => TlsFailure::UnknownCa,
                Cert::Revoked => TlsFailure::Revoked,
                Cert::Expired
                | Cert::ExpiredContext { .. }
                | Cert::NotValidYet
                | Cert::NotValidYetContext { .. } => TlsFailure::Expired,
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                    TlsFailure::WrongName
                }
                Cert::ApplicationVerificationFailure => TlsFailure::NotAllowed,
                _ => TlsFailure::BadCertificate,
            };
            (failure, alert(Alert::from(cert.clone())))
        }
        Error::PeerIncompatible(why) => {
            let failure = match why {
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::Tls13RequiredForQuic
                | PeerIncompatible::SupportedVersionsExtensionRequired => {
                    TlsFailure::ProtocolVersion
                }
                _ => TlsFailure::NoSharedCipher,
            };
            let sent = match failure {
                TlsFailure::ProtocolVersion => Alert::ProtocolVersion,
                _ => Alert::HandshakeFailure,
            };
            (failure, alert(sent))
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            (TlsFailure::NotTls, alert(Alert::DecodeError))
        }
        Error::InappropriateHandshakeMessage { .. } => {
            (TlsFailure::Other, alert(Alert::UnexpectedMessage))
        }
        Error::DecryptError => (TlsFailure::Other, alert(Alert::DecryptError)),
        _ => (TlsFailure::Other, None),
    }
}

/// What a set of files looked like (modification time, size, inode): a
/// reload poller compares two to find a change without reading them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamps(Vec<Option<(SystemTime, u64, u64)>>);

impl Stamps {
    /// The files' stamps now; a missing file has none.
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Stamps {
        use std::os::unix::fs::MetadataExt;
        Stamps(
            paths
                .into_iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len(), meta.ino()))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_mismatched_key_an_empty_file_and_garbage_are_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("tcplb-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let cert = write(&dir, "a.pem", &one.cert.pem());
        let key = write(&dir, "a.key", &one.signing_key.serialize_pem());
        let other = write(&dir, "b.key", &two.signing_key.serialize_pem());
        let empty = write(&dir, "empty.pem", "");
        let paths = |cert: &PathBuf, key: &PathBuf| CertificatePaths {
            cert: cert.clone(),
            key: key.clone(),
        };
        let loaded = load_certificate(&paths(&cert, &key)).unwrap();
        assert_eq!(loaded.leaf.server_names(), ["a.test"]);
        assert!(loaded.leaf.not_after > now_unix());
        let e = load_certificate(&paths(&cert, &other)).err().unwrap();
        assert!(e.contains("does not match"), "{e}");
        let e = load_certificate(&paths(&empty, &key)).err().unwrap();
        assert!(
            e.contains("empty.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = load_certificate(&paths(&cert, &empty)).err().unwrap();
        assert!(e.contains("no PRIVATE KEY"), "{e}");
        let missing = dir.join("missing.pem");
        let e = load_certificate(&paths(&missing, &key)).err().unwrap();
        assert!(e.contains("cannot read"), "{e}");
        assert_ne!(Stamps::of([&cert]), Stamps::of([&missing]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
