//! Network namespaces of the test's own, for what loopback cannot show.
//!
//! - [`Netns`]: a namespace joined to the test's own namespace by a veth
//!   pair, for a peer behind a link the test can cut: a backend that
//!   vanishes without a word (no reset, no FIN), as one behind a dead host
//!   or a firewall does. The pair gets a /30 in 10.213.0.0/16 that no
//!   interface here holds; the addresses exist only on the two veth ends.
//! - [`Namespace`] and [`link`]: namespaces joined only to each other (by
//!   veth pairs, or through a bridge in one of them), with any addresses,
//!   since nothing of theirs is routed in the test's namespace: a LAN with
//!   a VRRP address, a router with a multipath route. Programs run inside
//!   one with [`Namespace::command`] (same PID: killed by it), sockets are
//!   made inside one with [`Namespace::listen`] and [`Namespace::connect`].
//!
//! Everything is removed on drop, also when the test fails: deleting a
//! namespace deletes the interfaces in it, and a veth pair goes with
//! either end. Needs root and `ip` (iproute2).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Runs `ip ARGS`, panicking with what to install or what went wrong.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}): this test needs iproute2 (apt-get install iproute2)")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {} (this test needs root and iproute2's `ip netns`)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A number unique in this process, for names.
fn next() -> u32 {
    static CREATED: AtomicU32 = AtomicU32::new(0);
    CREATED.fetch_add(1, Relaxed)
}

/// A network namespace, its loopback up; deleted on drop (with every
/// interface in it).
pub struct Namespace {
    /// Its name (`ip netns`), unique to this process.
    pub name: String,
}

impl Namespace {
    /// A new namespace; `role` (a few letters) goes into its name.
    pub fn new(role: &str) -> Namespace {
        let namespace = Namespace {
            name: format!("tcplb-{}-{role}{}", std::process::id(), next()),
        };
        ip(&["netns", "add", &namespace.name]);
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` to run inside this namespace: the child joins it before
    /// it execs, so its PID is the program's.
    pub fn command(&self, program: &str) -> Command {
        let path = self.path();
        let mut command = Command::new(program);
        // SAFETY: between fork and exec only open(2) and setns(2), both
        // async-signal-safe; the descriptor is closed at exec.
        unsafe {
            command.pre_exec(move || {
                let ns = std::fs::File::open(&path)?;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Sets `/proc/sys/net/...` key `key` (dotted, e.g.
    /// `net.ipv4.ip_forward`) to `value` inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.within(move || std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("cannot set {key}: {e}"));
    }

    /// A listener on `addr` (port 0: any), made inside this namespace.
    pub fn listen(&self, addr: SocketAddr) -> std::net::TcpListener {
        self.within(move || std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in {}: {e}", self.name))
    }

    /// A socket made inside this namespace, bound to `from` (SO_REUSEADDR,
    /// so a client can take the same source port again), connected to
    /// `to` within `timeout`.
    pub fn connect(
        &self,
        from: Option<SocketAddr>,
        to: SocketAddr,
        timeout: std::time::Duration,
    ) -> std::io::Result<std::net::TcpStream> {
        use socket2::{Domain, Socket, Type};
        let socket = self.within(move || {
            let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
            if let Some(from) = from {
                socket.set_reuse_address(true)?;
                socket.bind(&from.into())?;
            }
            Ok::<_, std::io::Error>(socket)
        })?;
        socket.connect_timeout(&to.into(), timeout)?;
        Ok(socket.into())
    }

    /// Whether `addr` is on one of this namespace's interfaces now.
    pub fn has_address(&self, addr: Ipv4Addr) -> bool {
        self.ip(&["-4", "-o", "addr", "show"])
            .contains(&format!(" {addr}/"))
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `work` on a thread that joins this namespace and ends: what it
    /// makes (a socket) stays in the namespace, whichever thread uses it.
    fn within<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: a descriptor of ours, for the duration of the call;
            // it moves only this thread, which ends right after `work`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            work()
        })
        .join()
        .expect("the namespace thread panicked")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Errors are ignored: the step that failed left nothing to remove.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair from `a` to `b`, both ends up; their names in `a` and `b`
/// (at most 15 characters, unique to this process). It goes when either
/// namespace does.
pub fn link(a: &Namespace, b: &Namespace) -> (String, String) {
    let n = next();
    let pid = std::process::id();
    let (in_a, in_b) = (format!("tl{pid}a{n}"), format!("tl{pid}b{n}"));
    ip(&[
        "link", "add", &in_a, "netns", &a.name, "type", "veth", "peer", "name", &in_b, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", &in_a, "up"]);
    b.ip(&["link", "set", &in_b, "up"]);
    (in_a, in_b)
}

/// A namespace and its veth pair to the test's own namespace; both
/// removed on drop.
pub struct Netns {
    /// The namespace.
    pub namespace: Namespace,
    /// The veth end in the test's own namespace.
    outer_link: String,
    /// The veth end inside the namespace: the one [`Netns::cut`] downs.
    inner_link: String,
    /// The outer end's address.
    pub outer: Ipv4Addr,
    /// The inner end's address: where the namespace's servers listen.
    pub inner: Ipv4Addr,
}

impl Netns {
    /// Creates the namespace and the pair, both ends up and addressed.
    pub fn create() -> Netns {
        let n = next();
        let pid = std::process::id();
        let (outer, inner) = free_subnet(pid.wrapping_mul(8).wrapping_add(n));
        // The guards first: whatever the steps below get to, drop removes.
        let netns = Netns {
            namespace: Namespace::new("peer"),
            outer_link: format!("tl{pid}o{n}"),
            inner_link: format!("tl{pid}i{n}"),
            outer,
            inner,
        };
        let (name, o, i) = (&netns.namespace.name, &netns.outer_link, &netns.inner_link);
        ip(&["link", "add", o, "type", "veth", "peer", "name", i]);
        ip(&["link", "set", i, "netns", name]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", o]);
        ip(&["link", "set", o, "up"]);
        netns
            .namespace
            .ip(&["addr", "add", &format!("{inner}/30"), "dev", i]);
        netns.namespace.ip(&["link", "set", i, "up"]);
        netns
    }

    /// A listener on the inner address (port 0: any), inside the namespace.
    pub fn listen(&self) -> std::net::TcpListener {
        self.namespace.listen(SocketAddr::from((self.inner, 0)))
    }

    /// Cuts the link: the inner end goes down, and every packet either way
    /// is dropped from now on, with nothing sent back.
    pub fn cut(&self) {
        self.namespace
            .ip(&["link", "set", &self.inner_link, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the namespace goes after.
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer_link])
            .output();
    }
}

/// A /30 in 10.213.0.0/16 with no address of it on any interface here,
/// searched from `seed`: its first host (outer) and second (inner).
fn free_subnet(seed: u32) -> (Ipv4Addr, Ipv4Addr) {
    let held = ip(&["-4", "-o", "addr", "show"]);
    for step in 0..256 {
        let n = seed.wrapping_add(step) % (1 << 14);
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + (n << 2);
        let (outer, inner) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let taken = [outer, inner]
            .iter()
            .any(|a| held.contains(&format!(" {a}/")));
        if !taken {
            return (outer, inner);
        }
    }
    panic!("no free /30 in 10.213.0.0/16:\n{held}");
}
