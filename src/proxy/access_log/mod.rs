//! The access log: one [`Record`] per client connection (per UDP
//! session), written when it ends (`--access-log`, off by default), in the spirit of HAProxy's
//! `option tcplog`, nginx's stream `log_format` and Envoy's access log.
//!
//! It is kept off the data path. A connection fills in its record as it
//! goes ([`ConnectionLog`], a guard that also keeps it in the open
//! connections' registry) and, when the guard drops, hands the record to a
//! bounded queue with `try_send`: it never waits, never formats, never
//! writes. When the queue is full the record is dropped and counted
//! (`tcplb_access_log_dropped_total`), never buffered without bound. The
//! [`writer`] thread, started by the runtime, takes the records off the
//! queue, formats them ([`format`]) and writes them in batches.
//!
//! A record holds the connection's registry entry (an `Arc`, already
//! allocated) rather than copies of its names and counters: handing a
//! record over costs no allocation, and the writer reads the final byte
//! counts from the entry. A new field is a field here (or on the entry),
//! set in `serve`, and one line in each format.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::proxy::Service;
use crate::proxy::client_hello::ClientHello;
use crate::proxy::connections::Connection;
use crate::proxy::tls::Session;
use crate::stats::AccessLogStats;
use crate::stats::tls::TlsFailure;

pub mod format;
pub mod writer;

/// Records waiting for the writer at most; more are dropped and counted.
/// At 20,000 connections a second that is more than a second of lines.
pub const QUEUE_CAPACITY: usize = 32 * 1024;

/// Why a connection ended: a closed set, each with a stable short name
/// (the `cause` field). Once written, a name never changes meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Both sides closed their sending half: the normal end.
    Completed,
    /// The client's socket failed (reset, broken pipe) while piping.
    ClientReset,
    /// The backend's socket failed (reset, broken pipe) while piping.
    BackendReset,
    /// The kernel gave the client up while piping, without a word from
    /// it: bytes to it went unacknowledged for the user timeout, keepalive
    /// probes went unanswered (`--tcp-keepalive`, `--tcp-user-timeout`),
    /// or the retransmissions ran out.
    ClientTimeout,
    /// The backend's socket timed out while piping, likewise.
    BackendTimeout,
    /// The last connect attempt timed out (`--connect-timeout`); the client
    /// got the 502 (or a close).
    ConnectTimeout,
    /// The last connect attempt was refused; the client got the 502.
    ConnectRefused,
    /// The last connect attempt failed otherwise (unreachable, reset, the
    /// PROXY header could not be written); the client got the 502.
    ConnectError,
    /// No backend could be tried (none healthy and ready, or out of
    /// descriptors); the client got the 503.
    NoBackend,
    /// Refused by `--allow`/`--deny`, closed without a byte.
    Denied,
    /// Over a limit: per-IP connections or rate, the per-IP table, a
    /// `--max-conns` or backend `maxconn` queue timeout, out of descriptors
    /// at accept; the client got the 503 (or a close).
    OverLimit,
    /// Nothing moved either way for `--idle-timeout`.
    IdleTimeout,
    /// Open for `--max-connection-age`.
    MaxAge,
    /// Still open when the drain at shutdown (`--drain-timeout`) ran out.
    Shutdown,
    /// Closed at an operator's drain (or remove) deadline.
    OperatorDrain,
    /// Closed by an operator through the control API.
    OperatorClose,
    /// A bad or missing PROXY header (`--accept-proxy`).
    BadProxyHeader,
    /// On a listener with TLS routes: no valid ClientHello in time.
    BadClientHello,
    /// On a listener with TLS routes: the ClientHello matched no route and
    /// there is no default; the client got an `unrecognized_name` alert.
    NoRoute,
    /// Terminating: the TLS handshake failed (no shared version or cipher,
    /// bytes that are no TLS, too slow, the client gone); the alert is in
    /// the `tls` fields.
    TlsHandshakeFailed,
    /// Terminating with client certificates: the client's certificate was
    /// missing, from another CA, revoked, expired or on no allow-list.
    ClientCertRejected,
    /// Originating: the TLS handshake with the backend failed (its
    /// certificate did not verify, or no shared version or cipher).
    BackendTlsFailed,
    /// A UDP session whose backend went down, was ejected or answered
    /// with an ICMP port unreachable: the client's next datagram started
    /// a session with another backend.
    BackendDown,
}

impl Cause {
    /// Every cause, in the order docs/observability.md lists them.
    pub const ALL: [Cause; 23] = [
        Cause::Completed,
        Cause::ClientReset,
        Cause::BackendReset,
        Cause::ClientTimeout,
        Cause::BackendTimeout,
        Cause::ConnectTimeout,
        Cause::ConnectRefused,
        Cause::ConnectError,
        Cause::NoBackend,
        Cause::Denied,
        Cause::OverLimit,
        Cause::IdleTimeout,
        Cause::MaxAge,
        Cause::Shutdown,
        Cause::OperatorDrain,
        Cause::OperatorClose,
        Cause::BadProxyHeader,
        Cause::BadClientHello,
        Cause::NoRoute,
        Cause::TlsHandshakeFailed,
        Cause::ClientCertRejected,
        Cause::BackendTlsFailed,
        Cause::BackendDown,
    ];

    /// The stable short name written in the log.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Completed => "completed",
            Cause::ClientReset => "client_reset",
            Cause::BackendReset => "backend_reset",
            Cause::ClientTimeout => "client_timeout",
            Cause::BackendTimeout => "backend_timeout",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ConnectRefused => "connect_refused",
            Cause::ConnectError => "connect_error",
            Cause::NoBackend => "no_backend",
            Cause::Denied => "denied",
            Cause::OverLimit => "over_limit",
            Cause::IdleTimeout => "idle_timeout",
            Cause::MaxAge => "max_age",
            Cause::Shutdown => "shutdown",
            Cause::OperatorDrain => "operator_drain",
            Cause::OperatorClose => "operator_close",
            Cause::BadProxyHeader => "bad_proxy_header",
            Cause::BadClientHello => "bad_client_hello",
            Cause::NoRoute => "no_route",
            Cause::TlsHandshakeFailed => "tls_handshake_failed",
            Cause::ClientCertRejected => "client_cert_rejected",
            Cause::BackendTlsFailed => "backend_tls_failed",
            Cause::BackendDown => "backend_down",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the access log says about one connection.
pub struct Record {
    /// Its registry entry: id, client, listener, backend, byte counts.
    pub connection: Arc<Connection>,
    /// When it ended (set when the record is handed over).
    pub end: SystemTime,
    /// From accept to end (set when the record is handed over).
    pub duration: Duration,
    /// Connect attempts after the first (each one to another backend).
    pub retries: u32,
    /// Time spent waiting for a slot (`--max-conns`, backend `maxconn`);
    /// `None` when it never got that far.
    pub queue: Option<Duration>,
    /// Time spent connecting to backends, every attempt together; `None`
    /// when no backend was tried.
    pub connect: Option<Duration>,
    /// Why it ended; [`Cause::Shutdown`] until something else is known (a
    /// connection dropped at the end of the drain never says otherwise).
    pub cause: Cause,
    /// What the client's TLS ClientHello asked for (server name, ALPN), on
    /// a listener with TLS routes: whenever a hello was read, routed or
    /// not, and for a broken one what came before the broken part. `None`
    /// elsewhere or when nothing was read. Boxed: most connections have
    /// none, and every open connection holds a record. (The route it
    /// picked is the connection's pool: [`Connection::route`].)
    pub hello: Option<Box<ClientHello>>,
    /// On a terminating listener or route: the handshake, or why it
    /// failed (on the heap: most connections have none).
    pub tls: Option<Box<TlsRecord>>,
}

/// What the access log says of a terminated connection's TLS.
#[derive(Clone, Debug)]
pub enum TlsRecord {
    /// The handshake completed.
    Established(Session),
    /// It did not.
    Refused {
        failure: TlsFailure,
        /// The alert sent or received, by its RFC name.
        alert: Option<String>,
    },
}

impl Record {
    /// The server name its ClientHello asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.hello.as_ref()?.server_name.as_deref()
    }

    /// The ALPN protocols its ClientHello offered (none without one).
    pub fn alpn(&self) -> &[Vec<u8>] {
        self.hello.as_ref().map_or(&[], |h| &h.alpn)
    }

    /// A record for `connection` with nothing known yet.
    fn new(connection: Arc<Connection>) -> Self {
        Record {
            connection,
            end: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            retries: 0,
            queue: None,
            connect: None,
            cause: Cause::Shutdown,
            hello: None,
            tls: None,
        }
    }
}

/// The data path's end of the access log: hands records to the writer's
/// queue, or does nothing when the log is off. Cloned into every listener.
#[derive(Clone, Default)]
pub struct AccessLog {
    /// The writer's queue; `None` when the access log is off.
    queue: Option<mpsc::Sender<Record>>,
    /// Where dropped records are counted.
    pub stats: Arc<AccessLogStats>,
}

impl AccessLog {
    /// A log whose records go to `queue`, counting losses in `stats`.
    pub fn new(queue: mpsc::Sender<Record>, stats: Arc<AccessLogStats>) -> Self {
        AccessLog {
            queue: Some(queue),
            stats,
        }
    }

    /// Whether records are written at all.
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Hands `record` to the writer without waiting; a full queue drops it
    /// and counts it.
    pub fn send(&self, record: Record) {
        if let Some(queue) = &self.queue
            && queue.try_send(record).is_err()
        {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// One connection's access log record and registry entry, from accept to
/// close: filled in as the connection goes, and on drop taken out of the
/// registry and handed to the access log (if on).
pub struct ConnectionLog {
    /// What will be logged; fields are set as they become known.
    pub record: Record,
    /// Whether the connection is in the registry (it joins once its client
    /// address is final, after a PROXY header).
    registered: bool,
    /// The connection moved to another process, which logs it.
    moved: bool,
}

impl ConnectionLog {
    /// A connection just accepted from `peer` on `service`, not listed yet.
    pub fn accept(service: Arc<Service>, peer: SocketAddr) -> Self {
        let id = service.connections.next_id();
        ConnectionLog {
            record: Record::new(Arc::new(Connection::new(id, peer, service))),
            registered: false,
            moved: false,
        }
    }

    /// A connection that moved here with a binary upgrade, listed among
    /// the open ones at once; `fill` sets what the old process knew of
    /// it (retries, queue and connect times, the ClientHello). This
    /// process writes its one record, for the whole connection.
    pub fn adopted(connection: Arc<Connection>, fill: impl FnOnce(&mut Record)) -> Self {
        let mut log = ConnectionLog {
            record: Record::new(connection),
            registered: false,
            moved: false,
        };
        fill(&mut log.record);
        log.register();
        log
    }

    /// The connection moved to another process (a binary upgrade), which
    /// logs it when it ends: it leaves the registry, and no record is
    /// written here.
    pub fn moved(mut self) {
        self.moved = true;
    }

    /// The registry entry: id, client, live counters, stop request.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.record.connection
    }

    /// Replaces the client address (the one a PROXY header carried). Only
    /// before [`ConnectionLog::register`]: a listed entry never changes.
    pub fn set_client(&mut self, client: SocketAddr) {
        if let Some(connection) = Arc::get_mut(&mut self.record.connection) {
            connection.client = client;
        }
    }

    /// Lists the connection among the open ones, until this drops.
    pub fn register(&mut self) {
        let connection = &self.record.connection;
        connection.service.connections.insert(connection.clone());
        self.registered = true;
    }
}

impl Drop for ConnectionLog {
    fn drop(&mut self) {
        let connection = self.record.connection.clone();
        if self.registered {
            connection.service.connections.remove(connection.id);
        }
        let log = &connection.service.access_log;
        if !log.is_on() || self.moved {
            return;
        }
        // Taken whole, so a field added to `Record` needs nothing here.
        let mut record = std::mem::replace(&mut self.record, Record::new(connection.clone()));
        record.end = SystemTime::now();
        record.duration = connection.live.start().elapsed();
        log.send(record);
    }
}
