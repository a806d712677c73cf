//! Shared harness for the integration tests: an in-process balancer, killable
//! in-process backends, the real `tcplb` binary as a child process, and small
//! client helpers.
//!
//! Everything binds 127.0.0.1:0 and reads its port back; every guard cleans
//! up on drop (even when a test panics), killing only what it started.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod netns;
pub mod notify;
pub mod pki;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcplb::config::{BackendSpec, Config, ServiceConfig, parse_backend};
use tcplb::proxy::Service;
use tcplb::runtime::Balancer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long any single wait in a test may take before it counts as a failure.
/// Generous: the machine is small and shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// In-process balancer

/// A balancer running on the test's runtime; shut down on drop.
pub struct TestBalancer {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: CancellationToken,
}

impl TestBalancer {
    /// Starts a balancer for `service` (its `listen` is replaced by 127.0.0.1:0).
    pub fn start(mut service: ServiceConfig) -> TestBalancer {
        service.listen = "127.0.0.1:0".parse().unwrap();
        Self::start_on_own_listen(service)
    }

    /// Starts a balancer listening where `service.listen` says (e.g. `[::1]:0`).
    pub fn start_on_own_listen(service: ServiceConfig) -> TestBalancer {
        let mut config = Config::single(service);
        config.drain_timeout = Duration::from_secs(1);
        Self::start_config(config)
    }

    /// Starts a balancer for the first (or only) listener of `config`.
    pub fn start_config(config: Config) -> TestBalancer {
        let balancer = Balancer::bind(config).expect("bind balancer");
        let addr = balancer.local_addrs()[0];
        let service = balancer.services()[0].clone();
        let shutdown = balancer.shutdown_token();
        tokio::spawn(balancer.run());
        TestBalancer {
            addr,
            service,
            shutdown,
        }
    }

    /// Whether the pool currently considers backend `index` healthy.
    pub fn is_up(&self, index: usize) -> bool {
        self.service.pool.load().backends[index].is_up()
    }

    /// Connections open to backend `index` now.
    pub fn active(&self, index: usize) -> u64 {
        self.service.pool.load().backends[index].active()
    }

    /// Connections ever established to backend `index`.
    pub fn total(&self, index: usize) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.service.pool.load().backends[index]
            .stats
            .total
            .load(Relaxed)
    }

    pub fn connect_failures(&self, index: usize) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.service.pool.load().backends[index]
            .stats
            .connect_failures
            .load(Relaxed)
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A service over `addrs` with the documented defaults.
pub fn service(addrs: &[SocketAddr]) -> ServiceConfig {
    let backends = addrs.iter().map(|a| spec(*a, 1)).collect();
    ServiceConfig::new("127.0.0.1:0".parse().unwrap(), backends)
}

pub fn spec(addr: SocketAddr, weight: u32) -> BackendSpec {
    let mut spec = parse_backend(&addr.to_string()).expect("a loopback address");
    spec.weight = weight;
    spec
}

// ---------------------------------------------------------------------------
// In-process backends

type ServeFn = Arc<dyn Fn(TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A backend server with its own single-threaded runtime on its own thread,
/// so that killing it drops the listener *and* every open connection at
/// once, like a crashed process, and its work never competes with the
/// balancer's runtime for task slots.
pub struct TestBackend {
    pub addr: SocketAddr,
    serve: ServeFn,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl TestBackend {
    /// The demo HTTP backend ("Hello from backend :PORT").
    pub async fn http() -> TestBackend {
        Self::with(|l| async move {
            let _ = tcplb::demo::serve_http(l).await;
        })
        .await
    }

    /// The demo echo backend.
    pub async fn echo() -> TestBackend {
        Self::with(|l| async move {
            let _ = tcplb::demo::serve_echo(l).await;
        })
        .await
    }

    /// A backend running `serve` on its listener.
    pub async fn with<F, Fut>(serve: F) -> TestBackend
    where
        F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Self::on(std_listener, serve)
    }

    /// The demo echo backend on `listener` (e.g. bound to 127.0.0.2).
    pub fn echo_on(listener: std::net::TcpListener) -> TestBackend {
        Self::on(listener, |l| async move {
            let _ = tcplb::demo::serve_echo(l).await;
        })
    }

    /// The demo HTTP backend on `listener`, naming who connected to it
    /// (with a balancer in between: which balancer); see [`BackendReply`].
    pub fn naming_peer_on(listener: std::net::TcpListener) -> TestBackend {
        Self::on(listener, |l| async move {
            let _ = tcplb::demo::serve_http_naming_peer(l).await;
        })
    }

    /// A backend running `serve` on `std_listener`.
    pub fn on<F, Fut>(std_listener: std::net::TcpListener, serve: F) -> TestBackend
    where
        F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let serve: ServeFn = Arc::new(move |l| Box::pin(serve(l)));
        let addr = std_listener.local_addr().unwrap();
        let running = Self::run(std_listener, serve.clone());
        TestBackend {
            addr,
            serve,
            running: Some(running),
        }
    }

    fn run(listener: std::net::TcpListener, serve: ServeFn) -> Running {
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("backend runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("register listener");
                tokio::select! {
                    _ = serve(listener) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every task: all sockets close here.
            drop(runtime);
        });
        Running { stop, thread }
    }

    /// Kills the backend: when this returns, its listener and all its
    /// connections are closed.
    pub async fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            tokio::task::spawn_blocking(move || running.thread.join())
                .await
                .unwrap()
                .expect("backend thread panicked");
        }
    }

    /// Starts the backend again on the same port.
    pub async fn revive(&mut self) {
        assert!(self.running.is_none(), "backend is already running");
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            // std sets SO_REUSEADDR on Unix, so TIME_WAIT does not block this.
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind backend {}: {e}", self.addr),
            }
        };
        self.running = Some(Self::run(listener, self.serve.clone()));
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // The thread exits by itself; no need to block a runtime thread on it.
            let _ = running.stop.send(());
        }
    }
}

/// A loopback port free right now, for a child process to bind. Another
/// `bind(0)` could take it first; use it only where the port must be known
/// before the child starts.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An address that refuses connections for the rest of the test process:
/// a socket bound to it and never listening, so the kernel answers a SYN
/// with a reset. The port stays taken, so no listener of a test running in
/// parallel can land on it (a port merely closed again could be handed to
/// the next `bind(0)`, and then it would accept).
pub fn refusing_addr() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    static HELD: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    HELD.lock().unwrap().push(socket);
    addr
}

/// A listener whose accept queue is full and never drained: the kernel
/// drops further SYNs, so connecting to it times out, as to a dead host.
pub struct Blackhole {
    /// Where connecting hangs.
    pub addr: SocketAddr,
    /// The listener itself, never accepting; closed on drop.
    _listener: socket2::Socket,
    /// The connections that filled its queue, held so it stays full.
    _queued: Vec<std::net::TcpStream>,
}

/// Binds 127.0.0.1:0 with a backlog of 0 and connects until the queue is
/// full (at most 16 connections, each given 300 ms).
pub fn blackhole() -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(_) => break, // queue full: SYNs are being dropped
        }
    }
    Blackhole {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

// ---------------------------------------------------------------------------
// Files

/// A path of its own under the system temp dir for `name`: the process id
/// and a number no other call in this test binary gets, so two tests that
/// pick the same name (or one test twice) never share a file. Two tests of
/// issue 26 once did: one's new process read the other's config.
pub fn unique_temp_path(prefix: &str, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{prefix}-{}-{n}-{name}", std::process::id()))
}

/// A directory of the test's own under the system temp dir, emptied first
/// and removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = unique_temp_path("tcplb-test", name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// `file`'s path as a command-line argument.
    pub fn arg(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file holding `text` under the system temp dir, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let path = unique_temp_path("tcplb-test", name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The real binary

/// A `tcplb` (or other) child process, killed by PID on drop.
pub struct Process {
    pub child: Child,
    /// Every stderr line so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr; it ends when the pipe closes.
    reader: std::thread::JoinHandle<()>,
}

/// A running `tcplb` and the address it listens on.
pub struct TcplbProcess {
    pub addr: SocketAddr,
    pub process: Process,
}

impl TcplbProcess {
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The admin endpoint's address, from the line that announces it
    /// (waits up to [`PATIENCE`] for it; the process needs `--admin`).
    pub async fn admin_addr(&self) -> SocketAddr {
        let line = self.process.line_with("admin endpoint on http://").await;
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }
}

pub fn tcplb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcplb")
}

/// Runs `tcplb ARGS` to completion (a command that exits by itself:
/// `check`, `man`, `completions`); its exit code, stdout and stderr.
pub fn tcplb_output(args: &[&str]) -> (i32, String, String) {
    tcplb_output_in(std::path::Path::new("."), args)
}

/// [`tcplb_output`] run in the directory `dir` (relative paths in its
/// arguments and files are taken from there).
pub fn tcplb_output_in<S: AsRef<std::ffi::OsStr>>(
    dir: &std::path::Path,
    args: &[S],
) -> (i32, String, String) {
    let out = Command::new(tcplb_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tcplb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `command` with stderr captured line by line.
pub fn spawn_process(mut command: Command) -> Process {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // TCPLB_TEST_RUST_LOG turns a test's tcplb up (e.g. "tcplb=debug").
        .env(
            "RUST_LOG",
            std::env::var("TCPLB_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    let mut child = command.spawn().expect("spawn child process");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let pipe = child.stderr.take().unwrap();
    let lines = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
    Process {
        child,
        stderr,
        reader,
    }
}

impl Process {
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for the child to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to [`PATIENCE`]) until every stderr line is read: after
    /// the child exited, its last lines may still be in the pipe.
    pub fn wait_stderr_read(&self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (up to [`PATIENCE`]) for a stderr line containing `needle`.
    pub async fn line_with(&self, needle: &str) -> String {
        let find = || {
            let lines = self.stderr.lock().unwrap();
            lines.iter().find(|l| l.contains(needle)).cloned()
        };
        poll_until(PATIENCE, || find().is_some()).await;
        find().unwrap_or_else(|| panic!("no stderr line with {needle:?}:\n{}", self.stderr_text()))
    }

    /// Sends SIGTERM to this child only.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tcplb --listen 127.0.0.1:0 ARGS...` and waits for its listening line.
pub fn spawn_tcplb(args: &[&str]) -> TcplbProcess {
    let mut command = Command::new(tcplb_bin());
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    wait_listening(spawn_process(command))
}

/// Like [`spawn_tcplb`], run through `sh -c 'ulimit -n N; exec tcplb ...'`
/// (same PID) so the balancer has a file-descriptor limit of `nofile`.
/// When raising the limit is not permitted, it gets what `ulimit -Hn` allows.
pub fn spawn_tcplb_with_nofile(nofile: u64, args: &[&str]) -> TcplbProcess {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -n {nofile} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$@\""
        ))
        .arg("sh")
        .arg(tcplb_bin())
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    wait_listening(spawn_process(command))
}

/// The address a tcplb log line "listening on ADDR -> ..." names.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split(" ->").next()?.parse().ok()
}

/// Waits for `process` (a tcplb) to log its listening address.
pub fn wait_listening(mut process: Process) -> TcplbProcess {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| listening_addr(line));
        if let Some(addr) = found {
            return TcplbProcess { addr, process };
        }
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!(
                "tcplb exited ({status}) before listening:\n{}",
                process.stderr_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "tcplb did not log its listening address:\n{}",
            process.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `tcplb ctl ARGS` off the async runtime (bounded by ctl's own
/// timeout).
pub async fn ctl(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(tcplb_bin())
            .arg("ctl")
            .args(&args)
            .output()
            .expect("run tcplb ctl")
    })
    .await
    .unwrap()
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open sockets of process `pid` (its descriptors less pipes, files and
/// the like: splice pipes come and go with the bytes in flight).
pub fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// The soft "Max open files" limit of process `pid`.
pub fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Clients

/// Sends `request` exactly as given on a new connection to `addr` and
/// reads the reply to EOF, as text; bounded by [`PATIENCE`]. The server
/// must close: the admin endpoint always does (one request a connection),
/// the demo backends on `Connection: close`.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let reply = tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read");
        reply
    })
    .await
    .expect("no whole reply in time");
    String::from_utf8(reply).expect("UTF-8")
}

/// A raw-TCP `GET /` with `Connection: close`, read to EOF; bounded in time.
pub async fn http_get(addr: SocketAddr) -> String {
    raw_exchange(
        addr,
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// The port in a demo backend's "Hello from backend :PORT" reply.
pub fn hello_port(reply: &str) -> u16 {
    let port = reply
        .split("Hello from backend :")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok());
    port.unwrap_or_else(|| panic!("not a demo backend reply: {reply:?}"))
}

/// What a [`TestBackend::naming_peer_on`] backend answered (`Hello from
/// backend :PORT to IP`): its port and the address that connected to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendReply {
    /// The backend's port.
    pub backend: u16,
    /// Who connected to the backend: the balancer that served the client.
    pub via: std::net::IpAddr,
}

impl BackendReply {
    /// Reads `backend :PORT to IP` out of a whole HTTP reply.
    pub fn parse(reply: &str) -> Option<BackendReply> {
        let rest = reply.split("Hello from backend :").nth(1)?;
        let (port, rest) = rest.split_once(" to ")?;
        Some(BackendReply {
            backend: port.parse().ok()?,
            via: rest.trim().parse().ok()?,
        })
    }
}

/// GET through `addr` and return the answering backend's port.
pub async fn which_backend(addr: SocketAddr) -> u16 {
    hello_port(&http_get(addr).await)
}

/// [`which_backend`] from a chosen source address (another loopback IP,
/// e.g. 127.0.0.7:0), as a different client would connect.
pub async fn which_backend_from(source: SocketAddr, addr: SocketAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(source).expect("bind the source address");
    let mut stream = tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
        .await
        .expect("reply timed out")
        .expect("read reply");
    hello_port(&String::from_utf8_lossy(&reply))
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub async fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `data` through an echo path and returns what came back; writer
/// and reader run concurrently so large payloads cannot deadlock.
pub async fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, try_echo_roundtrip(addr, data))
        .await
        .expect("echo round trip timed out")
        .expect("echo round trip failed")
}

/// Sends `data` over an open `stream` (TCP or TLS) to an echo backend and
/// checks it comes back byte-exact (within [`PATIENCE`]), leaving the
/// connection open.
pub async fn echo_on(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    data: &[u8],
) {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(back, data);
}

/// Writes `data`, shuts down the write half, and reads until the other side
/// closes (bounded by [`PATIENCE`]).
pub async fn finish(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.expect("write");
    stream.shutdown().await.expect("shutdown write");
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut back))
        .await
        .expect("no EOF after half-close")
        .expect("read to EOF");
    back
}

/// [`echo_roundtrip`] that reports errors instead of panicking (no timeout).
pub async fn try_echo_roundtrip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let send = async {
        writer.write_all(data).await?;
        writer.shutdown().await
    };
    let receive = async {
        let mut back = Vec::with_capacity(data.len());
        reader.read_to_end(&mut back).await.map(|_| back)
    };
    let (sent, back) = tokio::join!(send, receive);
    sent?;
    back
}

/// Echo exchanges of `CHUNK` bytes on one connection, each checked byte for
/// byte, until `stop` is set (then a clean close) or an error ends it.
/// `rounds` counts the exchanges done, for the test to watch progress.
pub async fn exchange_until(
    mut stream: TcpStream,
    seed: u64,
    rounds: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    const CHUNK: usize = 16 * 1024;
    let mut pattern = Pattern::new(seed);
    let mut sent = vec![0u8; CHUNK];
    let mut back = vec![0u8; CHUNK];
    while !stop.load(Relaxed) {
        pattern.fill(&mut sent);
        stream.write_all(&sent).await?;
        stream.read_exact(&mut back).await?;
        if back != sent {
            return Err(std::io::Error::other("echo corrupted"));
        }
        rounds.fetch_add(1, Relaxed);
        // Pace the loop a little: it must run for seconds, not saturate a core.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stream.shutdown().await?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    if !rest.is_empty() {
        return Err(std::io::Error::other("bytes after the last exchange"));
    }
    Ok(())
}

/// A deterministic pseudo-random byte stream (xorshift64*), so a receiver
/// can check every byte without keeping a copy of what was sent.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        Pattern::new(seed).fill(&mut buf);
        buf
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Real servers (redis-server, postgres, mariadbd) for the health checks

/// The user and group real servers run as: `nobody` (postgres refuses to
/// run as root, and none of them needs more).
pub const NOBODY: u32 = 65534;

/// A Debian server program: on the PATH, in /usr/sbin, or for PostgreSQL
/// under /usr/lib/postgresql/*/bin. Missing fails the test with the
/// package to install (scripts/test.sh installs it).
pub fn server_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates: Vec<PathBuf> = std::env::split_paths(&path).map(|d| d.join(name)).collect();
    candidates.push(PathBuf::from("/usr/sbin").join(name));
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = versions.flatten().map(|v| v.path().join("bin")).collect();
        dirs.sort();
        candidates.extend(dirs.into_iter().rev().map(|d| d.join(name)));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test runs a real {name} and found none: install Debian's `{package}` \
                 (scripts/test.sh does)"
            )
        })
}

/// A [`TempDir`] owned by [`NOBODY`], for a real server's data.
pub fn unprivileged_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY)).expect("chown the server dir");
    dir
}

/// Runs `program args` as [`NOBODY`]: the server itself is the child (no
/// wrapper in between), so dropping the [`Process`] kills it by PID.
pub fn spawn_unprivileged(program: &std::path::Path, args: &[&str]) -> Process {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command.args(args).uid(NOBODY).gid(NOBODY).current_dir("/");
    spawn_process(command)
}

/// Waits (up to [`PATIENCE`]) until `addr` accepts connections; fails with
/// the server's stderr if it exits first.
pub async fn wait_accepting(addr: SocketAddr, process: &mut Process) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_err() {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("the server exited ({status}):\n{}", process.stderr_text());
        }
        assert!(
            Instant::now() < deadline,
            "the server never accepted on {addr}:\n{}",
            process.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /status` on an admin endpoint, parsed.
pub async fn status_json(admin: SocketAddr) -> serde_json::Value {
    let text = raw_exchange(admin, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (_, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    serde_json::from_str(body).expect("JSON")
}

/// Backend `name`'s entry in the first listener's pool of `status`.
pub fn backend_status(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["listeners"][0]["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name} in {status}"))
}

/// Polls `/status` until `condition` holds for it (up to `timeout`);
/// returns the last status seen and whether it held.
pub async fn wait_status(
    admin: SocketAddr,
    timeout: Duration,
    mut condition: impl FnMut(&serde_json::Value) -> bool,
) -> (serde_json::Value, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status_json(admin).await;
        if condition(&status) {
            return (status, true);
        }
        if Instant::now() > deadline {
            return (status, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Small servers on the test's own runtime (health endpoints, agents)

/// Listens on `ip`:0 and serves each connection with `handle` on a task
/// of its own, on the test's runtime (so it can share state with the
/// test); returns the address.
pub async fn serve_each<F, Fut>(ip: &str, handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(format!("{ip}:0")).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Reads an HTTP request head (up to the empty line) from `stream`.
pub async fn read_head(stream: &mut tokio::io::BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let (mut head, mut line) = (String::new(), String::new());
    while matches!(stream.read_line(&mut line).await, Ok(n) if n > 2) {
        head.push_str(&line);
        line.clear();
    }
    head
}
