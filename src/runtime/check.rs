//! `tcplb check` (like `nginx -t` and `haproxy -c`): everything a start
//! would validate, without starting. SIGHUP reloads run the same checks
//! ([`problems`] with [`Mode::Reload`]) before applying anything.
//!
//! The file itself is read with every problem collected (see
//! [`crate::config::file`]); then what the file points at is checked, in
//! the same run even when the file has problems, as far as it could be
//! read (its process-wide settings, the listeners that could be built): the
//! listen and admin addresses can be bound here (or are held already, by a
//! running tcplb or systemd), backend names resolve, the token file reads,
//! the state file's and admin socket's directories are writable. Each
//! problem names the file, line and key it comes from when the file sets
//! it. Warnings (a port in use, a state file that would be set aside) do
//! not fail the check.
//!
//! On success a one-screen summary is printed, in sections (listeners,
//! TLS routes, pools, process-wide settings), each its own function so
//! another section slots in beside them.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};

use crate::certs;
use crate::config::cli::{Startup, StartupError};
use crate::config::file::Readable;
use crate::config::{AccessLogTarget, Config, ServiceConfig, file as config_file};
use crate::pool::discovery::dns::Discovery;

/// What runs the checks: a start (or `tcplb check`) checks everything; a
/// reload leaves binding and name lookups to the reload itself, which does
/// them before changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A start, or `tcplb check`: everything.
    Start,
    /// A SIGHUP reload: no binding or lookups (the reload does them).
    Reload,
}

/// One thing found wrong (or worth a warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The setting it is about: the listener (by position) and the key, to
    /// find its line in the file; `None` for the top level.
    at: Option<(Option<usize>, &'static str)>,
    /// What is wrong, and what to do about it.
    pub message: String,
    /// Whether a start would fail on it (else a warning).
    pub fatal: bool,
}

impl Finding {
    fn error(at: (Option<usize>, &'static str), message: String) -> Self {
        Finding {
            at: Some(at),
            message,
            fatal: true,
        }
    }

    fn warning(at: (Option<usize>, &'static str), message: String) -> Self {
        Finding {
            fatal: false,
            ..Finding::error(at, message)
        }
    }

    /// "FILE:LINE:COL: key `k`: message" when the file sets the key; else
    /// "--flag-name: message".
    pub fn render(&self, file: Option<(&Path, &str)>) -> String {
        let Some((listener, key)) = self.at else {
            return self.message.clone();
        };
        let position = file.and_then(|(_, text)| config_file::key_position(text, listener, key));
        match (file, position) {
            (Some((path, _)), Some((line, column))) => {
                let dotted = match listener {
                    Some(_) => format!("listener.{key}"),
                    None => key.to_string(),
                };
                format!(
                    "{}:{line}:{column}: key `{dotted}`: {}",
                    path.display(),
                    self.message
                )
            }
            _ => format!("--{}: {}", key.replace('_', "-"), self.message),
        }
    }
}

/// Runs `tcplb check ARGS...` (`args` without the program name and
/// `check`); returns the exit code: 0 valid, 1 problems, 2 bad flags.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let argv = std::iter::once(OsString::from("tcplb check")).chain(args);
    // The file's own problems, and what could be read around them.
    let (path, file_problems, readable) = match Startup::try_from_args(argv) {
        Ok(startup) => {
            let path = startup.source.map(|s| s.path().to_path_buf());
            let read = Readable::whole(startup.config);
            (path, Vec::new(), Some(Box::new(read)))
        }
        Err(StartupError::Flags(e)) => {
            let _ = e.print();
            return e.exit_code();
        }
        Err(StartupError::File(file)) => (Some(file.path), file.problems, file.readable),
    };
    let text = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let file = path.as_deref().zip(text.as_deref());
    let findings = readable.as_ref().map_or_else(Vec::new, |read| {
        problems_at(&read.config, &read.positions, Mode::Start)
    });
    for problem in &file_problems {
        eprintln!("error: {problem}");
    }
    for finding in &findings {
        let kind = if finding.fatal { "error" } else { "warning" };
        eprintln!("{kind}: {}", finding.render(file));
    }
    let errors = file_problems.len() + findings.iter().filter(|f| f.fatal).count();
    match readable {
        Some(read) if errors == 0 => {
            print!("{}", summary(&read.config, path.as_deref()));
            0
        }
        _ => {
            eprintln!("tcplb check: {errors} problem(s); the configuration is NOT valid");
            1
        }
    }
}

/// Everything wrong with `config` outside the file's own syntax and
/// values (which reading it checked already).
pub fn problems(config: &Config, mode: Mode) -> Vec<Finding> {
    let positions: Vec<usize> = (0..config.services.len()).collect();
    problems_at(config, &positions, mode)
}

/// [`problems`], for listeners that are at `positions` among the file's
/// `[[listener]]` tables (a file with problems: only some could be read).
fn problems_at(config: &Config, positions: &[usize], mode: Mode) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(path) = &config.admin_token_file
        && let Err(e) = super::control::read_token(path)
    {
        found.push(Finding::error((None, "admin_token_file"), format!("{e:#}")));
    }
    if let Some(path) = &config.state_file {
        check_state_file(path, &mut found);
    }
    if let Some(path) = &config.admin_socket {
        check_admin_socket(path, &mut found);
    }
    if let AccessLogTarget::File(path) = &config.access_log.target {
        check_access_log(path, &mut found);
    }
    // The pid file is replaced by renaming a new one over it.
    if let Some(path) = &config.pid_file
        && let Err(e) = writable_dir(path)
    {
        found.push(Finding::error((None, "pid_file"), e));
    }
    check_readiness(config, &mut found);
    if mode == Mode::Reload {
        // A reload that finds a bad TLS file keeps the old one serving
        // (see `proxy::tls`): not a reason to refuse the rest.
        return found;
    }
    for (&i, service) in positions.iter().zip(&config.services) {
        check_tls(i, service, &mut found);
        for route in &service.routes {
            check_tls(i, &route.pool, &mut found);
        }
    }
    for (&i, service) in positions.iter().zip(&config.services) {
        let udp = service.protocol == crate::config::Protocol::Udp;
        if let Some(finding) = check_bind(service.listen, udp, (Some(i), "listen")) {
            found.push(finding);
        }
    }
    if let Some(admin) = config.admin
        && let Some(finding) = check_bind(admin, false, (None, "admin"))
    {
        found.push(finding);
    }
    let discovery = Discovery::new(config.resolver);
    for (&i, service) in positions.iter().zip(&config.services) {
        let name = pool_name(service);
        if let Err(e) = discovery.first_answers(&name, service, None) {
            found.push(Finding::error((Some(i), "backends"), e));
        }
        for route in &service.routes {
            if let Err(e) = discovery.first_answers(&route.name, &route.pool, None) {
                found.push(Finding::error((Some(i), "route"), e));
            }
        }
    }
    found
}

/// The readiness settings need `/ready` to be seen: without an admin
/// endpoint (TCP or Unix socket) nothing can follow it.
fn check_readiness(config: &Config, found: &mut Vec<Finding>) {
    if config.admin.is_some() || config.admin_socket.is_some() {
        return;
    }
    if !config.shutdown_delay.is_zero() {
        found.push(Finding::warning(
            (None, "shutdown_delay"),
            "without an admin endpoint nothing can see /ready turn red: the delay only \
             keeps the listeners open longer (give --admin)"
                .into(),
        ));
    }
    if config.ready_requires_backends {
        found.push(Finding::warning(
            (None, "ready_requires_backends"),
            "without an admin endpoint there is no /ready to answer 503 (give --admin)".into(),
        ));
    }
}

/// A certificate expiring within this many days is a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// What `service` (a listener's or a route's pool) reads for TLS: each
/// certificate loads and matches its key (else an error), expiring within
/// [`EXPIRY_WARNING_DAYS`] is a warning; CAs, CRLs and ticket keys read.
fn check_tls(i: usize, service: &ServiceConfig, found: &mut Vec<Finding>) {
    if let Some(tls) = &service.tls {
        for pair in &tls.certificates {
            found.extend(check_certificate(i, pair, "tls"));
        }
        if let Some(path) = &tls.ticket_key_file
            && let Err(e) = crate::proxy::tls::tickets::SharedKeys::read(path, "check")
        {
            found.push(Finding::error((Some(i), "tls"), e));
        }
        if let Some(auth) = &tls.client_auth {
            let read = certs::read_roots(&auth.ca).and_then(|_| certs::read_crls(&auth.crls));
            if let Err(e) = read {
                found.push(Finding::error((Some(i), "tls"), e));
            }
        }
    }
    if let Some(backend_tls) = &service.backend_tls {
        if let (Some(cert), Some(key)) = (&backend_tls.client_cert, &backend_tls.client_key) {
            let paths = crate::config::CertificatePaths {
                cert: cert.clone(),
                key: key.clone(),
            };
            found.extend(check_certificate(i, &paths, "backend_tls"));
        }
        if let crate::config::TrustAnchors::File(path) = &backend_tls.ca
            && let Err(e) = certs::read_roots(path)
        {
            found.push(Finding::error((Some(i), "backend_tls"), e));
        }
    }
}

/// One certificate and key: an error when they do not load or match, a
/// warning when the certificate expires soon.
fn check_certificate(
    i: usize,
    paths: &crate::config::CertificatePaths,
    key: &'static str,
) -> Option<Finding> {
    let loaded = match certs::load_certificate(paths) {
        Err(e) => return Some(Finding::error((Some(i), key), e)),
        Ok(loaded) => loaded,
    };
    let left = (loaded.leaf.not_after - certs::now_unix()) / 86_400;
    (left < EXPIRY_WARNING_DAYS).then(|| {
        Finding::warning(
            (Some(i), key),
            format!(
                "{}: the certificate expires in {left} days ({}); renew it",
                paths.cert.display(),
                certs::format_time(loaded.leaf.not_after)
            ),
        )
    })
}

/// The state file's directory takes new files (it is replaced by
/// renaming a new one over it); a file there that does not parse would
/// be set aside at start.
fn check_state_file(path: &Path, found: &mut Vec<Finding>) {
    let at = (None, "state_file");
    if let Err(e) = writable_dir(path) {
        found.push(Finding::error(at, e));
        return;
    }
    match std::fs::read(path) {
        Ok(text) => {
            if let Err(e) = serde_json::from_slice::<crate::pool::overlay::Overlay>(&text) {
                found.push(Finding::warning(
                    at,
                    format!(
                        "{} is corrupt ({e}); a start sets it aside and runs from the \
                         configuration alone",
                        path.display()
                    ),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => found.push(Finding::error(
            at,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// The access log opens for appending: an existing file must take writes,
/// a missing one must be creatable (checked without creating it).
fn check_access_log(path: &Path, found: &mut Vec<Finding>) {
    let at = (None, "access_log");
    match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Err(e) = writable_dir(path) {
                found.push(Finding::error(at, e));
            }
        }
        Err(e) => found.push(Finding::error(
            at,
            format!("cannot open the access log {}: {e}", path.display()),
        )),
    }
}

/// The admin socket's directory takes a new socket; a file there that is
/// not a socket is never deleted, so it fails the start.
fn check_admin_socket(path: &Path, found: &mut Vec<Finding>) {
    use std::os::unix::fs::FileTypeExt;
    let at = (None, "admin_socket");
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_socket()
    {
        found.push(Finding::error(
            at,
            format!("{} exists and is not a socket", path.display()),
        ));
        return;
    }
    if let Err(e) = writable_dir(path) {
        found.push(Finding::error(at, e));
    }
}

/// Whether a new file can be created beside `path`: a real create and
/// delete, so read-only mounts and missing directories show too.
fn writable_dir(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = dir.join(format!(".tcplb-check.{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot create files in {} (for {}): {e}",
            dir.display(),
            path.display()
        )),
    }
}

/// Binds `addr` without listening: a foreign address or a privileged port
/// fails here as it would at start. A port in use is only a warning: the
/// running tcplb (or systemd's socket unit) holds it, and an upgrade or
/// socket activation takes that very socket over.
/// Whether `addr` can be listened on, for TCP or (`udp`) UDP.
fn check_bind(addr: SocketAddr, udp: bool, at: (Option<usize>, &'static str)) -> Option<Finding> {
    let (kind, protocol) = match udp {
        false => (Type::STREAM, Protocol::TCP),
        true => (Type::DGRAM, Protocol::UDP),
    };
    let bound = Socket::new(Domain::for_address(addr), kind, Some(protocol)).and_then(|s| {
        s.set_reuse_address(true)?;
        s.bind(&addr.into())
    });
    let e = bound.err()?;
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Some(Finding::warning(
            at,
            format!(
                "{addr} is in use now: a start fails unless it takes that socket over \
                 (an upgrade, or systemd socket activation)"
            ),
        )),
        Some(libc::EADDRNOTAVAIL) => Some(Finding::error(
            at,
            format!("cannot listen on {addr}: not an address of this machine"),
        )),
        Some(libc::EACCES) => Some(Finding::error(
            at,
            format!(
                "cannot listen on {addr}: ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE (AmbientCapabilities= under systemd)"
            ),
        )),
        _ => Some(Finding::error(at, format!("cannot listen on {addr}: {e}"))),
    }
}

/// The pool name a listener gets (configured, else its address, after
/// `udp:` for a UDP listener).
fn pool_name(service: &ServiceConfig) -> String {
    service
        .name
        .clone()
        .unwrap_or_else(|| crate::config::udp::default_pool_name(service.protocol, service.listen))
}

/// The one-screen summary of a valid configuration.
pub fn summary(config: &Config, path: Option<&Path>) -> String {
    let mut out = String::new();
    match path {
        Some(path) => {
            let _ = writeln!(
                out,
                "tcplb check: the configuration {} is valid",
                path.display()
            );
        }
        None => out.push_str("tcplb check: the command-line configuration is valid\n"),
    }
    listeners_section(config, &mut out);
    routes_section(config, &mut out);
    pools_section(config, &mut out);
    process_section(config, &mut out);
    out
}

fn listeners_section(config: &Config, out: &mut String) {
    let _ = writeln!(out, "\nlisteners ({}):", config.services.len());
    for service in &config.services {
        let mut line = format!(
            "  {:<24} -> pool {}",
            service.listen.to_string(),
            pool_name(service)
        );
        if service.protocol == crate::config::Protocol::Udp {
            line.push_str(", udp");
        }
        if service.accept_proxy {
            line.push_str(", accepts PROXY");
        }
        if let Some(version) = service.send_proxy {
            let _ = write!(line, ", sends PROXY {version:?}");
        }
        let access = &service.access;
        if !service.routes.is_empty() {
            let _ = write!(line, ", {} TLS route(s)", service.routes.len());
        }
        if !access.allow.is_empty() || !access.deny.is_empty() {
            let _ = write!(
                line,
                ", allow {} / deny {} networks",
                access.allow.len(),
                access.deny.len()
            );
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Each listener's TLS routes: what they match, and their pool.
fn routes_section(config: &Config, out: &mut String) {
    let count: usize = config.services.iter().map(|s| s.routes.len()).sum();
    if count == 0 {
        return;
    }
    let _ = writeln!(out, "\nroutes ({count}):");
    for service in &config.services {
        for route in &service.routes {
            let mut matches = Vec::new();
            if !route.server_names.is_empty() {
                let names: Vec<String> = route.server_names.iter().map(|n| n.to_string()).collect();
                matches.push(format!("sni {}", names.join(", ")));
            }
            if !route.alpn.is_empty() {
                matches.push(format!("alpn {}", route.alpn.join(", ")));
            }
            let _ = writeln!(
                out,
                "  {:<24} {} -> pool {}",
                service.listen.to_string(),
                matches.join("; "),
                route.name
            );
        }
    }
}

/// Backends shown per pool before "and N more".
const SHOWN_BACKENDS: usize = 3;

/// One line per pool: every listener's, then every route's.
fn pools_section(config: &Config, out: &mut String) {
    let pools: Vec<(String, &ServiceConfig)> = config
        .services
        .iter()
        .flat_map(|service| {
            std::iter::once((pool_name(service), service)).chain(
                service
                    .routes
                    .iter()
                    .map(|route| (route.name.clone(), &route.pool)),
            )
        })
        // A listener whose routes take everything has no pool of its own.
        .filter(|(_, pool)| !pool.backends.is_empty())
        .collect();
    let _ = writeln!(out, "\npools ({}):", pools.len());
    for (name, pool) in pools {
        let backups = pool.backends.iter().filter(|b| b.backup).count();
        let mut names: Vec<String> = pool
            .backends
            .iter()
            .take(SHOWN_BACKENDS)
            .map(|b| {
                let mut name = b.name.clone();
                if b.weight != 1 {
                    let _ = write!(name, "={}", b.weight);
                }
                if b.backup {
                    name.push_str(" (backup)");
                }
                name
            })
            .collect();
        if pool.backends.len() > SHOWN_BACKENDS {
            names.push(format!("and {} more", pool.backends.len() - SHOWN_BACKENDS));
        }
        let _ = writeln!(
            out,
            "  {name}: {}, {} backend(s) ({backups} backup), checked every {:?}: {}",
            pool.strategy,
            pool.backends.len(),
            pool.health.interval,
            names.join(", "),
        );
    }
}

fn process_section(config: &Config, out: &mut String) {
    let show = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("off".to_string(), |p| p.display().to_string())
    };
    let admin = config.admin.map_or("off".to_string(), |a| a.to_string());
    let _ = writeln!(
        out,
        "\nprocess:\n  admin {admin}, admin socket {}, token file {}\n  state file {}, \
         pid file {}, drain timeout {:?}, shutdown delay {:?}, resolver {}\n  access log {} ({})",
        show(&config.admin_socket),
        show(&config.admin_token_file),
        show(&config.state_file),
        show(&config.pid_file),
        config.drain_timeout,
        config.shutdown_delay,
        config
            .resolver
            .map_or("/etc/resolv.conf".to_string(), |r| r.to_string()),
        config.access_log.target,
        config.access_log.format,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn config() -> Config {
        Config::single(ServiceConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![parse_backend("127.0.0.1:1").unwrap()],
        ))
    }

    #[test]
    fn a_plain_configuration_has_no_problems_and_a_summary() {
        let config = config();
        assert_eq!(problems(&config, Mode::Start), []);
        let text = summary(&config, None);
        assert!(text.contains("listeners (1):"), "{text}");
        assert!(text.contains("pools (1):"), "{text}");
        assert!(text.lines().count() < 25, "{text}");
        assert!(text.contains("access log off (text)"), "{text}");
        // A log file that exists and takes writes is fine, and is not created.
        let mut config = config;
        config.access_log.target = AccessLogTarget::File("/dev/null".into());
        assert_eq!(problems(&config, Mode::Start), []);
        let missing = std::env::temp_dir().join(format!("tcplb-check-log-{}", std::process::id()));
        config.access_log.target = AccessLogTarget::File(missing.clone());
        assert_eq!(problems(&config, Mode::Start), []);
        assert!(!missing.exists());
    }

    #[test]
    fn readiness_settings_without_an_admin_endpoint_are_warned_about() {
        let mut config = config();
        config.shutdown_delay = std::time::Duration::from_secs(5);
        config.ready_requires_backends = true;
        let found = problems(&config, Mode::Reload);
        let keys: Vec<_> = found.iter().map(|f| (f.at, f.fatal)).collect();
        assert_eq!(
            keys,
            [
                (Some((None, "shutdown_delay")), false),
                (Some((None, "ready_requires_backends")), false)
            ]
        );
        config.admin = Some("127.0.0.1:0".parse().unwrap());
        assert_eq!(problems(&config, Mode::Reload), []);
        assert!(summary(&config, None).contains("shutdown delay 5s"));
    }

    #[test]
    fn every_unusable_path_and_address_is_a_problem() {
        let dir = std::env::temp_dir().join(format!("tcplb-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = config();
        config.admin_token_file = Some(dir.join("missing-token"));
        config.state_file = Some(dir.join("no-such-dir").join("state.json"));
        std::fs::write(dir.join("plain"), "x").unwrap();
        config.admin_socket = Some(dir.join("plain"));
        config.access_log.target = AccessLogTarget::File(dir.join("no-such-dir").join("a.log"));
        config.pid_file = Some(dir.join("no-such-dir").join("tcplb.pid"));
        // 192.0.2.0/24 (TEST-NET-1) is never this machine's address; only bound, never reached.
        config.services[0].listen = "192.0.2.1:0".parse().unwrap();
        let found = problems(&config, Mode::Start);
        let keys: Vec<_> = found.iter().map(|f| (f.at.unwrap().1, f.fatal)).collect();
        assert_eq!(
            keys,
            [
                ("admin_token_file", true),
                ("state_file", true),
                ("admin_socket", true),
                ("access_log", true),
                ("pid_file", true),
                ("listen", true),
            ],
            "{found:?}"
        );
        // A reload leaves binding to the reload itself.
        assert_eq!(problems(&config, Mode::Reload).len(), 5);
        let rendered = found[5].render(None);
        assert!(rendered.starts_with("--listen: "), "{rendered}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_port_in_use_is_only_a_warning() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = config();
        config.services[0].listen = held.local_addr().unwrap();
        let found = problems(&config, Mode::Start);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].fatal);
        assert!(found[0].message.contains("in use"), "{found:?}");
    }
}
