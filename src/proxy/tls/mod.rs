//! TLS termination: a listener or route that holds the keys completes the
//! handshake itself and forwards the plaintext to its pool.
//!
//! The ClientHello is read first by [`super::client_hello`], as for
//! passthrough routes, so one port can mix routes that pass TLS through
//! and routes that terminate; the route picked by SNI and ALPN decides.
//! Those bytes are then fed to rustls' [`Acceptor`] and the handshake
//! finishes through tokio-rustls' [`StartHandshake`], with the route's own
//! `ServerConfig`, within its handshake timeout.
//!
//! - [`certificates`]: which certificate a hello gets (SNI, then the
//!   client's signature algorithms: RSA and ECDSA side by side);
//! - [`client_auth`]: client certificates, CRLs and allow-lists;
//! - [`tickets`]: session ticket keys, rotating or from a shared file;
//! - [`pipe`]: moving plaintext between the TLS stream and the backend.
//!
//! A [`Terminator`] lives as long as its listener or route (kept by name
//! across reloads, in [`Terminators`]): its ticket keys, session cache and
//! counters survive a reload, and its files are read again when they
//! change or on SIGHUP. A bad new file keeps the old ones serving, said in
//! one log line. Open connections keep the configuration they started with.
//!
//! kTLS (handing the record layer to the kernel, so that terminated
//! connections could `splice`) is not used: the kernel tcplb is developed
//! on has no `tls` ULP, so it could not be measured or tested.

pub mod certificates;
pub mod client_auth;
pub mod pipe;
pub mod tickets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::{debug, info, warn};
use rustls::server::{
    Acceptor, NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use crate::certs::{self, LoadedCertificate, Stamps};
use crate::config::{TlsConfig, TlsVersion};
use crate::stats::RateLimit;
use crate::stats::tls::{CertificateExpiry, TlsFailure, TlsStats};

/// At most one warning a second about failed handshakes, for the whole
/// process: a scan or a misconfigured client fleet fails them by thousands.
static HANDSHAKE_WARNINGS: Mutex<RateLimit> = Mutex::new(RateLimit::new(Duration::from_secs(1)));

impl Lasting {
    /// Reads every file of `config` into a configuration to serve with.
    fn load(&self, config: &TlsConfig, stats: &TlsStats) -> Result<Loaded, String> {
        let stamps = Stamps::of(config.files());
        let loaded: Vec<LoadedCertificate> = config
            .certificates
            .iter()
            .map(certs::load_certificate)
            .collect::<Result<_, _>>()?;
        let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(certs::provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &config.client_auth {
            Some(auth) => builder.with_client_cert_verifier(client_auth::verifier(auth)?),
            None => builder.with_no_client_auth(),
        };
        let mut server =
            builder.with_cert_resolver(Arc::new(certificates::Certificates::new(&loaded)));
        let alpn = match config.alpn.is_empty() {
            true => &self.route_alpn,
            false => &config.alpn,
        };
        server.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        server.session_storage = match &self.cache {
            Some(cache) => cache.clone() as Arc<dyn StoresServerSessions>,
            None => Arc::new(NoServerSessionStorage {}),
        };
        if config.tickets {
            server.ticketer = match &config.ticket_key_file {
                Some(path) => Arc::new(tickets::SharedKeys::read(path, &self.owner)?),
                None => self.tickets.clone(),
            };
        } else if self.cache.is_none() {
            server.send_tls13_tickets = 0;
        }
        stats.set_certificates(
            loaded
                .iter()
                .map(|c| CertificateExpiry {
                    path: c.paths.cert.display().to_string(),
                    subject: c.leaf.subject.clone(),
                    not_after: c.leaf.not_after,
                })
                .collect(),
        );
        Ok(Loaded {
            config: config.clone(),
            server: Arc::new(server),
            stamps,
        })
    }
}

/// What a completed handshake was: for the access log and the backend's
/// PROXY header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// `1.2` or `1.3`.
    pub version: &'static str,
    /// The cipher suite, as IANA names it (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The protocol ALPN settled on.
    pub alpn: Option<String>,
    /// Whether a session was resumed (no full handshake).
    pub resumed: bool,
    /// From the ClientHello's arrival to the handshake's end.
    pub handshake: Duration,
    /// The client certificate's subject, when one was sent.
    pub client_subject: Option<String>,
    /// Its common name (the PROXY v2 SSL TLV's CN).
    pub client_cn: Option<String>,
}

impl Session {
    /// The version as OpenSSL and the PROXY protocol's SSL TLV name it.
    pub fn protocol_name(&self) -> &'static str {
        match self.version {
            "1.3" => "TLSv1.3",
            "1.2" => "TLSv1.2",
            _ => "unknown",
        }
    }
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub struct Refused {
    pub failure: TlsFailure,
    /// The alert sent or received, by its RFC name (`AccessDenied`).
    pub alert: Option<String>,
}

/// What a terminating listener or route serves with now.
struct Loaded {
    /// The configuration the files were read for.
    config: TlsConfig,
    /// What handshakes use.
    server: Arc<ServerConfig>,
    /// The files as they were when read, to see them change.
    stamps: Stamps,
}

/// A terminating listener or route: its rustls configuration, swapped on
/// reload, and what outlives reloads.
pub struct Terminator {
    /// What outlives reloads.
    lasting: Lasting,
    /// What handshakes use now.
    loaded: ArcSwap<Loaded>,
    /// Its counters.
    pub stats: Arc<TlsStats>,
}

/// The part of a terminator that reloads keep.
struct Lasting {
    /// Whose it is, for logs (`listener 127.0.0.1:443`, `route api`); also
    /// authenticated in shared-file tickets.
    owner: String,
    /// The route's own ALPN match list: what it offers when its TLS
    /// configuration names none.
    route_alpn: Vec<String>,
    /// The in-memory ticket keys (rotating every 6 hours), kept across
    /// reloads so that clients resume after one.
    tickets: Arc<dyn ProducesTickets>,
    /// The stateful session cache, bounded, kept across reloads; `None`
    /// when `session_cache = 0`.
    cache: Option<Arc<ServerSessionMemoryCache>>,
}

impl Terminator {
    /// Reads `config`'s files for `owner`. `Err`: one line saying which
    /// file is wrong and why.
    pub fn new(
        owner: String,
        config: &TlsConfig,
        route_alpn: Vec<String>,
        stats: Arc<TlsStats>,
    ) -> Result<Terminator, String> {
        let lasting = Lasting {
            owner,
            route_alpn,
            tickets: tickets::in_memory()?,
            cache: (config.session_cache > 0)
                .then(|| ServerSessionMemoryCache::new(config.session_cache)),
        };
        let loaded = lasting.load(config, &stats)?;
        Ok(Terminator {
            lasting,
            loaded: ArcSwap::from_pointee(loaded),
            stats,
        })
    }

    /// Whose it is, as logs name it.
    pub fn owner(&self) -> &str {
        &self.lasting.owner
    }

    /// Serves with `config` from now on, reading its files again when
    /// `force` or when they changed on disk. A file that fails keeps what
    /// serves now, said in one warning; `true` when something new serves.
    pub fn update(&self, config: &TlsConfig, force: bool) -> bool {
        let current = self.loaded.load();
        let changed = current.config != *config;
        if !force && !changed && Stamps::of(config.files()) == current.stamps {
            return false;
        }
        match self.lasting.load(config, &self.stats) {
            Ok(loaded) => {
                info!("{}: TLS certificates and keys (re)loaded", self.owner());
                self.loaded.store(Arc::new(loaded));
                true
            }
            Err(e) => {
                self.stats
                    .reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    "{}: keeping the TLS files already loaded: {e}",
                    self.owner()
                );
                // Seen: the same bad files are not read again until they
                // change once more.
                let mut kept = Loaded {
                    config: current.config.clone(),
                    server: current.server.clone(),
                    stamps: Stamps::of(config.files()),
                };
                if changed {
                    kept.stamps = current.stamps.clone();
                }
                self.loaded.store(Arc::new(kept));
                false
            }
        }
    }

    /// The configuration serving now (what reloads compare against).
    pub fn config(&self) -> TlsConfig {
        self.loaded.load().config.clone()
    }

    /// Completes the handshake with `client`, whose ClientHello (every
    /// byte read so far) is `hello`.
    pub async fn accept(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        hello: &[u8],
    ) -> Result<(TlsStream<TcpStream>, Session), Refused> {
        let started = Instant::now();
        let loaded = self.loaded.load_full();
        let result = self.handshake(client, hello, &loaded).await;
        match result {
            Ok(mut done) => {
                done.1.handshake = started.elapsed();
                let tls13 = done.1.version == "1.3";
                self.stats
                    .count_handshake(tls13, done.1.resumed, done.1.handshake);
                Ok(done)
            }
            Err(refused) => {
                self.stats.count_failure(refused.failure);
                self.warn(peer, &refused);
                Err(refused)
            }
        }
    }

    async fn handshake(
        &self,
        mut client: TcpStream,
        hello: &[u8],
        loaded: &Loaded,
    ) -> Result<(TlsStream<TcpStream>, Session), Refused> {
        let refused = |(failure, alert): (TlsFailure, Option<String>)| Refused { failure, alert };
        let deadline = Instant::now() + loaded.config.handshake_timeout;
        let mut acceptor = Acceptor::default();
        let mut bytes = hello.to_vec();
        let accepted = loop {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                match acceptor.read_tls(&mut rest) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return Err(refused((TlsFailure::NotTls, None))),
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                // The reader stops at the end of the hello; rustls wants
                // the whole record it came in (a record longer than its
                // message, found by fuzzing): read on, within the timeout.
                Ok(None) => {
                    bytes.clear();
                    bytes.resize(4096, 0);
                    let read = tokio::time::timeout_at(deadline, client.read(&mut bytes)).await;
                    match read {
                        Err(_) => return Err(refused((TlsFailure::Timeout, None))),
                        Ok(Ok(0)) | Ok(Err(_)) => return Err(refused((TlsFailure::Closed, None))),
                        Ok(Ok(n)) => bytes.truncate(n),
                    }
                }
                Err((e, mut alert)) => {
                    let mut bytes = Vec::new();
                    let _ = alert.write_all(&mut bytes);
                    let _ = client.try_write(&bytes);
                    return Err(refused(certs::classify(&e)));
                }
            }
        };
        let handshake = StartHandshake::from_parts(accepted, client)
            .into_stream(loaded.server.clone())
            .into_fallible();
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return Err(refused((TlsFailure::Timeout, None))),
            Ok(Err((e, client))) => {
                // The alert went out with the last write; FIN after it
                // rather than a reset, so the client reads it.
                let _ = socket2::SockRef::from(&client).shutdown(std::net::Shutdown::Write);
                return Err(refused(certs::failure_of(&e)));
            }
            Ok(Ok(stream)) => stream,
        };
        let session = session_of(stream.get_ref().1);
        Ok((stream, session))
    }

    /// One warning a second at most, with how many were held back.
    fn warn(&self, peer: SocketAddr, refused: &Refused) {
        let alert = refused.alert.as_deref().unwrap_or("none");
        let reason = refused.failure.label();
        debug!(
            "{peer}: {}: TLS handshake failed: {reason} (alert {alert})",
            self.owner()
        );
        let allowed = HANDSHAKE_WARNINGS.lock().ok().and_then(|mut w| w.allow());
        if let Some(held) = allowed {
            warn!(
                "{peer}: {}: TLS handshake failed: {reason} (alert {alert}); \
                 {held} more failures since the last warning",
                self.owner()
            );
        }
    }
}

/// What the access log and the PROXY header say of a finished handshake.
fn session_of(connection: &rustls::ServerConnection) -> Session {
    let version = match connection.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "1.3",
        Some(ProtocolVersion::TLSv1_2) => "1.2",
        _ => "?",
    };
    let cipher = connection
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("?");
    let client = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| certs::inspect(leaf).ok());
    Session {
        version,
        cipher,
        alpn: connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        resumed: connection.handshake_kind() == Some(HandshakeKind::Resumed),
        handshake: Duration::ZERO,
        client_subject: client.as_ref().map(|c| c.subject.clone()),
        client_cn: client.and_then(|c| c.common_name),
    }
}

/// Every terminating listener and route, by owner name, kept across
/// reloads so that each keeps its ticket keys, cache and counters; the
/// reload poller reads their files through it.
#[derive(Default)]
pub struct Terminators {
    by_owner: Mutex<HashMap<String, Arc<Terminator>>>,
}

impl Terminators {
    /// The terminator of `owner` for `config`: the running one, updated
    /// (a bad file keeps it serving as it was), or a new one. `Err` only
    /// for a new one whose files fail.
    pub fn get(
        &self,
        owner: &str,
        config: &TlsConfig,
        route_alpn: &[String],
        stats: &Arc<TlsStats>,
    ) -> Result<Arc<Terminator>, String> {
        let running = self.lock().get(owner).cloned();
        if let Some(terminator) = running
            && terminator.lasting.route_alpn == route_alpn
        {
            terminator.update(config, false);
            return Ok(terminator);
        }
        let terminator = Arc::new(
            Terminator::new(
                owner.to_string(),
                config,
                route_alpn.to_vec(),
                stats.clone(),
            )
            .map_err(|e| format!("{owner}: {e}"))?,
        );
        self.lock().insert(owner.to_string(), terminator.clone());
        Ok(terminator)
    }

    /// Forgets every owner but `kept` (removed listeners and routes).
    pub fn retain(&self, kept: &[String]) {
        self.lock().retain(|owner, _| kept.contains(owner));
    }

    /// Reads every terminator's files again: all of them when `force`
    /// (SIGHUP), else those that changed on disk (the poller).
    pub fn reload_files(&self, force: bool) {
        let all: Vec<Arc<Terminator>> = self.lock().values().cloned().collect();
        for terminator in all {
            let config = terminator.config();
            terminator.update(&config, force);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Terminator>>> {
        self.by_owner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
