//! The TLS part of the configuration model: terminating on a listener or a
//! route (`[listener.tls]`, `[listener.route.tls]`, `--tls-cert`/`--tls-key`)
//! and originating to a pool's backends (`backend_tls`, `--backend-tls`).
//!
//! Plain data only (paths, names, versions): the files are read and checked
//! by `certs` and by the TLS modules of the data path, which also reload
//! them when they change. Defaults are listed on each type.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How long a client may take to finish its TLS handshake (ClientHello to
/// Finished) on a terminating listener or route: 10 s, as HAProxy's
/// `timeout client` default for a handshake and nginx's
/// `ssl_handshake_timeout` (60 s there; 10 s keeps slow-loris cheaper).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stateful sessions kept per terminating listener or route by default:
/// a bounded cache (rustls evicts the oldest past it).
pub const SESSION_CACHE: usize = 20_000;

/// Terminating TLS: what a listener or a route holds to complete the
/// handshake itself, then forward the plaintext to its pool.
///
/// Defaults: TLS 1.2 and 1.3, rustls' default cipher suites, no ALPN
/// (the route's own `alpn` match list when it has one), session tickets on
/// with in-memory keys rotated every 6 hours, a stateful cache of
/// [`SESSION_CACHE`] sessions, no client certificates, handshake timeout
/// [`HANDSHAKE_TIMEOUT`].
#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// The certificates served, chosen per ClientHello by its server name
    /// against each certificate's own DNS names (exact, then wildcard); the
    /// first is the default for hellos without SNI or with no match. An
    /// RSA and an ECDSA certificate for the same names coexist: the
    /// client's signature algorithms pick.
    pub certificates: Vec<CertificatePaths>,
    /// The oldest protocol version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in preference order. Empty: none, except on
    /// a route that matches by ALPN, which then offers its own list.
    pub alpn: Vec<String>,
    /// How long a handshake may take before the client is closed.
    pub handshake_timeout: Duration,
    /// Session tickets (stateless resumption); on by default.
    pub tickets: bool,
    /// A file of shared ticket keys, so that several tcplb instances (and
    /// the process after an upgrade) resume each other's sessions. `None`:
    /// keys of the process's own, rotated every 6 hours.
    pub ticket_key_file: Option<PathBuf>,
    /// Stateful sessions kept (TLS 1.2 session IDs, and TLS 1.3 when
    /// tickets are off); 0 turns the cache off.
    pub session_cache: usize,
    /// Client certificates (mTLS); `None`: none asked for.
    pub client_auth: Option<ClientAuthConfig>,
}

impl TlsConfig {
    /// Terminating with `certificates` and the defaults.
    pub fn new(certificates: Vec<CertificatePaths>) -> Self {
        TlsConfig {
            certificates,
            min_version: TlsVersion::V1_2,
            alpn: Vec::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            tickets: true,
            ticket_key_file: None,
            session_cache: SESSION_CACHE,
            client_auth: None,
        }
    }

    /// Every file this configuration reads, for reloads and `tcplb check`.
    pub fn files(&self) -> Vec<&PathBuf> {
        let mut files: Vec<&PathBuf> = Vec::new();
        for pair in &self.certificates {
            files.push(&pair.cert);
            files.push(&pair.key);
        }
        if let Some(path) = &self.ticket_key_file {
            files.push(path);
        }
        if let Some(auth) = &self.client_auth {
            files.push(&auth.ca);
            files.extend(&auth.crls);
        }
        files
    }
}

/// A certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS protocol version, as `min_version` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl FromStr for TlsVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim_start_matches("TLSv").trim_start_matches("tls") {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            _ => Err(format!(
                "unknown TLS version {text:?}: use \"1.2\" or \"1.3\" (older versions are not offered)"
            )),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// Client certificates: who may connect to a terminating listener or route.
///
/// A certificate must chain to `ca`, be unrevoked by every CRL in `crls`,
/// and, when any allow-list is set, match one entry of one of them.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientAuthConfig {
    /// The CA certificates (PEM) client certificates must chain to.
    pub ca: PathBuf,
    /// Whether a client without a certificate is refused (`required`, the
    /// default) or let through unauthenticated (`optional`).
    pub mode: ClientAuthMode,
    /// Certificate revocation lists (PEM), checked for the whole chain.
    pub crls: Vec<PathBuf>,
    /// Allow-lists; all empty: any certificate of `ca` is allowed.
    pub allow: ClientAllowList,
}

/// `client_auth = "required" | "optional"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuthMode {
    #[default]
    Required,
    Optional,
}

impl FromStr for ClientAuthMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "required" => Ok(ClientAuthMode::Required),
            "optional" => Ok(ClientAuthMode::Optional),
            _ => Err(format!(
                "unknown client_auth {text:?}: use \"required\" or \"optional\""
            )),
        }
    }
}

/// Which verified client certificates are let in; a certificate passes when
/// it matches any one entry of any list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAllowList {
    /// DNS names in the subject alternative name (exact, lower-case).
    pub san_dns: Vec<String>,
    /// URIs in the subject alternative name, e.g. SPIFFE IDs
    /// (`spiffe://example.org/ns/prod/sa/api`); exact.
    pub san_uri: Vec<String>,
    /// Subject common names; exact.
    pub subject_cn: Vec<String>,
    /// SHA-256 digests of the certificate's SubjectPublicKeyInfo, 32 bytes
    /// each (written as 64 hex digits): pins that survive a re-issue with
    /// the same key.
    pub spki_sha256: Vec<[u8; 32]>,
}

impl ClientAllowList {
    /// Whether no list is set, so that the CA alone decides.
    pub fn is_empty(&self) -> bool {
        self.san_dns.is_empty()
            && self.san_uri.is_empty()
            && self.subject_cn.is_empty()
            && self.spki_sha256.is_empty()
    }
}

/// Parses an SPKI pin: 64 hex digits, colons allowed between bytes (as
/// `openssl ... | openssl dgst -sha256 -c` prints them).
pub fn parse_spki_pin(text: &str) -> Result<[u8; 32], String> {
    parse_hex(text).ok_or_else(|| {
        format!("bad SPKI SHA-256 pin {text:?}: expected 64 hex digits (32 bytes, colons allowed)")
    })
}

/// Exactly `N` bytes written as hex digits, colons allowed between them.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 2 * N || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

/// Originating TLS: a pool speaks TLS to its backends.
///
/// Defaults: verification against the system's trust store, the SNI and
/// the name verified are the backend's host name when it was configured by
/// name (else `server_name`, required for backends given as addresses to be
/// verified by name), no client certificate, no ALPN, sessions resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTlsConfig {
    /// Whom backend certificates must chain to.
    pub ca: TrustAnchors,
    /// The name sent as SNI and verified against the certificate; `None`:
    /// each backend's own host name, or its IP address.
    pub server_name: Option<String>,
    /// A client certificate (PEM chain) presented to backends that ask.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM); set together with `client_cert`.
    pub client_key: Option<PathBuf>,
    /// ALPN protocols offered to backends.
    pub alpn: Vec<String>,
    /// Accept any certificate, unverified (`insecure_skip_verify = true`):
    /// for tests only; logged as a warning at start.
    pub insecure_skip_verify: bool,
}

impl BackendTlsConfig {
    /// Verified against `ca`, with the defaults otherwise.
    pub fn new(ca: TrustAnchors) -> Self {
        BackendTlsConfig {
            ca,
            server_name: None,
            client_cert: None,
            client_key: None,
            alpn: Vec::new(),
            insecure_skip_verify: false,
        }
    }

    /// Every file this configuration reads.
    pub fn files(&self) -> Vec<&PathBuf> {
        let mut files: Vec<&PathBuf> = Vec::new();
        if let TrustAnchors::File(path) = &self.ca {
            files.push(path);
        }
        files.extend(self.client_cert.iter());
        files.extend(self.client_key.iter());
        files
    }
}

/// `ca = "PATH" | "system"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchors {
    /// The operating system's trust store.
    System,
    /// CA certificates in a PEM file.
    File(PathBuf),
}

impl FromStr for TrustAnchors {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("empty CA path: give a PEM file or \"system\"".into()),
            "system" => Ok(TrustAnchors::System),
            path => Ok(TrustAnchors::File(PathBuf::from(path))),
        }
    }
}

/// Checks an ALPN protocol name: 1 to 255 printable ASCII characters.
pub fn check_alpn(protocol: &str) -> Result<(), String> {
    if protocol.is_empty()
        || protocol.len() > 255
        || !protocol.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "bad ALPN protocol {protocol:?}: expected 1 to 255 printable ASCII characters, \
             e.g. \"h2\" or \"acme-tls/1\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_pins_parse() {
        assert_eq!("1.3".parse::<TlsVersion>(), Ok(TlsVersion::V1_3));
        assert_eq!("TLSv1.2".parse::<TlsVersion>(), Ok(TlsVersion::V1_2));
        assert!("1.1".parse::<TlsVersion>().is_err());
        let hex = "ab".repeat(32);
        assert_eq!(parse_spki_pin(&hex), Ok([0xab; 32]));
        let colons = vec!["0f"; 32].join(":");
        assert_eq!(parse_spki_pin(&colons), Ok([0x0f; 32]));
        assert!(parse_spki_pin("abcd").is_err());
        assert!(parse_spki_pin(&"zz".repeat(32)).is_err());
        assert_eq!("system".parse::<TrustAnchors>(), Ok(TrustAnchors::System));
        assert!(check_alpn("h2").is_ok() && check_alpn("").is_err());
    }
}
