//! The state file (`--state-file PATH`): the operator overlay as JSON, so
//! changes made through the control API survive a restart.
//!
//! It exists apart from the overlay because it is I/O: the overlay
//! ([`crate::pool::overlay`]) is pure data and merge rules, and this module
//! only reads and writes it. A write is atomic: a temporary file in the
//! same directory, written, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves the old file or the new one, never
//! half of one. A missing file at start is normal (nothing changed yet); an
//! unreadable or corrupt one is logged and moved aside to `PATH.bad`, and
//! tcplb starts from the configuration alone.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use log::{error, info};

use crate::pool::overlay::Overlay;

/// Reads the overlay kept at `path`; an empty one when there is none or
/// it cannot be used (then moved aside to `PATH.bad`).
pub fn load(path: &Path) -> Overlay {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!(
                "state file {}: not there yet; starting from the configuration",
                path.display()
            );
            return Overlay::default();
        }
        Err(e) => {
            error!("state file {}: cannot read it: {e}", path.display());
            set_aside(path);
            return Overlay::default();
        }
    };
    match serde_json::from_slice::<Overlay>(&text) {
        Ok(overlay) => {
            info!(
                "state file {}: runtime changes for {} pool(s) restored",
                path.display(),
                overlay.pools.len()
            );
            overlay
        }
        Err(e) => {
            error!("state file {}: corrupt ({e})", path.display());
            set_aside(path);
            Overlay::default()
        }
    }
}

/// `PATH.bad`.
pub fn bad_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bad");
    PathBuf::from(name)
}

fn set_aside(path: &Path) {
    let bad = bad_path(path);
    match fs::rename(path, &bad) {
        Ok(()) => error!(
            "state file moved aside to {}; starting from the configuration",
            bad.display()
        ),
        Err(e) => error!(
            "cannot move the state file aside to {}: {e}; starting from the configuration",
            bad.display()
        ),
    }
}

/// Writes `overlay` to `path` atomically (see the module doc).
pub fn save(path: &Path, overlay: &Overlay) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(overlay).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomically(path, &text)
}

/// Replaces `path` with `text` so that a reader (or a crash) sees the old
/// file or the new one, never part of one: a temporary file beside it,
/// written, fsynced, renamed over it, and the directory fsynced. (The pid
/// file is written the same way.)
pub fn write_atomically(path: &Path, text: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = PathBuf::from(temp_name);
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(text)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServiceConfig, parse_backend};

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcplb-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_state_loads_back_and_leaves_no_temporary_file() {
        let dir = dir("roundtrip");
        let path = dir.join("state.json");
        assert_eq!(load(&path), Overlay::default(), "missing is empty");
        let base = ServiceConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![parse_backend("127.0.0.1:1").unwrap()],
        );
        let mut overlay = Overlay::default();
        overlay
            .pool_mut("web")
            .set_weight(&base, "127.0.0.1:1", 5)
            .unwrap();
        save(&path, &overlay).unwrap();
        save(&path, &overlay).unwrap();
        assert_eq!(load(&path), overlay);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = dir("corrupt");
        let path = dir.join("state.json");
        fs::write(&path, "{\"pools\": nope").unwrap();
        assert_eq!(load(&path), Overlay::default());
        assert!(!path.exists());
        assert_eq!(
            fs::read_to_string(bad_path(&path)).unwrap(),
            "{\"pools\": nope"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_is_an_error_and_keeps_the_old_file() {
        let dir = dir("failed");
        let path = dir.join("missing-dir").join("state.json");
        assert!(save(&path, &Overlay::default()).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
