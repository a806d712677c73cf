//! A systemd notification socket of the test's own (`NOTIFY_SOCKET`), to
//! read what a tcplb child tells systemd (READY=1, STOPPING=1, ...).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The notification socket, removed on drop.
pub struct Notifications {
    socket: UnixDatagram,
    /// Where it is bound: the child's `NOTIFY_SOCKET`.
    pub path: std::path::PathBuf,
    /// Every message so far, less those waited for.
    pub seen: Vec<String>,
}

impl Notifications {
    /// A socket named for this test process and `name`.
    pub fn new(name: &str) -> Notifications {
        let path = super::unique_temp_path("tcplb-notify", name);
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits (up to PATIENCE) for a message satisfying `wanted`; returns it.
    pub fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(found) = self.seen.iter().find(|m| wanted(m)) {
                let found = found.clone();
                self.seen.retain(|m| *m != found);
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "notification not received; got {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
