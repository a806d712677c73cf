//! Originating TLS: a pool whose backends speak TLS (`backend_tls`). The
//! data path and the health checks both call [`Originator::handshake`] on a
//! connected socket, so every check type verifies what connections do.
//!
//! Verification is on by default, against the system's trust store or
//! `ca`; only `insecure_skip_verify = true` turns it off (Envoy's
//! off-by-default upstream TLS is a known trap). The name sent as SNI and
//! verified is `server_name`, else the backend's host name as configured
//! (`db.internal:6379` → `db.internal`), else its IP address. Sessions to
//! backends resume: rustls' client keeps tickets per server name (256 by
//! default), and one client configuration serves the whole pool.
//!
//! The CA, client certificate and key are read again when they change (the
//! reload poller) and on SIGHUP; a bad new file keeps the old ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;
use log::{info, warn};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::certs::{self, Stamps};
use crate::config::{BackendTlsConfig, CertificatePaths, TrustAnchors};
use crate::stats::tls::{CertificateExpiry, TlsFailure, TlsStats};

/// A pool's TLS towards its backends.
pub struct Originator {
    /// The configuration and what was built from it, swapped on reload.
    loaded: ArcSwap<Loaded>,
    /// The pool's handshake counters.
    stats: Arc<TlsStats>,
}

struct Loaded {
    config: BackendTlsConfig,
    client: Arc<ClientConfig>,
    stamps: Stamps,
}

/// A handshake that failed: why, and the text for logs.
#[derive(Debug)]
pub struct HandshakeError {
    pub failure: TlsFailure,
    pub message: String,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TLS handshake failed ({}): {}",
            self.failure.label(),
            self.message
        )
    }
}

impl Originator {
    /// Reads `config`'s files. `Err`: one line naming the file and why.
    pub fn new(config: &BackendTlsConfig, stats: Arc<TlsStats>) -> Result<Originator, String> {
        let loaded = load(config, &stats)?;
        if config.insecure_skip_verify {
            warn!(
                "backend_tls: insecure_skip_verify = true: backends' certificates are not verified"
            );
        }
        Ok(Originator {
            loaded: ArcSwap::from_pointee(loaded),
            stats,
        })
    }

    /// Takes `config` (or, the same, its files again when `force` or when
    /// they changed); a failure keeps what serves now, said in a warning.
    pub fn update(&self, config: &BackendTlsConfig, force: bool, pool: &str) {
        let current = self.loaded.load();
        if !force && current.config == *config && Stamps::of(config.files()) == current.stamps {
            return;
        }
        match load(config, &self.stats) {
            Ok(loaded) => {
                if current.config != *config || current.stamps != loaded.stamps {
                    info!("pool {pool}: backend TLS files (re)loaded");
                }
                self.loaded.store(Arc::new(loaded));
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Relaxed);
                warn!("pool {pool}: keeping the backend TLS files already loaded: {e}");
                self.loaded.store(Arc::new(Loaded {
                    config: current.config.clone(),
                    client: current.client.clone(),
                    stamps: Stamps::of(config.files()),
                }));
            }
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> BackendTlsConfig {
        self.loaded.load().config.clone()
    }

    /// Completes a verified handshake on `stream`, connected to the
    /// backend `name` (as configured) at `addr`, by `deadline`. Counted.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        name: &str,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let started = Instant::now();
        let loaded = self.loaded.load_full();
        let server_name = server_name(&loaded.config, name, addr);
        let connector = tokio_rustls::TlsConnector::from(loaded.client.clone());
        let result =
            tokio::time::timeout_at(deadline, connector.connect(server_name, stream)).await;
        let error = match result {
            Ok(Ok(stream)) => {
                let connection = stream.get_ref().1;
                let tls13 = connection.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
                let resumed = connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                self.stats
                    .count_handshake(tls13, resumed, started.elapsed());
                return Ok(stream);
            }
            Ok(Err(e)) => {
                let (failure, _) = certs::failure_of(&e);
                HandshakeError {
                    failure,
                    message: e.to_string(),
                }
            }
            Err(_) => HandshakeError {
                failure: TlsFailure::Timeout,
                message: "not finished in time".into(),
            },
        };
        self.stats.count_failure(error.failure);
        Err(error)
    }
}

/// The name to send and verify for backend `name` (`host:port` as
/// configured) at `addr`.
fn server_name(config: &BackendTlsConfig, name: &str, addr: SocketAddr) -> ServerName<'static> {
    let host = config.server_name.clone().unwrap_or_else(|| {
        let host = name.rsplit_once(':').map_or(name, |(host, _)| host);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    });
    ServerName::try_from(host).unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()))
}

/// Builds the client configuration for `config`, reading its files.
fn load(config: &BackendTlsConfig, stats: &TlsStats) -> Result<Loaded, String> {
    let stamps = Stamps::of(config.files());
    let roots = match &config.ca {
        TrustAnchors::System => certs::system_roots()?,
        TrustAnchors::File(path) => certs::read_roots(path)?,
    };
    let builder = ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut client = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let loaded = certs::load_certificate(&CertificatePaths {
                cert: cert.clone(),
                key: key.clone(),
            })?;
            stats.set_certificates(vec![CertificateExpiry {
                path: cert.display().to_string(),
                subject: loaded.leaf.subject.clone(),
                not_after: loaded.leaf.not_after,
            }]);
            builder
                .with_client_auth_cert(loaded.key.cert.clone(), certs::read_key(key)?)
                .map_err(|e| format!("{}: unusable client key: {e}", key.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    client.alpn_protocols = config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    if config.insecure_skip_verify {
        client
            .dangerous()
            .set_certificate_verifier(Arc::new(Unverified(certs::provider())));
    }
    Ok(Loaded {
        config: config.clone(),
        client: Arc::new(client),
        stamps,
    })
}

/// `insecure_skip_verify`: any certificate, its signatures still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
