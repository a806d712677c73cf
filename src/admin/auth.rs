//! Who may change things through the admin endpoint.
//!
//! Read-only is the default. Write access is given only to a request over
//! the Unix admin socket (its mode 0600 is the check), or to a request over
//! TCP that carries `Authorization: Bearer <token>` with the token from
//! `--admin-token-file`.
//!
//! The token is compared in constant time by the few lines of
//! [`same_secret`] rather than with the `subtle` crate: one XOR-accumulate
//! loop over equal-length bytes is all that is needed, and a dependency for
//! it would be more to audit than the loop. The token's length is not
//! secret (a wrong length is refused at once); its bytes are.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

/// Where a request came from, which decides its access.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The TCP endpoint, from this peer.
    Tcp(std::net::SocketAddr),
    /// The Unix socket: write access for every request.
    Unix,
}

impl Origin {
    /// How the log names who made a change.
    pub fn who(&self) -> String {
        match self {
            Origin::Tcp(peer) => peer.to_string(),
            Origin::Unix => "unix socket".to_string(),
        }
    }
}

/// Whether a request from `origin` with `headers` may change things, given
/// the configured `token` (none: TCP is read-only).
pub fn may_write(origin: &Origin, headers: &HeaderMap, token: Option<&str>) -> bool {
    match origin {
        Origin::Unix => true,
        Origin::Tcp(_) => {
            let Some(token) = token else { return false };
            let Some(given) = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            else {
                return false;
            };
            same_secret(given, token.as_bytes())
        }
    }
}

/// Whether `a` and `b` are equal, in time that depends on their length
/// only, not on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn secrets_compare_whole_and_by_length() {
        assert!(same_secret(b"s3cret-token", b"s3cret-token"));
        assert!(!same_secret(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!same_secret(b"X3cret-token", b"s3cret-token"));
        assert!(!same_secret(b"s3cret", b"s3cret-token"));
        assert!(!same_secret(b"", b"x"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn only_the_socket_or_the_right_bearer_token_may_write() {
        let tcp = Origin::Tcp("127.0.0.1:1".parse().unwrap());
        let mut headers = HeaderMap::new();
        assert!(may_write(&Origin::Unix, &headers, None));
        assert!(!may_write(&tcp, &headers, Some("t0k")), "no header");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0k"));
        assert!(may_write(&tcp, &headers, Some("t0k")));
        assert!(!may_write(&tcp, &headers, None), "no token configured");
        assert!(!may_write(&tcp, &headers, Some("t0K")), "wrong token");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic t0k"));
        assert!(!may_write(&tcp, &headers, Some("t0k")), "another scheme");
    }
}
