//! A network namespace of the test's own, joined to the test's namespace by
//! a veth pair, for a peer behind a link the test can cut: a backend that
//! vanishes without a word (no reset, no FIN), as one behind a dead host
//! or a firewall does. Loopback cannot do that.
//!
//! The pair gets a /30 in 10.213.0.0/16 that no interface here holds; the
//! addresses exist only on the two veth ends. Everything is removed on
//! drop, also when the test fails. Needs root and `ip` (iproute2).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A namespace and its veth pair; both removed on drop.
pub struct Netns {
    /// The namespace's name (`ip netns`), unique to this process.
    pub name: String,
    /// The veth end in the test's own namespace.
    outer_link: String,
    /// The veth end inside the namespace: the one [`Netns::cut`] downs.
    inner_link: String,
    /// The outer end's address.
    pub outer: Ipv4Addr,
    /// The inner end's address: where the namespace's servers listen.
    pub inner: Ipv4Addr,
}

/// Runs `ip ARGS`, panicking with what to install or what went wrong.
fn ip(args: &[&str]) -> String {
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

impl Netns {
    /// Creates the namespace and the pair, both ends up and addressed.
    pub fn create() -> Netns {
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let n = CREATED.fetch_add(1, Relaxed);
        let pid = std::process::id();
        let (outer, inner) = free_subnet(pid.wrapping_mul(8).wrapping_add(n));
        // The guard first: whatever the steps below get to, drop removes.
        let netns = Netns {
            name: format!("tcplb-test-{pid}-{n}"),
            outer_link: format!("tl{pid}o{n}"),
            inner_link: format!("tl{pid}i{n}"),
            outer,
            inner,
        };
        let (name, o, i) = (&netns.name, &netns.outer_link, &netns.inner_link);
        ip(&["netns", "add", name]);
        ip(&["link", "add", o, "type", "veth", "peer", "name", i]);
        ip(&["link", "set", i, "netns", name]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", o]);
        ip(&["link", "set", o, "up"]);
        ip(&["-n", name, "addr", "add", &format!("{inner}/30"), "dev", i]);
        ip(&["-n", name, "link", "set", i, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        netns
    }

    /// A listener on the inner address (port 0: any), created inside the
    /// namespace by a thread that joins it and ends; the socket stays
    /// there, whichever thread uses it.
    pub fn listen(&self) -> std::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let addr = SocketAddr::from((self.inner, 0));
        let bound = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: a descriptor of ours, for the duration of the call;
            // it moves only this thread, which ends right after the bind.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind(addr)
        })
        .join()
        .expect("the namespace thread panicked");
        bound.unwrap_or_else(|e| panic!("cannot listen on {addr} in {}: {e}", self.name))
    }

    /// Cuts the link: the inner end goes down, and every packet either way
    /// is dropped from now on, with nothing sent back.
    pub fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_link, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; then the namespace. Errors
        // are ignored: the step that failed left nothing to remove.
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer_link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
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
