//! Session tickets: what lets a client resume without a full handshake.
//!
//! Without a key file, each terminating listener or route has keys of its
//! own in memory: rustls' aws-lc-rs `Ticketer`, which makes a new key every
//! 6 hours and accepts tickets of the previous one, so a ticket lives at
//! most 12 hours. The keys survive reloads (they belong to the listener or
//! route, kept by name), not restarts or upgrades.
//!
//! With `ticket_key_file`, the keys come from that file, shared by every
//! tcplb that reads it (several instances behind one address, and the new
//! process after a SIGUSR2 upgrade), so each resumes the others' sessions.
//! The file holds one key per line, 48 random bytes as 96 hex digits
//! (`openssl rand -hex 48`); `#` lines are comments. As with HAProxy's
//! `tls-ticket-keys`, rotation is appending a key and dropping the
//! oldest: the next-to-last key encrypts (the last alone when there is
//! one), every key decrypts, so every instance knows a key before any
//! instance encrypts with it. The file is read again when it changes.
//!
//! A ticket is `key name (16) | nonce (12) | AES-256-GCM(session state)`,
//! the key name and the owner's name (listener or route) authenticated
//! with it, so a ticket issued for one route never resumes on another
//! that shares the file.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::server::ProducesTickets;

use crate::config::tls::parse_hex;

/// A key's name and AES key: 16 + 32 bytes.
const KEY_BYTES: usize = 48;
/// How long a client may keep a ticket, as told to it: 12 hours, like the
/// in-memory keys.
const LIFETIME_SECONDS: u32 = 12 * 60 * 60;

/// The ticketer for an owner without a key file: rotating in-memory keys.
pub fn in_memory() -> Result<Arc<dyn ProducesTickets>, String> {
    rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("no ticket keys: {e}"))
}

/// Tickets under the keys of a shared file.
pub struct SharedKeys {
    /// Every key of the file, in file order.
    keys: Vec<Key>,
    /// The key that encrypts.
    current: usize,
    /// Authenticated with every ticket: whose tickets they are.
    owner: Vec<u8>,
}

struct Key {
    name: [u8; 16],
    key: LessSafeKey,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl SharedKeys {
    /// Reads `path`'s keys for tickets of `owner`.
    pub fn read(path: &Path, owner: &str) -> Result<SharedKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        SharedKeys::parse(&text, owner).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The keys written in `text` (the file's format).
    pub fn parse(text: &str, owner: &str) -> Result<SharedKeys, String> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes: [u8; KEY_BYTES] = parse_hex(line).ok_or_else(|| {
                format!(
                    "line {}: expected a key of 96 hex digits (`openssl rand -hex 48`)",
                    number + 1
                )
            })?;
            let mut name = [0u8; 16];
            name.copy_from_slice(&bytes[..16]);
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes[16..])
                .map_err(|_| format!("line {}: unusable key", number + 1))?;
            keys.push(Key {
                name,
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err("no ticket key in the file".into());
        }
        Ok(SharedKeys {
            current: keys.len().saturating_sub(2),
            keys,
            owner: owner.as_bytes().to_vec(),
        })
    }

    fn aad(&self, name: &[u8]) -> Vec<u8> {
        [name, &self.owner].concat()
    }
}

impl ProducesTickets for SharedKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECONDS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = &self.keys[self.current];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(&key.name)),
                &mut sealed,
            )
            .ok()?;
        Some([&key.name[..], &nonce, &sealed].concat())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = cipher.split_at_checked(16)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let key = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(self.aad(name)), &mut opened)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";
    const TWO: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2eff";

    #[test]
    fn the_next_to_last_key_encrypts_and_every_key_decrypts() {
        let old = SharedKeys::parse(&format!("# keys\n{ONE}\n"), "web").unwrap();
        let rotated = SharedKeys::parse(&format!("{ONE}\n{TWO}\n"), "web").unwrap();
        let ticket = old.encrypt(b"state").unwrap();
        assert_eq!(
            &ticket[..16],
            &ONE.as_bytes()[..0]
                .iter()
                .copied()
                .chain((0..16u8).collect::<Vec<_>>())
                .collect::<Vec<_>>()[..]
        );
        // An instance that already has the next key reads the old tickets,
        // and still issues tickets under the key everyone has.
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"state");
        assert_eq!(old.decrypt(&rotated.encrypt(b"x").unwrap()).unwrap(), b"x");
        // Another owner, a bit flipped, a truncated ticket: nothing.
        let other = SharedKeys::parse(ONE, "api").unwrap();
        assert!(other.decrypt(&ticket).is_none());
        let mut flipped = ticket.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(old.decrypt(&flipped).is_none());
        assert!(old.decrypt(&ticket[..20]).is_none());
        assert!(old.decrypt(&[]).is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        assert!(
            SharedKeys::parse("", "a")
                .unwrap_err()
                .contains("no ticket key")
        );
        let e = SharedKeys::parse(&format!("{ONE}\nnot hex\n"), "a").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
