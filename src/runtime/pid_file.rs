//! The pid file (`--pid-file PATH`, `pid_file` in the file): the PID of
//! the process that serves, for `kill -USR2 "$(cat PATH)"`, scripts and
//! monitoring. `pidof tcplb` cannot say which: while an old process
//! drains after an upgrade there are two.
//!
//! It names the serving process at every moment: a start writes it once
//! its listeners are bound; the new process of an upgrade writes it when
//! it takes over, just before telling the old one to stop (until then the
//! old one serves, and a failed upgrade leaves it named); a process
//! removes it at exit only if it still names that process (after an
//! upgrade it names the new one). Each write is atomic (a temporary file
//! renamed over the path), so a reader never sees it empty or half
//! written. A start that cannot write it fails, as nginx's and HAProxy's
//! do; an upgrade that cannot is a failed upgrade.

use std::io;
use std::path::{Path, PathBuf};

use log::warn;

use super::state_file::write_atomically;

/// The pid file of this process.
pub struct PidFile {
    /// Where it is kept.
    path: PathBuf,
}

impl PidFile {
    pub fn new(path: &Path) -> PidFile {
        PidFile {
            path: path.to_path_buf(),
        }
    }

    /// Writes this process's PID (and a newline) over whatever the file
    /// said.
    pub fn claim(&self) -> io::Result<()> {
        write_atomically(&self.path, format!("{}\n", std::process::id()).as_bytes()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write the pid file {}: {e}", self.path.display()),
            )
        })
    }

    /// Removes the file if it still names this process.
    pub fn release(&self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!("cannot remove the pid file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_names_this_process_and_released_only_while_it_does() {
        let dir = std::env::temp_dir().join(format!("tcplb-pid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tcplb.pid");
        let pid_file = PidFile::new(&path);
        pid_file.claim().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        pid_file.release();
        assert!(!path.exists());
        // Taken over by another process (an upgrade's new one): kept.
        std::fs::write(&path, "1\n").unwrap();
        pid_file.release();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        // Nowhere to write: an error naming the file.
        let missing = PidFile::new(&dir.join("no-such-dir").join("tcplb.pid"));
        let e = missing.claim().unwrap_err().to_string();
        assert!(e.contains("no-such-dir/tcplb.pid"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
