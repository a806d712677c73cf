//! TLS counters: handshakes by result and version, their duration,
//! resumptions, failures by reason, and the certificates being served with
//! their expiry. One [`TlsStats`] per terminating listener or route, and
//! one per pool that speaks TLS to its backends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::TimeHistogram;

/// Why a handshake failed: the `reason` label of
/// `tcplb_tls_handshake_failures_total`, one classification for both
/// sides (the peer is the client when terminating, the backend when
/// originating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not finished within the handshake timeout (or the connect timeout
    /// towards a backend).
    Timeout,
    /// The peer closed or reset the connection mid-handshake.
    Closed,
    /// Bytes that are no TLS (plaintext on a TLS port), or broken records.
    NotTls,
    /// No protocol version both sides speak.
    ProtocolVersion,
    /// No cipher suite, key exchange or signature scheme in common.
    NoSharedCipher,
    /// A certificate was required and none was sent.
    NoCertificate,
    /// The peer's certificate does not chain to a trusted CA.
    UnknownCa,
    /// The peer's certificate is revoked by a CRL.
    Revoked,
    /// The peer's certificate is expired or not yet valid.
    Expired,
    /// The peer's certificate is not for the name expected (backends).
    WrongName,
    /// A verified client certificate matched no allow-list.
    NotAllowed,
    /// Any other problem with the peer's certificate.
    BadCertificate,
    /// The peer sent a fatal alert (it refused us).
    PeerAlert,
    /// Any other protocol error.
    Other,
}

impl TlsFailure {
    /// Every reason, in label order.
    pub const ALL: [TlsFailure; 14] = [
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::NotTls,
        TlsFailure::ProtocolVersion,
        TlsFailure::NoSharedCipher,
        TlsFailure::NoCertificate,
        TlsFailure::UnknownCa,
        TlsFailure::Revoked,
        TlsFailure::Expired,
        TlsFailure::WrongName,
        TlsFailure::NotAllowed,
        TlsFailure::BadCertificate,
        TlsFailure::PeerAlert,
        TlsFailure::Other,
    ];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::ProtocolVersion => "protocol_version",
            TlsFailure::NoSharedCipher => "no_shared_cipher",
            TlsFailure::NoCertificate => "no_certificate",
            TlsFailure::UnknownCa => "unknown_ca",
            TlsFailure::Revoked => "revoked",
            TlsFailure::Expired => "expired",
            TlsFailure::WrongName => "wrong_name",
            TlsFailure::NotAllowed => "not_allowed",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::PeerAlert => "peer_alert",
            TlsFailure::Other => "other",
        }
    }

    /// Whether the peer's certificate was the problem (the access log's
    /// `client_cert_rejected` when terminating).
    pub fn is_certificate(self) -> bool {
        matches!(
            self,
            TlsFailure::NoCertificate
                | TlsFailure::UnknownCa
                | TlsFailure::Revoked
                | TlsFailure::Expired
                | TlsFailure::WrongName
                | TlsFailure::NotAllowed
                | TlsFailure::BadCertificate
        )
    }

    fn index(self) -> usize {
        TlsFailure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// A certificate being served (or presented to backends), for the expiry
/// metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The chain's file, as configured: the `certificate` label.
    pub path: String,
    /// Its subject (the `subject` label).
    pub subject: String,
    /// Not valid after, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Counters of one TLS side (a terminating listener or route, or a pool
/// originating to its backends).
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes completed, TLS 1.2 then TLS 1.3.
    pub handshakes: [AtomicU64; 2],
    /// Of those, the ones that resumed a session.
    pub resumed: AtomicU64,
    /// Handshakes failed, indexed like [`TlsFailure::ALL`].
    pub failures: [AtomicU64; 14],
    /// Handshake durations, successful ones (first byte to finished).
    pub duration: TimeHistogram,
    /// The certificates loaded now; replaced whole on reload. Read at
    /// scrape time only: never locked on the data path.
    pub certificates: Mutex<Vec<CertificateExpiry>>,
    /// Reloads that kept the old files serving because a new one was bad.
    pub reload_failures: AtomicU64,
    /// Connections ended by a TLS error after the handshake (garbage, a
    /// record that does not decrypt); the peer got the alert.
    pub protocol_errors: AtomicU64,
}

impl TlsStats {
    /// The version labels of `handshakes`, in its order.
    pub const VERSIONS: [&'static str; 2] = ["1.2", "1.3"];

    /// Counts a completed handshake.
    pub fn count_handshake(&self, tls13: bool, resumed: bool, took: Duration) {
        self.handshakes[usize::from(tls13)].fetch_add(1, Relaxed);
        if resumed {
            self.resumed.fetch_add(1, Relaxed);
        }
        self.duration.record(took);
    }

    /// Counts a failed handshake.
    pub fn count_failure(&self, failure: TlsFailure) {
        self.failures[failure.index()].fetch_add(1, Relaxed);
    }

    /// Failures of `failure` so far.
    pub fn failures_of(&self, failure: TlsFailure) -> u64 {
        self.failures[failure.index()].load(Relaxed)
    }

    /// Completed handshakes, both versions.
    pub fn completed(&self) -> u64 {
        self.handshakes.iter().map(|h| h.load(Relaxed)).sum()
    }

    /// Replaces the certificates shown.
    pub fn set_certificates(&self, certificates: Vec<CertificateExpiry>) {
        *self.certificates.lock().unwrap_or_else(|e| e.into_inner()) = certificates;
    }

    /// The certificates shown now.
    pub fn certificates(&self) -> Vec<CertificateExpiry> {
        self.certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
