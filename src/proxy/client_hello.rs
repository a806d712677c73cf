//! Reading a TLS ClientHello without terminating TLS: the server name (SNI)
//! and the ALPN protocols a client asks for, so a listener can route by
//! them while every byte goes on to the backend unchanged (nginx's
//! `ssl_preread`, Envoy's `tls_inspector`). tcplb never holds a key.
//!
//! [`parse`] is a pure function over the bytes received so far. Like the
//! PROXY parser, it tells a hello that is merely incomplete from bytes that
//! can never become one, so it can be fuzzed and so [`read`] can stop at the
//! first byte that rules a connection out. It reassembles a ClientHello
//! split across TLS records (and so across TCP segments), caps what it
//! buffers at [`MAX_BUFFERED`], and checks every length it reads against
//! the bytes that contain it. Anything else is rejected with a cause:
//! SSLv2-style hellos, records of another type, lengths that are truncated
//! or overlong, duplicate extensions, and empty or non-ASCII server names.
//!
//! References: RFC 8446 section 4.1.2 (ClientHello), RFC 6066 section 3
//! (server_name), RFC 7301 (ALPN).

use std::fmt;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Largest plaintext record payload (RFC 8446 section 5.1).
const MAX_RECORD: usize = 1 << 14;
/// Largest ClientHello accepted, handshake header included. Real ones,
/// post-quantum key shares and all, are under 2 KiB; 16 KiB is what one
/// record can hold.
pub const MAX_HELLO: usize = 1 << 14;
/// The most bytes the reader holds while waiting for a hello: the hello
/// plus the headers of a few records it may be split into.
pub const MAX_BUFFERED: usize = MAX_HELLO + 64 * RECORD_HEADER;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST: u8 = 0;

/// A TLS alert record, fatal `unrecognized_name` (RFC 6066): what a client
/// whose server name matches no route hears before the close.
pub const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

/// What a ClientHello asks for (serialisable: it travels with a
/// connection moved on an upgrade, for its access log record).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientHello {
    /// The server name (SNI), lower-cased and without a trailing dot;
    /// `None` when the client sent none.
    pub server_name: Option<String>,
    /// The ALPN protocol names, in the client's order (e.g. `h2`,
    /// `http/1.1`, `acme-tls/1`); empty without the extension.
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHello {
    /// Whether it asked for nothing: no server name, no ALPN.
    pub fn is_empty(&self) -> bool {
        self.server_name.is_none() && self.alpn.is_empty()
    }
}

/// A connection whose bytes were not a ClientHello: why, and what the
/// hello had said before it was ruled out (its server name and ALPN, when
/// the broken part came after them; empty otherwise), for the access log.
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: HelloError,
    /// What was read before the error.
    pub seen: ClientHello,
}

/// Why the bytes are not (yet) a ClientHello.
#[derive(Debug)]
pub enum HelloError {
    /// A valid start; more bytes are needed.
    Incomplete,
    /// Not the start of a TLS handshake at all (another protocol, or
    /// SSLv2); the text says what.
    NotTls(&'static str),
    /// A TLS handshake that can never become a valid ClientHello; the
    /// text says why.
    Invalid(&'static str),
    /// A ClientHello larger than [`MAX_HELLO`].
    TooLarge,
    /// The client closed before a complete ClientHello.
    Closed,
    /// No complete ClientHello within the allowed time.
    Timeout,
    Io(std::io::Error),
}

impl HelloError {
    /// Which of `ListenerStats::TLS_REJECT_REASONS` this is: bytes that are no TLS
    /// handshake at all, a broken or oversized hello, or a client that
    /// was too slow or went away (read errors count as gone).
    pub fn reason_index(&self) -> usize {
        match self {
            HelloError::NotTls(_) => 0,
            HelloError::Invalid(_) | HelloError::Incomplete => 1,
            HelloError::TooLarge => 2,
            HelloError::Timeout => 3,
            HelloError::Closed | HelloError::Io(_) => 4,
        }
    }

    /// A short cause for logs.
    pub fn cause(&self) -> &'static str {
        match self {
            HelloError::Incomplete => "incomplete",
            HelloError::NotTls(why) | HelloError::Invalid(why) => why,
            HelloError::TooLarge => "ClientHello larger than 16 KiB",
            HelloError::Closed => "closed before a complete ClientHello",
            HelloError::Timeout => "no complete ClientHello in time",
            HelloError::Io(_) => "read error",
        }
    }
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Io(e) => write!(f, "reading the ClientHello: {e}"),
            other => f.write_str(other.cause()),
        }
    }
}

impl std::error::Error for HelloError {}

/// Parses the ClientHello at the start of `buf` (the bytes a client sent,
/// from its first). `Incomplete` promises that every byte so far could
/// still be the start of a valid ClientHello.
pub fn parse(buf: &[u8]) -> Result<ClientHello, HelloError> {
    let mut hello = ClientHello::default();
    parse_into(buf, &mut hello)?;
    Ok(hello)
}

/// [`parse`], filling `hello` in as it goes: on an error, `hello` holds
/// what came before it.
fn parse_into(buf: &[u8], hello: &mut ClientHello) -> Result<(), HelloError> {
    let message = reassemble(buf)?;
    parse_hello(message.as_slice(), hello)
}

/// The handshake message carried by the records at the start of `buf`,
/// gathered across as many records as it spans.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>, HelloError> {
    if buf.len() > MAX_BUFFERED {
        return Err(HelloError::TooLarge);
    }
    let mut message: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(&content) = buf.get(at) else {
            return Err(HelloError::Incomplete);
        };
        if at == 0 && content & 0x80 != 0 {
            return Err(HelloError::NotTls("SSLv2-style ClientHello"));
        }
        if content != CONTENT_HANDSHAKE {
            return Err(HelloError::NotTls("not a TLS handshake record"));
        }
        if let Some(&major) = buf.get(at + 1)
            && major != 3
        {
            return Err(HelloError::NotTls("not a TLS record version"));
        }
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Err(HelloError::Incomplete);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(HelloError::Invalid("empty TLS record"));
        }
        if len > MAX_RECORD {
            return Err(HelloError::Invalid("TLS record longer than 16 KiB"));
        }
        let start = at + RECORD_HEADER;
        let end = (start + len).min(buf.len());
        message.extend_from_slice(&buf[start..end]);
        if message
            .first()
            .is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO)
        {
            return Err(HelloError::NotTls("handshake is not a ClientHello"));
        }
        if message.len() >= 4 {
            let body = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            let total = 4 + body;
            if total > MAX_HELLO {
                return Err(HelloError::TooLarge);
            }
            if message.len() >= total {
                // Bytes after the hello in its last record belong to later
                // handshake messages; the hello itself is complete.
                message.truncate(total);
                return Ok(message);
            }
        }
        if end < start + len {
            return Err(HelloError::Incomplete);
        }
        at = start + len;
    }
}

/// A cursor that reads big-endian fields and length-prefixed vectors, each
/// checked against what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if n > self.bytes.len() {
            return Err(HelloError::Invalid(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = usize::from(self.u8(what)?);
        self.take(len, what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = usize::from(self.u16(what)?);
        self.take(len, what)
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Parses a complete ClientHello handshake message (header included) into
/// `hello`, which keeps what was read before an error.
fn parse_hello(message: &[u8], hello: &mut ClientHello) -> Result<(), HelloError> {
    let mut r = Reader {
        bytes: &message[4..],
    };
    let version = r.u16("truncated ClientHello version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Invalid("not a TLS ClientHello version"));
    }
    r.take(32, "truncated ClientHello random")?;
    let session_id_len = usize::from(r.u8("truncated session id")?);
    if session_id_len > 32 {
        return Err(HelloError::Invalid("session id longer than 32 bytes"));
    }
    r.take(session_id_len, "session id longer than the ClientHello")?;
    let suites = r.vec16("cipher suites longer than the ClientHello")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Invalid("bad cipher suite list"));
    }
    let compression = r.vec8("compression methods longer than the ClientHello")?;
    if compression.is_empty() {
        return Err(HelloError::Invalid("no compression method"));
    }
    if r.is_empty() {
        // A TLS 1.2 hello may have no extensions at all.
        return Ok(());
    }
    let extensions = r.vec16("extensions longer than the ClientHello")?;
    if !r.is_empty() {
        return Err(HelloError::Invalid(
            "bytes after the ClientHello extensions",
        ));
    }
    let mut r = Reader { bytes: extensions };
    let mut seen: Vec<u16> = Vec::new();
    while !r.is_empty() {
        let kind = r.u16("truncated extension header")?;
        let data = r.vec16("extension longer than the extension list")?;
        if seen.contains(&kind) {
            return Err(HelloError::Invalid("duplicate extension"));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(server_name(data)?),
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Ok(())
}

/// The host name of a server_name extension: exactly one `host_name`,
/// non-empty printable ASCII, returned lower-case without a trailing dot.
fn server_name(data: &[u8]) -> Result<String, HelloError> {
    let mut outer = Reader { bytes: data };
    let list = outer.vec16("server name list longer than its extension")?;
    if !outer.is_empty() {
        return Err(HelloError::Invalid("bytes after the server name list"));
    }
    let mut r = Reader { bytes: list };
    let mut host: Option<String> = None;
    while !r.is_empty() {
        let kind = r.u8("truncated server name")?;
        let name = r.vec16("server name longer than its list")?;
        if kind != NAME_TYPE_HOST {
            // Unknown name types are skipped (none is defined today).
            continue;
        }
        if host.is_some() {
            return Err(HelloError::Invalid("two host names in one server_name"));
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty() {
            return Err(HelloError::Invalid("empty server name"));
        }
        if !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err(HelloError::Invalid("server name is not printable ASCII"));
        }
        host = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    host.ok_or(HelloError::Invalid("server_name without a host name"))
}

/// The protocol names of an ALPN extension; each non-empty.
fn alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut outer = Reader { bytes: data };
    let list = outer.vec16("ALPN list longer than its extension")?;
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Invalid("bad ALPN list"));
    }
    let mut r = Reader { bytes: list };
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8("ALPN name longer than its list")?;
        if name.is_empty() {
            return Err(HelloError::Invalid("empty ALPN protocol name"));
        }
        names.push(name.to_vec());
    }
    Ok(names)
}

/// Reads from `stream` until a ClientHello is complete, for at most
/// `timeout`. Returns it with every byte read, which the caller forwards
/// to the backend unchanged. Stops at the first byte that rules it out.
pub async fn read(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(ClientHello, Vec<u8>), Rejected> {
    tokio::time::timeout(timeout, read_inner(stream))
        .await
        .unwrap_or_else(|_| Err(HelloError::Timeout.into()))
}

impl From<HelloError> for Rejected {
    fn from(error: HelloError) -> Self {
        Rejected {
            error,
            seen: ClientHello::default(),
        }
    }
}

async fn read_inner(stream: &mut TcpStream) -> Result<(ClientHello, Vec<u8>), Rejected> {
    // Most hellos come whole in one read; start small, grow to the cap.
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    loop {
        if buf.len() == buf.capacity() {
            let room = (buf.capacity() * 2).min(MAX_BUFFERED + 1) - buf.len();
            buf.reserve_exact(room);
        }
        let n = stream.read_buf(&mut buf).await.map_err(HelloError::Io)?;
        if n == 0 {
            return Err(HelloError::Closed.into());
        }
        let mut hello = ClientHello::default();
        match parse_into(&buf, &mut hello) {
            Ok(()) => return Ok((hello, buf)),
            Err(HelloError::Incomplete) => {}
            Err(error) => return Err(Rejected { error, seen: hello }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built ClientHello with the given extensions, in one record.
    pub(crate) fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        for (kind, data) in extensions {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        records(&message, usize::MAX)
    }

    /// `message` in handshake records of at most `chunk` bytes each.
    pub(crate) fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in message.chunks(chunk.min(MAX_RECORD)) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    pub(crate) fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (EXT_SERVER_NAME, data)
    }

    fn alpn_ext(names: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(n.len() as u8);
            list.extend_from_slice(n);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        (EXT_ALPN, data)
    }

    fn invalid(buf: &[u8], why: &str) {
        match parse(buf) {
            Err(e @ (HelloError::NotTls(_) | HelloError::Invalid(_) | HelloError::TooLarge)) => {
                assert_eq!(e.cause(), why)
            }
            other => panic!("expected {why:?}, got {other:?}"),
        }
    }

    /// Every proper prefix of a valid hello is Incomplete.
    fn prefixes_are_incomplete(buf: &[u8]) {
        for k in 0..buf.len() {
            assert!(
                matches!(parse(&buf[..k]), Err(HelloError::Incomplete)),
                "prefix {k} of {}",
                buf.len()
            );
        }
    }

    #[test]
    fn server_name_and_alpn_are_read() {
        let buf = hello_with(&[
            (10, vec![0, 2, 0, 29]),
            sni(b"Api.Example.COM."),
            alpn_ext(&[b"h2", b"http/1.1"]),
        ]);
        let hello = parse(&buf).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(hello.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        prefixes_are_incomplete(&buf);
        // Bytes after the hello (the client's next flight) do not matter.
        let mut more = buf.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&more).unwrap(), hello);
    }

    #[test]
    fn a_hello_without_sni_or_extensions_is_valid() {
        let buf = hello_with(&[]);
        assert_eq!(parse(&buf).unwrap(), ClientHello::default());
        // TLS 1.2 allows no extension block at all.
        let mut message = vec![HANDSHAKE_CLIENT_HELLO, 0, 0, 41, 3, 3];
        message.extend_from_slice(&[9; 32]);
        message.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
        assert_eq!(
            parse(&records(&message, 100)).unwrap(),
            ClientHello::default()
        );
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let one = hello_with(&[sni(b"a.test"), (21, vec![0; 1500])]);
        let message = &one[RECORD_HEADER..];
        for chunk in [1, 3, 4, 5, 100, 512, 1000] {
            let split = records(message, chunk);
            if split.len() > MAX_BUFFERED {
                continue;
            }
            let hello = parse(&split).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(hello.server_name.as_deref(), Some("a.test"));
        }
        prefixes_are_incomplete(&records(message, 100));
    }

    #[test]
    fn malformed_hellos_are_rejected_with_a_cause() {
        let good = hello_with(&[sni(b"a.test")]);
        // SSLv2-style: high bit set in the first byte.
        invalid(&[0x80, 0x2e, 0x01, 0x03, 0x01], "SSLv2-style ClientHello");
        // Another record type (application data, alert), or plain text.
        invalid(&[23, 3, 3, 0, 5], "not a TLS handshake record");
        invalid(b"GET / HTTP/1.1\r\n", "not a TLS handshake record");
        invalid(&[22, 2, 0], "not a TLS record version");
        invalid(&[22, 3, 1, 0, 0], "empty TLS record");
        invalid(&[22, 3, 1, 0x40, 0x01], "TLS record longer than 16 KiB");
        // A handshake that is not a ClientHello (a ServerHello).
        let mut server_hello = good.clone();
        server_hello[RECORD_HEADER] = 2;
        invalid(&server_hello, "handshake is not a ClientHello");
        // A hello declaring more than 16 KiB.
        invalid(
            &[22, 3, 1, 0, 4, 1, 0, 0x40, 0x01],
            "ClientHello larger than 16 KiB",
        );
        // Lengths that overrun what contains them.
        let mut long_session = good.clone();
        long_session[RECORD_HEADER + 4 + 2 + 32] = 33;
        invalid(&long_session, "session id longer than 32 bytes");
        let mut overrun = good.clone();
        let ext_len = overrun.len() - (RECORD_HEADER + 4 + 2 + 32 + 1 + 4 + 2) - 2;
        let at = overrun.len() - ext_len - 2;
        overrun[at..at + 2].copy_from_slice(&((ext_len + 1) as u16).to_be_bytes());
        invalid(&overrun, "extensions longer than the ClientHello");
        invalid(
            &hello_with(&[sni(b"a.test"), sni(b"b.test")]),
            "duplicate extension",
        );
        invalid(&hello_with(&[sni(b"")]), "empty server name");
        invalid(&hello_with(&[sni(b".")]), "empty server name");
        invalid(
            &hello_with(&[sni("é.test".as_bytes())]),
            "server name is not printable ASCII",
        );
        invalid(
            &hello_with(&[sni(b"a b.test")]),
            "server name is not printable ASCII",
        );
        invalid(&hello_with(&[alpn_ext(&[b""])]), "empty ALPN protocol name");
        invalid(&hello_with(&[(EXT_ALPN, vec![0, 0])]), "bad ALPN list");
        // Oversized input is refused however it is split.
        invalid(
            &vec![22; MAX_BUFFERED + 1],
            "ClientHello larger than 16 KiB",
        );
    }

    #[test]
    fn what_came_before_a_broken_extension_is_kept() {
        let seen = |buf: &[u8]| {
            let mut hello = ClientHello::default();
            let error = parse_into(buf, &mut hello).unwrap_err();
            (hello, error.cause())
        };
        // The server name and ALPN came before the broken extension.
        let (hello, why) = seen(&hello_with(&[
            sni(b"a.test"),
            alpn_ext(&[b"h2"]),
            sni(b"b.test"),
        ]));
        assert_eq!(why, "duplicate extension");
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));
        assert_eq!(hello.alpn, [b"h2".to_vec()]);
        // A broken ALPN list after a good server name.
        let (hello, why) = seen(&hello_with(&[sni(b"a.test"), alpn_ext(&[b""])]));
        assert_eq!(why, "empty ALPN protocol name");
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));
        // A broken server name: nothing to keep.
        let (hello, _) = seen(&hello_with(&[sni(b"a b.test")]));
        assert!(hello.is_empty());
    }

    /// The first flight of a real rustls client (aws-lc-rs, which offers a
    /// post-quantum X25519MLKEM768 key share, as today's browsers do).
    pub(crate) fn rustls_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        use std::sync::Arc;
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn real_clients_hellos_are_read() {
        let openssl = include_bytes!("../../tests/fixtures/openssl_s_client_a.test.bin");
        let hello = parse(openssl).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));
        assert_eq!(hello.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let curl = include_bytes!("../../tests/fixtures/curl_b.example.test.bin");
        let hello = parse(curl).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("b.example.test"));
        assert_eq!(hello.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);

        let pq = rustls_hello("x.b.test", &[b"acme-tls/1"]);
        assert!(
            pq.len() > 1460,
            "a post-quantum hello outgrows one segment: {}",
            pq.len()
        );
        let hello = parse(&pq).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("x.b.test"));
        assert_eq!(hello.alpn, [b"acme-tls/1".to_vec()]);
        prefixes_are_incomplete(&pq);
        // The same hello cut into small records is read the same.
        let split = records(&pq[RECORD_HEADER..], 200);
        assert_eq!(parse(&split).unwrap(), hello);
    }

    #[tokio::test]
    async fn the_reader_gathers_segments_and_returns_every_byte() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pq = rustls_hello("a.test", &[b"h2"]);
        let sent = pq.clone();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            // 300-byte segments, and the client's next bytes right behind.
            for part in sent.chunks(300) {
                stream.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stream.write_all(b"after").await.unwrap();
            stream
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let (hello, bytes) = read(&mut server, Duration::from_secs(20)).await.unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("a.test"));
        assert!(
            bytes.starts_with(&pq),
            "every byte read is returned for forwarding"
        );
        let mut rest = bytes[pq.len()..].to_vec();
        let _client = client.await.unwrap();
        while rest.len() < 5 {
            let mut more = [0u8; 16];
            let n = server.read(&mut more).await.unwrap();
            rest.extend_from_slice(&more[..n]);
        }
        assert_eq!(rest, b"after");
    }

    #[tokio::test]
    async fn the_reader_stops_on_garbage_eof_and_silence() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pq = rustls_hello("a.test", &[]);

        // Plain text: rejected at the first byte.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
        let e = read(&mut server, Duration::from_secs(20))
            .await
            .unwrap_err()
            .error;
        assert_eq!(e.cause(), "not a TLS handshake record");

        // A client that stops in the middle.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(&pq[..pq.len() / 2]).await.unwrap();
        client.shutdown().await.unwrap();
        let e = read(&mut server, Duration::from_secs(20))
            .await
            .unwrap_err()
            .error;
        assert!(matches!(e, HelloError::Closed), "{e:?}");

        // A slow client: the timeout.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(&pq[..10]).await.unwrap();
        let e = read(&mut server, Duration::from_millis(100))
            .await
            .unwrap_err()
            .error;
        assert!(matches!(e, HelloError::Timeout), "{e:?}");
    }

    #[test]
    fn noise_never_panics_and_is_never_mistaken() {
        // A cheap deterministic stand-in for the fuzzer (which runs the
        // same over arbitrary bytes): noise behind a handshake record header
        // never panics, and nothing parses that does not start as a hello.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut buf = vec![22, 3, 1];
            let len = (x % 300) as usize;
            buf.extend_from_slice(&(len as u16).to_be_bytes());
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if parse(&buf).is_ok() {
                assert_eq!(buf[RECORD_HEADER], HANDSHAKE_CLIENT_HELLO, "{buf:?}");
                parsed += 1;
            }
        }
        assert!(parsed < 100, "{parsed} random buffers parsed as hellos");
    }
}
