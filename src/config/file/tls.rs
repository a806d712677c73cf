//! The file's TLS tables: `[listener.tls]` / `[listener.route.tls]`
//! (terminating) and `backend_tls = { ... }` (originating), read into the
//! plain model of `config::tls`. Every problem is a message naming the key.

use std::path::PathBuf;

use serde::Deserialize;

use super::{PositiveDur, Text};
use crate::config::tls::{check_alpn, parse_spki_pin};
use crate::config::{
    BackendTlsConfig, CertificatePaths, ClientAllowList, ClientAuthConfig, ClientAuthMode,
    TlsConfig, TlsVersion, TrustAnchors,
};

/// `[listener.tls]`: every key of [`TlsConfig`], client authentication
/// flattened as nginx and HAProxy write it (`client_ca`, `client_auth`,
/// `crl`, `allow_*`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    certificates: Option<Vec<RawCertificate>>,
    min_version: Option<Text<TlsVersion>>,
    alpn: Option<Vec<String>>,
    handshake_timeout: Option<PositiveDur>,
    session_tickets: Option<bool>,
    ticket_key_file: Option<PathBuf>,
    session_cache: Option<usize>,
    client_ca: Option<PathBuf>,
    client_auth: Option<Text<ClientAuthMode>>,
    crl: Option<Vec<PathBuf>>,
    allow_san_dns: Option<Vec<String>>,
    allow_san_uri: Option<Vec<String>>,
    allow_subject_cn: Option<Vec<String>>,
    allow_spki_sha256: Option<Vec<String>>,
}

/// `{ cert = "chain.pem", key = "key.pem" }`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: PathBuf,
    key: PathBuf,
}

impl RawTls {
    /// The model, or every problem found (each one message).
    pub(super) fn into_config(self) -> Result<TlsConfig, Vec<String>> {
        let mut problems = Vec::new();
        let certificates: Vec<CertificatePaths> = self
            .certificates
            .unwrap_or_default()
            .into_iter()
            .map(|c| CertificatePaths {
                cert: c.cert,
                key: c.key,
            })
            .collect();
        if certificates.is_empty() {
            problems.push(
                "`certificates` is empty: terminating needs at least one \
                 { cert = \"chain.pem\", key = \"key.pem\" }"
                    .to_string(),
            );
        }
        let mut config = TlsConfig::new(certificates);
        if let Some(version) = self.min_version {
            config.min_version = version.0;
        }
        for protocol in self.alpn.iter().flatten() {
            if let Err(m) = check_alpn(protocol) {
                problems.push(format!("`alpn`: {m}"));
            }
        }
        config.alpn = self.alpn.unwrap_or_default();
        if let Some(timeout) = self.handshake_timeout {
            config.handshake_timeout = timeout.0;
        }
        if let Some(tickets) = self.session_tickets {
            config.tickets = tickets;
        }
        if self.ticket_key_file.is_some() && !config.tickets {
            problems.push("`ticket_key_file` is set but `session_tickets = false`".into());
        }
        config.ticket_key_file = self.ticket_key_file;
        if let Some(size) = self.session_cache {
            config.session_cache = size;
        }
        let mut allow = ClientAllowList {
            san_dns: self.allow_san_dns.unwrap_or_default(),
            san_uri: self.allow_san_uri.unwrap_or_default(),
            subject_cn: self.allow_subject_cn.unwrap_or_default(),
            spki_sha256: Vec::new(),
        };
        allow
            .san_dns
            .iter_mut()
            .for_each(|n| n.make_ascii_lowercase());
        for pin in self.allow_spki_sha256.iter().flatten() {
            match parse_spki_pin(pin) {
                Ok(pin) => allow.spki_sha256.push(pin),
                Err(m) => problems.push(format!("`allow_spki_sha256`: {m}")),
            }
        }
        let crls = self.crl.unwrap_or_default();
        match self.client_ca {
            Some(ca) => {
                config.client_auth = Some(ClientAuthConfig {
                    ca,
                    mode: self.client_auth.map_or(ClientAuthMode::Required, |m| m.0),
                    crls,
                    allow,
                })
            }
            None => {
                let set = [
                    (self.client_auth.is_some(), "client_auth"),
                    (!crls.is_empty(), "crl"),
                    (!allow.is_empty(), "allow_*"),
                ];
                for (_, key) in set.iter().filter(|(set, _)| *set) {
                    problems.push(format!(
                        "`{key}` needs `client_ca`: the CA client certificates must chain to"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// `backend_tls = { ca = "PATH" | "system", server_name, client_cert,
/// client_key, alpn, insecure_skip_verify }`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    ca: Option<Text<TrustAnchors>>,
    server_name: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    alpn: Option<Vec<String>>,
    insecure_skip_verify: Option<bool>,
}

impl RawBackendTls {
    pub(super) fn into_config(self) -> Result<BackendTlsConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut config = BackendTlsConfig::new(self.ca.map_or(TrustAnchors::System, |c| c.0));
        if let Some(name) = self.server_name {
            if name.is_empty() || rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!(
                    "`server_name`: {name:?} is neither a DNS name nor an IP address"
                ));
            }
            config.server_name = Some(name);
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            problems.push("`client_cert` and `client_key` go together: set both or neither".into());
        }
        config.client_cert = self.client_cert;
        config.client_key = self.client_key;
        for protocol in self.alpn.iter().flatten() {
            if let Err(m) = check_alpn(protocol) {
                problems.push(format!("`alpn`: {m}"));
            }
        }
        config.alpn = self.alpn.unwrap_or_default();
        config.insecure_skip_verify = self.insecure_skip_verify.unwrap_or(false);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::file::{parse, parse_all};
    use crate::config::{ClientAuthMode, TlsVersion, TrustAnchors};

    #[test]
    fn every_tls_key_is_read_and_routes_do_not_inherit_the_listeners_tls() {
        let text = r#"
[defaults]
backend_tls = { ca = "/ca.pem", server_name = "db.internal", client_cert = "/c.pem", client_key = "/c.key", alpn = ["h2"] }

[[listener]]
listen = "127.0.0.1:8443"
backends = ["127.0.0.1:8081"]
[listener.tls]
certificates = [{ cert = "/a.pem", key = "/a.key" }, { cert = "/b.pem", key = "/b.key" }]
min_version = "1.3"
alpn = ["h2", "http/1.1"]
handshake_timeout = "3s"
ticket_key_file = "/tickets"
session_cache = 10
client_ca = "/clients.pem"
client_auth = "optional"
crl = ["/1.crl", "/2.crl"]
allow_san_dns = ["API.test"]
allow_san_uri = ["spiffe://example.org/api"]
allow_subject_cn = ["api"]
allow_spki_sha256 = ["00000000000000000000000000000000000000000000000000000000000000ff"]

[[listener.route]]
name = "plain"
server_names = ["plain.test"]
backends = ["127.0.0.1:8082"]

[[listener.route]]
name = "own"
server_names = ["own.test"]
backends = ["127.0.0.1:8083"]
tls = { certificates = [{ cert = "/own.pem", key = "/own.key" }], session_tickets = false }
"#;
        let config = parse(text, Path::new("t.toml")).unwrap();
        let listener = &config.services[0];
        let tls = listener.tls.as_ref().unwrap();
        assert_eq!(tls.certificates.len(), 2);
        assert_eq!(tls.certificates[1].key, PathBuf::from("/b.key"));
        assert_eq!(tls.min_version, TlsVersion::V1_3);
        assert_eq!(tls.alpn, ["h2", "http/1.1"]);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
        assert_eq!(tls.ticket_key_file, Some(PathBuf::from("/tickets")));
        assert_eq!(tls.session_cache, 10);
        let auth = tls.client_auth.as_ref().unwrap();
        assert_eq!(auth.mode, ClientAuthMode::Optional);
        assert_eq!(auth.crls.len(), 2);
        assert_eq!(auth.allow.san_dns, ["api.test"]);
        assert_eq!(auth.allow.san_uri, ["spiffe://example.org/api"]);
        assert_eq!(auth.allow.subject_cn, ["api"]);
        assert_eq!(auth.allow.spki_sha256[0][31], 0xff);
        let backend_tls = listener.backend_tls.as_ref().unwrap();
        assert_eq!(backend_tls.ca, TrustAnchors::File("/ca.pem".into()));
        assert_eq!(backend_tls.server_name.as_deref(), Some("db.internal"));
        assert_eq!(backend_tls.alpn, ["h2"]);
        assert!(!backend_tls.insecure_skip_verify);
        let [plain, own] = &listener.routes[..] else {
            panic!("two routes")
        };
        assert_eq!(plain.pool.tls, None);
        // A pool setting: routes inherit it.
        assert_eq!(plain.pool.backend_tls.as_ref(), Some(backend_tls));
        let own = own.pool.tls.as_ref().unwrap();
        assert!(!own.tickets && own.client_auth.is_none());
    }

    #[test]
    fn bad_tls_tables_say_what_is_wrong() {
        let text = r#"
[[listener]]
listen = "127.0.0.1:8443"
backends = ["127.0.0.1:8081"]
tls = { certificates = [], alpn = [""], crl = ["/x"], allow_spki_sha256 = ["zz"] }
backend_tls = { client_cert = "/c.pem", server_name = "bad name!" }
"#;
        let errors = parse_all(text, Path::new("t.toml"), &[])
            .unwrap_err()
            .errors;
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let all = all.join("\n");
        for expected in [
            "`certificates` is empty",
            "bad ALPN protocol",
            "`crl` needs `client_ca`",
            "bad SPKI SHA-256 pin",
            "`client_cert` and `client_key` go together",
            "neither a DNS name nor an IP address",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
        }
        let e = parse(
            "[[listener]]\nlisten = \"1\"\nbackends = [\"127.0.0.1:1\"]\ntls = { certificates = [{ cert = \"a\", key = \"b\" }], min_version = \"1.0\" }\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown TLS version"), "{e}");
    }
}
