//! Binary upgrades (SIGUSR2) end to end, with real processes on loopback:
//! under continuous load, five upgrades in a row refuse and reset nothing,
//! long transfers finish byte-exact in the old processes, which exit after
//! draining; a new process with a bad configuration leaves the old one
//! serving; the operator's runtime changes carry over; a second SIGUSR2
//! queued behind a successful upgrade logs no failure.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{PATIENCE, Pattern, Process, TestBackend, spawn_process, tcplb_bin, wait_listening};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config file in the temp directory, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path = common::unique_temp_path("tcplb-upgrade", &format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The processes an upgrade chain started (each the previous one's
/// child): killed by PID on drop, so a failing test leaves none behind.
#[derive(Default)]
struct Successors(Vec<u32>);

impl Successors {
    /// [`upgrade`]s `pid` (the `nth` hand-over in `process`'s log) and
    /// keeps the new process to kill on drop; returns its PID.
    async fn upgrade(&mut self, process: &Process, pid: u32, nth: usize) -> u32 {
        let next = upgrade(process, pid, nth).await;
        self.0.push(next);
        next
    }
}

impl Drop for Successors {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on a PID this test's processes started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

async fn wait_exited(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    while !exited(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Sends SIGUSR2 to `pid` and waits for the `nth` (1-based) hand-over in
/// the shared log; returns the new process's PID.
async fn upgrade(process: &Process, pid: u32, nth: usize) -> u32 {
    signal(pid, "-USR2");
    upgrade_done(process, nth).await
}

/// Waits for the `nth` (1-based) hand-over in the shared log; returns the
/// new process's PID.
async fn upgrade_done(process: &Process, nth: usize) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found: Vec<u32> = process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let rest = l.split("upgrade: process ").nth(1)?;
                rest.split(' ').next()?.parse().ok()
            })
            .collect();
        if let Some(&pid) = found.get(nth - 1) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "upgrade {nth} did not happen:\n{}",
            process.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(backend: SocketAddr, extra: &str) -> String {
    format!(
        "drain_timeout = \"30s\"\n{extra}[[listener]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n\
         backends = [\"{backend}\"]\n[listener.health]\ninterval = \"1s\"\n"
    )
}

/// One short connection: connect, send 32 bytes, read them back, close.
async fn short_exchange(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let payload = Pattern::bytes(seed, 32);
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&payload)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if back != payload {
        return Err("wrong bytes".into());
    }
    Ok(())
}

/// One long transfer, paced so it spans upgrades: `chunks` of 64 KiB,
/// echoed back and compared byte for byte.
async fn long_transfer(addr: SocketAddr, seed: u64, chunks: usize) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = stream.into_split();
    let total = chunks * 64 * 1024;
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..chunks {
            pattern.fill(&mut chunk);
            write.write_all(&chunk).await?;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        Ok::<_, std::io::Error>(write)
    });
    // The same 64 KiB chunks the writer made, compared as bytes arrive.
    let mut expected = Pattern::new(seed);
    let mut got = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut at = want.len();
    let mut received = 0;
    while received < total {
        let n = read
            .read(&mut got)
            .await
            .map_err(|e| format!("read after {received} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {received} of {total} bytes"));
        }
        for &byte in &got[..n] {
            if at == want.len() {
                expected.fill(&mut want);
                at = 0;
            }
            if byte != want[at] {
                return Err(format!("wrong bytes at {received}"));
            }
            at += 1;
        }
        received += n;
    }
    writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_nothing() {
    let backend = TestBackend::echo().await;
    // The old processes drain (moving connections is tested below).
    let file = ConfigFile::new(
        "five",
        &config(backend.addr, "upgrade_move_connections = false\n"),
    );
    let first = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2"]);
        c
    }));
    let addr = first.addr;
    let mut successors = Successors::default();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    // Short connections at full rate from a few bounded loops.
    let mut shorts = Vec::new();
    for client in 0..4u64 {
        let (stop, done) = (stop.clone(), done.clone());
        shorts.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..1_000_000u64 {
                if stop.load(Relaxed) || Instant::now() > deadline {
                    break;
                }
                match short_exchange(addr, client << 32 | i).await {
                    Ok(()) => {
                        done.fetch_add(1, Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    // Long transfers, each about 2 s, back to back, so upgrades land
    // in the middle of them.
    let mut longs = Vec::new();
    for client in 0..3u64 {
        let stop = stop.clone();
        longs.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..1000u64 {
                if stop.load(Relaxed) || Instant::now() > deadline {
                    break;
                }
                results.push(long_transfer(addr, client * 1000 + i, 128).await);
            }
            results
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pids = vec![first.pid()];
    for nth in 1..=5 {
        let current = *pids.last().unwrap();
        let before = done.load(Relaxed);
        let next = successors.upgrade(&first.process, current, nth).await;
        pids.push(next);
        // The old one drains (its long transfers finish) and exits.
        wait_exited(current).await;
        // And the new one serves.
        let deadline = Instant::now() + PATIENCE;
        while done.load(Relaxed) < before + 50 {
            assert!(Instant::now() < deadline, "no traffic after upgrade {nth}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);

    let mut short_failures = Vec::new();
    for task in shorts {
        short_failures.extend(task.await.unwrap());
    }
    let mut long_results = Vec::new();
    for task in longs {
        long_results.extend(task.await.unwrap());
    }
    let log = first.process.stderr_text();
    eprintln!(
        "5 upgrades: {} short connections, {} long transfers of 8 MiB, {} failures",
        done.load(Relaxed),
        long_results.len(),
        short_failures.len() + long_results.iter().filter(|r| r.is_err()).count()
    );
    assert!(
        short_failures.is_empty(),
        "{} short connections failed, e.g. {:?}\n{log}",
        short_failures.len(),
        &short_failures[..short_failures.len().min(5)]
    );
    let long_failures: Vec<_> = long_results.iter().filter(|r| r.is_err()).collect();
    assert!(long_failures.is_empty(), "{long_failures:?}\n{log}");
    assert!(
        long_results.len() >= 6,
        "{} long transfers",
        long_results.len()
    );
    assert!(
        done.load(Relaxed) > 500,
        "{} short connections",
        done.load(Relaxed)
    );
    // Every old process drained: each logged its drain ending cleanly.
    let drained = log.matches("all connections finished; exiting").count();
    assert_eq!(drained, 5, "{log}");

    let last = *pids.last().unwrap();
    signal(last, "-TERM");
    wait_exited(last).await;
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let backend = TestBackend::echo().await;
    let dir = std::env::temp_dir().join(format!("tcplb-upgrade-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("admin.sock");
    let extra = format!("admin_socket = \"{}\"\n", socket.display());
    let file = ConfigFile::new("fails", &config(backend.addr, &extra));
    let mut old = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2"]);
        c
    }));
    let addr = old.addr;
    let mut successors = Successors::default();
    let admin = format!("unix:{}", socket.display());
    let ctl = |args: &[&str]| {
        let out = Command::new(tcplb_bin())
            .args(["ctl", "--admin", &admin])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Runtime changes, with no state file: the hand-over carries them.
    ctl(&["weight", "echo", &backend.addr.to_string(), "7"]);
    ctl(&["ready", "off"]);

    // A bad configuration: the new process says why and exits; the old
    // one keeps serving on the very same sockets.
    file.write(&format!("{}retries = -1\n", config(backend.addr, &extra)));
    signal(old.pid(), "-USR2");
    let failed = old.process.line_with("upgrade failed").await;
    assert!(failed.contains("not valid"), "{failed}");
    assert!(failed.contains("retries"), "{failed}");
    assert_eq!(old.process.child.try_wait().unwrap(), None);
    for i in 0..20 {
        short_exchange(addr, i).await.unwrap();
    }
    assert!(socket.exists(), "the old admin socket stays");

    // Fixed, the upgrade goes through and the weight came along.
    file.write(&config(backend.addr, &extra));
    let new = upgrade(&old.process, old.pid(), 1).await;
    successors.0.push(new);
    old.process
        .wait_exit(PATIENCE)
        .expect("the old process exits");
    for i in 0..20 {
        short_exchange(addr, i).await.unwrap();
    }
    let listed = ctl(&["--json", "backends", "echo"]);
    assert!(listed.contains("\"weight\":7"), "{listed}");
    // The new process is ready but for the operator's word, handed over.
    assert_eq!(
        ctl(&["ready"]),
        "not ready: turned off by an operator (tcplb ctl ready on)\n"
    );
    signal(new, "-TERM");
    wait_exited(new).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A health-check backend whose answers the test holds back: each check
/// (`PING`) is counted when it arrives and answered (`PONG`) only while
/// the gate is open.
struct GatedChecks {
    backend: TestBackend,
    open: tokio::sync::watch::Sender<bool>,
    arrived: Arc<AtomicU64>,
}

impl GatedChecks {
    async fn start() -> GatedChecks {
        let (open, gate) = tokio::sync::watch::channel(true);
        let arrived = Arc::new(AtomicU64::new(0));
        let counted = arrived.clone();
        let backend = TestBackend::with(move |listener| {
            let (gate, counted) = (gate.clone(), counted.clone());
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let (mut gate, counted) = (gate.clone(), counted.clone());
                    tokio::spawn(async move {
                        let mut ping = [0u8; 5];
                        if stream.read_exact(&mut ping).await.is_err() {
                            return;
                        }
                        counted.fetch_add(1, Relaxed);
                        if gate.wait_for(|open| *open).await.is_ok() {
                            let _ = stream.write_all(b"PONG\n").await;
                        }
                    });
                }
            }
        })
        .await;
        GatedChecks {
            backend,
            open,
            arrived,
        }
    }
}

impl GatedChecks {
    /// A configuration checking this backend with `PING`/`PONG` within
    /// `timeout`, and no periodic checks: only each new process's first
    /// round, which readiness (and so the hand-over) waits for.
    fn config(&self, name: &str, timeout: &str) -> ConfigFile {
        ConfigFile::new(
            name,
            &format!(
                "drain_timeout = \"5s\"\n[[listener]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\n\
                 backends = [\"{}\"]\n[listener.health]\ninterval = \"1h\"\ntimeout = \"{timeout}\"\n\
                 send = \"PING\\n\"\nexpect = \"PONG\"\n",
                self.backend.addr
            ),
        )
    }

    /// Closes the gate, and waits for a check to arrive at it after that.
    async fn hold_next(&self, process: &Process, act: impl FnOnce()) {
        self.open.send_replace(false);
        let before = self.arrived.load(Relaxed);
        act();
        let deadline = Instant::now() + PATIENCE;
        while self.arrived.load(Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "no check from the new process:\n{}",
                process.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts the binary on `file` with one worker.
fn start_on(file: &ConfigFile) -> common::TcplbProcess {
    wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "1"]);
        c
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigusr2_during_a_successful_upgrade_logs_no_failure() {
    let checks = GatedChecks::start().await;
    let file = checks.config("twice", "20s");
    let first = start_on(&file);
    let mut successors = Successors::default();
    let mut current = first.pid();
    // The race is between the queued signal and the shutdown the hand-over
    // starts, which tokio's select! took in random order: several tries.
    let tries = 8;
    for nth in 1..=tries {
        // The new process's first check is held: the old one is inside its
        // upgrade, waiting for READY.
        checks
            .hold_next(&first.process, || signal(current, "-USR2"))
            .await;
        signal(current, "-USR2");
        tokio::time::sleep(Duration::from_millis(200)).await;
        checks.open.send_replace(true);
        let next = upgrade_done(&first.process, nth).await;
        successors.0.push(next);
        wait_exited(current).await;
        current = next;
    }
    let log = first.process.stderr_text();
    assert!(!log.contains("upgrade failed"), "{log}");
    assert_eq!(
        log.matches("all connections finished; exiting").count(),
        tries,
        "{log}"
    );
    signal(current, "-TERM");
    wait_exited(current).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_process_waits_for_first_checks_slower_than_30s() {
    let checks = GatedChecks::start().await;
    // A 40 s check timeout: readiness follows it (it was capped at 30 s).
    let file = checks.config("slow", "40s");
    let first = start_on(&file);
    let mut successors = Successors::default();
    checks
        .hold_next(&first.process, || signal(first.pid(), "-USR2"))
        .await;
    // Past the old 30 s cap, the check still held: no hand-over yet.
    tokio::time::sleep(Duration::from_secs(32)).await;
    let log = first.process.stderr_text();
    assert!(
        !log.contains("upgrade: process "),
        "ready before its checks:\n{log}"
    );
    checks.open.send_replace(true);
    let next = upgrade_done(&first.process, 1).await;
    successors.0.push(next);
    wait_exited(first.pid()).await;
    signal(next, "-TERM");
    wait_exited(next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_names_the_serving_process_through_upgrades() {
    let backend = TestBackend::echo().await;
    let dir = common::TempDir::new("upgrade-pid");
    let pid_path = dir.path("tcplb.pid");
    // The first process drains a held connection (it does not move it).
    let extra = format!(
        "pid_file = \"{}\"\nupgrade_move_connections = false\n",
        pid_path.display()
    );
    let file = ConfigFile::new("pid", &config(backend.addr, &extra));
    let first = start_on(&file);
    let named = || {
        let text = std::fs::read_to_string(&pid_path).unwrap_or_default();
        text.trim().parse::<u32>().ok()
    };
    assert_eq!(named(), Some(first.pid()));
    // docs/upgrades.md's command, as an operator types it.
    let usr2 = || {
        let status = Command::new("sh")
            .args(["-c", r#"kill -USR2 "$(cat "$1")""#, "sh"])
            .arg(&pid_path)
            .status()
            .unwrap();
        assert!(status.success(), "kill -USR2 \"$(cat PIDFILE)\" failed");
    };
    let mut successors = Successors::default();
    // A connection that keeps the first process draining after it hands over.
    let mut held = TcpStream::connect(first.addr).await.unwrap();
    held.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    held.read_exact(&mut back).await.unwrap();

    // A failed upgrade leaves the old process named.
    file.write(&format!("{}retries = -1\n", config(backend.addr, &extra)));
    usr2();
    first.process.line_with("upgrade failed").await;
    assert_eq!(named(), Some(first.pid()));

    file.write(&config(backend.addr, &extra));
    usr2();
    let second = upgrade_done(&first.process, 1).await;
    successors.0.push(second);
    assert_eq!(named(), Some(second));
    // Two tcplb processes now (`pidof` names both); the file names one.
    assert!(
        !exited(first.pid()),
        "the first process drains its connection"
    );
    usr2();
    let third = upgrade_done(&first.process, 2).await;
    successors.0.push(third);
    assert_eq!(named(), Some(third));
    wait_exited(second).await;
    drop(held);
    wait_exited(first.pid()).await;
    // Neither old process took the file with it.
    assert_eq!(named(), Some(third));
    signal(third, "-TERM");
    wait_exited(third).await;
    assert!(!pid_path.exists(), "the last process removes its pid file");
}

/// How a long-lived connection of the move tests behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stream {
    /// 64 KiB writes back to back (splice, with `--splice auto`).
    Bulk,
    /// 256 bytes every 50 ms.
    Trickle,
    /// One message, then nothing until the end.
    Idle,
    /// 64 KiB writes, read back slowly: bytes wait in tcplb.
    SlowReader,
}

impl Stream {
    fn of(i: u64) -> Stream {
        match i % 5 {
            0 => Stream::Bulk,
            1 | 2 => Stream::Trickle,
            3 => Stream::Idle,
            _ => Stream::SlowReader,
        }
    }
}

/// One connection through the echo backend until `stop`, sequence-numbered
/// both ways: the writer sends the seed's pattern, the reader checks every
/// byte that comes back, in order; after `stop` the writer closes its half
/// and the reader reads to the echo's EOF. `Ok`: the client's port and
/// the bytes sent (all came back).
/// `ready` is counted once the first bytes came back.
async fn stream(
    addr: SocketAddr,
    seed: u64,
    kind: Stream,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicU64>,
) -> Result<(u16, u64), String> {
    let deadline = Instant::now() + Duration::from_secs(240);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let port = stream.local_addr().map_err(|e| e.to_string())?.port();
    let (mut read, mut write) = stream.into_split();
    let writing_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let size = match kind {
            Stream::Bulk | Stream::SlowReader => 64 * 1024,
            Stream::Trickle | Stream::Idle => 256,
        };
        let mut chunk = vec![0u8; size];
        let mut sent = 0u64;
        let mut first = true;
        while first || !writing_stop.load(Relaxed) && Instant::now() < deadline {
            if kind != Stream::Idle || first {
                pattern.fill(&mut chunk);
                write.write_all(&chunk).await?;
                sent += size as u64;
            }
            first = false;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        write.shutdown().await?;
        Ok::<_, std::io::Error>(sent)
    });
    let mut expected = Pattern::new(seed);
    let mut want = vec![0u8; 64 * 1024];
    let mut got = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    let mut counted = false;
    loop {
        let slow = kind == Stream::SlowReader && !stop.load(Relaxed);
        let room = if slow { 4096 } else { got.len() };
        let n = read
            .read(&mut got[..room])
            .await
            .map_err(|e| format!("{kind:?} {seed}: read after {received} bytes: {e}"))?;
        if n == 0 {
            // The echo closes only after the writer's close, which
            // follows `stop`: an earlier end is a cut connection.
            if !stop.load(Relaxed) {
                return Err(format!("{kind:?} {seed}: cut after {received} bytes"));
            }
            break;
        }
        let mut data = &got[..n];
        while !data.is_empty() {
            let at = (received % want.len() as u64) as usize;
            if at == 0 {
                expected.fill(&mut want);
            }
            let take = data.len().min(want.len() - at);
            // The writer's chunks are shorter for small writes: compare
            // against the same stream of pattern words.
            if data[..take] != want[at..at + take] {
                return Err(format!("{kind:?} {seed}: wrong bytes at {received}"));
            }
            received += take as u64;
            data = &data[take..];
        }
        if !counted {
            counted = true;
            ready.fetch_add(1, Relaxed);
        }
        if slow {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let sent = writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{kind:?} {seed}: write: {e}"))?;
    if sent != received {
        return Err(format!(
            "{kind:?} {seed}: sent {sent}, {received} came back"
        ));
    }
    Ok((port, sent))
}

/// How many connections `pid`'s log says its upgrade moved, from the
/// line "upgrade: moved N connections".
fn moved_in_log(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            l.split("upgrade: moved ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// 300 connections of every kind, `stop` to end them; `ready` counts
/// those that have carried bytes both ways.
fn streams(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ready: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Result<(u16, u64), String>>> {
    (0..300u64)
        .map(|i| {
            tokio::spawn(stream(
                addr,
                i + 1,
                Stream::of(i),
                stop.clone(),
                ready.clone(),
            ))
        })
        .collect()
}

async fn wait_ready(ready: &AtomicU64, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    while ready.load(Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} streams started",
            ready.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_move_300_streaming_connections_without_losing_a_byte() {
    let backend = TestBackend::echo().await;
    let file = ConfigFile::new("move", &config(backend.addr, ""));
    let dir = common::TempDir::new("move-log");
    let access_log = dir.arg("access.log");
    let first = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2", "--splice", "auto"]);
        c.args(["--access-log", &access_log, "--access-log-format", "json"]);
        c
    }));
    let addr = first.addr;
    let mut successors = Successors::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let tasks = streams(addr, &stop, &ready);
    wait_ready(&ready, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = common::socket_count(first.pid());
    let mut pids = vec![first.pid()];
    for nth in 1..=5 {
        let current = *pids.last().unwrap();
        let next = successors.upgrade(&first.process, current, nth).await;
        pids.push(next);
        // Its connections moved: it is gone in seconds, not at the end
        // of its 30 s drain.
        let handed = Instant::now();
        while !exited(current) {
            assert!(
                handed.elapsed() < Duration::from_secs(5),
                "process {current} still there 5 s after upgrade {nth}:\n{}",
                first.process.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The streams go on meanwhile (no assertion on speed).
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let last = *pids.last().unwrap();
    let fds_after = common::socket_count(last);
    stop.store(true, Relaxed);
    let mut failures = Vec::new();
    let mut bytes = 0;
    let mut sent_by_port = std::collections::HashMap::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((port, sent)) => {
                bytes += sent;
                sent_by_port.insert(port, sent);
            }
            Err(e) => failures.push(e),
        }
    }
    let log = first.process.stderr_text();
    let moved = moved_in_log(&log);
    eprintln!(
        "5 upgrades moved {moved:?} connections; {bytes} bytes each way; fds {fds_before} -> {fds_after}"
    );
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}\n{log}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(moved, vec![300; 5], "{log}");
    // The last process holds the 300 connections' 600 sockets, as the
    // first did: none leaked on the way (sockets only: splice pipes come
    // and go with the bytes in flight).
    assert!(
        (600..=fds_before + 10).contains(&fds_after),
        "{fds_before} -> {fds_after} sockets"
    );
    signal(last, "-TERM");
    wait_exited(last).await;
    // One access log record per connection, from the process that ended
    // it, with the whole connection's bytes and duration.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&access_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 300, "{records:?}");
    let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "ids repeat");
    for record in &records {
        let client: SocketAddr = record["client"].as_str().unwrap().parse().unwrap();
        let sent = sent_by_port[&client.port()];
        assert_eq!(record["sent"].as_u64(), Some(sent), "{record}");
        assert_eq!(record["received"].as_u64(), Some(sent), "{record}");
        // Accepted before the first upgrade, ended after the last.
        assert!(record["duration_ms"].as_f64().unwrap() > 1000.0, "{record}");
    }
}

/// An upgrade with nothing to move (no connection open, one that has
/// ended, then one streaming): each old process writes its move line, with
/// what moved, before it exits, however soon that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upgrade_writes_its_move_line_even_with_nothing_to_move() {
    let backend = TestBackend::echo().await;
    let file = ConfigFile::new("move-line", &config(backend.addr, ""));
    let first = start_on(&file);
    let mut successors = Successors::default();
    let mut current = first.pid();
    // Nothing open.
    let next = successors.upgrade(&first.process, current, 1).await;
    wait_exited(current).await;
    current = next;
    // One connection that ended before the upgrade.
    short_exchange(first.addr, 1).await.unwrap();
    let next = successors.upgrade(&first.process, current, 2).await;
    wait_exited(current).await;
    current = next;
    // One streaming through it.
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(stream(
        first.addr,
        7,
        Stream::Trickle,
        stop.clone(),
        ready.clone(),
    ));
    wait_ready(&ready, 1).await;
    let next = successors.upgrade(&first.process, current, 3).await;
    wait_exited(current).await;
    stop.store(true, Relaxed);
    task.await.unwrap().unwrap();
    let log = first.process.stderr_text();
    assert_eq!(moved_in_log(&log), vec![0, 0, 1], "{log}");
    signal(next, "-TERM");
    wait_exited(next).await;
}

/// An upgrade whose new configuration has another backend: the new
/// process refuses every connection (it has no such backend to count them
/// against), and each goes on byte-exact in the old process from where it
/// stopped, which drains them as before; the move line says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_new_process_refuses_go_on_in_the_old_one() {
    let old_backend = TestBackend::echo().await;
    let new_backend = TestBackend::echo().await;
    let file = ConfigFile::new("move-refused", &config(old_backend.addr, ""));
    let first = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2", "--splice", "auto"]);
        c
    }));
    let mut successors = Successors::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..20u64)
        .map(|i| {
            tokio::spawn(stream(
                first.addr,
                i + 1,
                Stream::of(i),
                stop.clone(),
                ready.clone(),
            ))
        })
        .collect();
    wait_ready(&ready, 20).await;
    file.write(&config(new_backend.addr, ""));
    let old = first.pid();
    let next = successors.upgrade(&first.process, old, 1).await;
    first.process.line_with("upgrade: moved").await;
    // Served on by the old process, which is still there for them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!exited(old), "the old process exited");
    stop.store(true, Relaxed);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    wait_exited(old).await;
    let log = first.process.stderr_text();
    assert_eq!(moved_in_log(&log), vec![0], "{log}");
    assert!(
        log.contains("20 drain here (0 tls, 0 in setup, 20 refused: unknown_backend 20, 0 failed)"),
        "{log}"
    );
    signal(next, "-TERM");
    wait_exited(next).await;
}

/// Sends 64 pattern bytes of `seed` and checks the echo (TCP or TLS).
async fn echo_once(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    seed: u64,
) {
    common::echo_on(stream, &Pattern::bytes(seed, 64)).await;
}

/// A connection still in setup when the move goes round (its PROXY header
/// has not come) drains in the old process at first, and moves by itself
/// once it pipes: the old process then exits while it is still open, and it
/// goes on echoing through the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_setup_during_the_move_moves_once_it_pipes() {
    let backend = TestBackend::echo().await;
    let text = config(backend.addr, "")
        .replace("drain_timeout = \"30s\"", "drain_timeout = \"60s\"")
        .replace(
            "backends =",
            "accept_proxy = true\nconnect_timeout = \"20s\"\nbackends =",
        );
    let file = ConfigFile::new("move-setup", &text);
    let first = start_on(&file);
    let mut successors = Successors::default();
    let header = |port: u16| format!("PROXY TCP4 127.0.0.9 127.0.0.1 {port} 80\r\n");
    let mut piping = TcpStream::connect(first.addr).await.unwrap();
    piping.write_all(header(1001).as_bytes()).await.unwrap();
    echo_once(&mut piping, 1).await;
    // Accepted, waiting for its header.
    let mut setup = TcpStream::connect(first.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = first.pid();
    let next = successors.upgrade(&first.process, old, 1).await;
    let line = first.process.line_with("upgrade: moved").await;
    assert!(
        line.contains("moved 1 connections") && line.contains("1 in setup"),
        "{line}"
    );
    assert!(
        !exited(old),
        "the old process exited with a connection in setup"
    );
    setup.write_all(header(1002).as_bytes()).await.unwrap();
    echo_once(&mut setup, 2).await;
    // It moved: nothing keeps the old process, though both are open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(old) {
        assert!(
            Instant::now() < deadline,
            "the old process still there:\n{}",
            first.process.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    echo_once(&mut setup, 3).await;
    echo_once(&mut piping, 4).await;
    signal(next, "-TERM");
    drop((setup, piping));
    wait_exited(next).await;
}

/// A terminated TLS connection cannot move (its TLS state is in this
/// process's memory): beside a plain connection that moves, it stays,
/// is counted so, goes on being served by the old process, and the old
/// process exits once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_tls_connection_stays_in_the_old_process_and_drains_there() {
    use common::pki::{Ca, Key};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let backend = TestBackend::echo().await;
    let mut ca = Ca::new("move-tls");
    let site = ca.server("site", &["tls.test"], Key::Ecdsa);
    // The plain listener on 127.0.0.1, the terminating one on 127.0.0.2.
    let text = format!(
        "{}[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.2:0\"\nbackends = [\"{}\"]\n\
         [listener.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        config(backend.addr, ""),
        backend.addr,
        site.cert.display(),
        site.key.display()
    );
    let file = ConfigFile::new("move-tls", &text);
    let first = start_on(&file);
    let mut successors = Successors::default();
    let listening = |ip: [u8; 4]| {
        let log = first.process.stderr_text();
        log.lines()
            .filter_map(common::listening_addr)
            .find(|a| a.ip() == std::net::IpAddr::from(ip))
    };
    let deadline = Instant::now() + PATIENCE;
    let tls_addr = loop {
        if let Some(addr) = listening([127, 0, 0, 2]) {
            break addr;
        }
        assert!(Instant::now() < deadline, "no TLS listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let plain_addr = listening([127, 0, 0, 1]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca.cert).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let mut tls = connector
        .connect("tls.test".try_into().unwrap(), tcp)
        .await
        .unwrap();
    echo_once(&mut tls, 1).await;
    let mut plain = TcpStream::connect(plain_addr).await.unwrap();
    echo_once(&mut plain, 2).await;
    let old = first.pid();
    let next = successors.upgrade(&first.process, old, 1).await;
    let line = first.process.line_with("upgrade: moved").await;
    assert!(
        line.contains("moved 1 connections") && line.contains("1 drain here (1 tls,"),
        "{line}"
    );
    // Served on by the old process, which stays for it alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !exited(old),
        "the old process exited with a TLS connection open"
    );
    echo_once(&mut tls, 3).await;
    echo_once(&mut plain, 4).await;
    tls.shutdown().await.unwrap();
    drop(tls);
    wait_exited(old).await;
    echo_once(&mut plain, 5).await;
    signal(next, "-TERM");
    drop(plain);
    wait_exited(next).await;
}

/// What a move whose new process died on a batch left behind.
struct KilledMove {
    /// The shared log of both processes.
    log: String,
    /// Each stream's result, as [`stream`] returns it.
    results: Vec<Result<(u16, u64), String>>,
    /// The old process's sockets before the upgrade and 2 s after the
    /// new process died.
    sockets: (usize, usize),
    /// The access log's records (both processes write to it).
    records: Vec<serde_json::Value>,
}

/// 300 streams through a process whose successor exits on receiving
/// move batch `die_at` (the test hook), before it answers it; the streams
/// go on for 2 s after its death, then end, and the old process exits.
async fn kill_mid_move(die_at: usize) -> KilledMove {
    let backend = TestBackend::echo().await;
    let file = ConfigFile::new(
        "move-die",
        &config(backend.addr, "drain_timeout = \"120s\"\n").replacen(
            "drain_timeout = \"30s\"\n",
            "",
            1,
        ),
    );
    let dir = common::TempDir::new(&format!("move-die-{die_at}-log"));
    let access_log = dir.arg("access.log");
    let first = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2", "--splice", "auto"]);
        c.args(["--access-log", &access_log, "--access-log-format", "json"]);
        c.env("TCPLB_TEST_DIE_AT_MOVE_BATCH", die_at.to_string());
        c
    }));
    let addr = first.addr;
    let mut successors = Successors::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let tasks = streams(addr, &stop, &ready);
    wait_ready(&ready, 300).await;
    let pid = first.pid();
    let before = common::socket_count(pid);
    let next = successors.upgrade(&first.process, pid, 1).await;
    first.process.line_with("did not take").await;
    wait_exited(next).await;
    // Served on by the old process for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!exited(pid), "the old process exited");
    let after = common::socket_count(pid);
    stop.store(true, Relaxed);
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    // It exits once its connections are over.
    wait_exited(pid).await;
    let records = std::fs::read_to_string(&access_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    KilledMove {
        log: first.process.stderr_text(),
        results,
        sockets: (before, after),
        records,
    }
}

/// The numbers in the old process's upgrade line, "upgrade: moved N
/// connections ... ; D drain here (...)": (N, D).
fn move_round(log: &str) -> (u64, u64) {
    let moved = moved_in_log(log);
    assert_eq!(moved.len(), 1, "{log}");
    let drain = log
        .lines()
        .find_map(|l| {
            l.split_once(" drain here")?
                .0
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no drain count in\n{log}"));
    (moved[0], drain)
}

/// The new process dies on receiving the first batch, before it answers
/// (the test hook): every connection stays in the old process and goes on
/// byte-exact, and its descriptors are what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_killed_in_the_middle_of_a_move_leaves_every_connection_served() {
    let killed = kill_mid_move(1).await;
    let log = &killed.log;
    let failures: Vec<&String> = killed
        .results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}\n{log}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(moved_in_log(log), vec![0], "{log}");
    let (before, after) = killed.sockets;
    assert!(
        after <= before + 4,
        "{before} -> {after} sockets in the old process"
    );
    assert_eq!(killed.records.len(), 300, "{:?}", killed.records);
}

/// The new process acknowledges the first batch and dies on the second,
/// before it answers: the acknowledged connections were its own and end
/// with it; every other one is still served, byte-exact, by the old
/// process, and none by both (no byte comes twice). The old process's
/// upgrade line counts both, and the access log has one record for each
/// connection the old process ended (the killed process wrote none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_killed_after_acknowledging_a_batch_leaves_the_rest_served_by_the_old() {
    let killed = kill_mid_move(2).await;
    let log = &killed.log;
    let (moved, drain) = move_round(log);
    // More connections than one batch: the first batch moved, the rest not.
    assert!((1..300).contains(&moved), "{moved} moved\n{log}");
    let mut served = std::collections::HashMap::new();
    let mut ended = Vec::new();
    for result in &killed.results {
        match result {
            Ok((port, sent)) => {
                served.insert(*port, *sent);
            }
            Err(e) => ended.push(e.clone()),
        }
    }
    // Exactly the acknowledged ones ended (with the killed process): cut,
    // never served wrong or twice.
    assert_eq!(
        ended.len() as u64,
        moved,
        "{} ended: {ended:?}\n{log}",
        ended.len()
    );
    assert!(
        ended.iter().all(|e| !e.contains("wrong bytes")),
        "{ended:?}"
    );
    assert_eq!(served.len() as u64, 300 - moved, "{log}");
    // The batch in flight, the offers waiting and the connections not
    // offered yet all stay, and the line counts each.
    assert_eq!(drain, 300 - moved, "{log}");
    let (before, after) = killed.sockets;
    assert!(
        after + 2 * moved as usize <= before + 4,
        "{before} -> {after} sockets in the old process, {moved} moved"
    );
    // One record per connection the old process ended, with the bytes
    // its client sent and got back.
    assert_eq!(killed.records.len(), served.len(), "{:?}", killed.records);
    for record in &killed.records {
        let client: SocketAddr = record["client"].as_str().unwrap().parse().unwrap();
        let sent = served[&client.port()];
        assert_eq!(record["sent"].as_u64(), Some(sent), "{record}");
        assert_eq!(record["received"].as_u64(), Some(sent), "{record}");
    }
}

/// A UDP listener through an upgrade: a reply still on its way to a
/// session of the old process reaches its client (the old process relays
/// it from the handed-over socket), the client's next datagram is served
/// by the new process, and the old one exits once its sessions idled out.
#[tokio::test]
async fn a_udp_upgrade_hands_the_socket_over_and_live_sessions_get_their_replies() {
    // Answers "slow" after 1.5 s, anything else at once.
    let backend = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let backend = Arc::new(backend);
    let serving = backend.clone();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = serving.recv_from(&mut buf).await {
            let datagram = buf[..n].to_vec();
            let socket = serving.clone();
            tokio::spawn(async move {
                if datagram == b"slow" {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                let _ = socket.send_to(&datagram, from).await;
            });
        }
    });
    let file = ConfigFile::new(
        "udp",
        &format!(
            "drain_timeout = \"30s\"\n[[listener]]\nname = \"dns\"\nlisten = \"127.0.0.1:0\"\n\
             protocol = \"udp\"\nidle_timeout = \"2s\"\nbackends = [\"{backend_addr}\"]\n\
             health = {{ interval = \"1s\" }}\n"
        ),
    );
    let first = wait_listening(spawn_process({
        let mut c = Command::new(tcplb_bin());
        c.args(["--config", file.arg(), "--workers", "2"]);
        c
    }));
    let mut successors = Successors::default();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(first.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    client.send(b"hello").await.unwrap();
    let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&buf[..n], b"hello");

    // The slow reply is due after the hand-over.
    client.send(b"slow").await.unwrap();
    let new = upgrade(&first.process, first.pid(), 1).await;
    successors.0.push(new);
    let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
        .await
        .expect("the reply due to the old process's session")
        .unwrap();
    assert_eq!(&buf[..n], b"slow");
    // The new process serves the same client and others.
    for _ in 0..3 {
        client.send(b"after").await.unwrap();
        let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
            .await
            .expect("an answer after the upgrade")
            .unwrap();
        assert_eq!(&buf[..n], b"after");
    }
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(first.addr).await.unwrap();
    other.send(b"new").await.unwrap();
    let n = tokio::time::timeout(PATIENCE, other.recv(&mut buf))
        .await
        .expect("a new client answered")
        .unwrap();
    assert_eq!(&buf[..n], b"new");
    // The old process's session idles out, and it exits.
    wait_exited(first.pid()).await;
    signal(new, "-TERM");
    wait_exited(new).await;
    echo.abort();
}
