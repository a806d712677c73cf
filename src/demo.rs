//! The demo backend: a tiny HTTP/1.1 server that says which port answered
//! (and, asked to, who connected: with balancers in front, which one), and
//! an echo server for non-HTTP traffic and benchmarks.
//!
//! It lives in the library so integration tests can run it in-process.

use std::io;

use log::debug;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head we accept; beyond it the connection is closed.
const MAX_HEAD: usize = 64 * 1024;

/// Answers every HTTP request with `Hello from backend :PORT`.
pub async fn serve_http(listener: TcpListener) -> io::Result<()> {
    serve_http_saying(listener, false).await
}

/// Answers every HTTP request with `Hello from backend :PORT to IP`, IP
/// the address that connected: behind a fleet of balancers, the one that
/// served the client.
pub async fn serve_http_naming_peer(listener: TcpListener) -> io::Result<()> {
    serve_http_saying(listener, true).await
}

async fn serve_http_saying(listener: TcpListener, name_peer: bool) -> io::Result<()> {
    let port = listener.local_addr()?.port();
    let body = format!("Hello from backend :{port}\n");
    let answers = (response(&body, true), response(&body, false));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let (keep_alive, close) = match name_peer {
            true => {
                let body = format!("Hello from backend :{port} to {}\n", peer.ip());
                (response(&body, true), response(&body, false))
            }
            false => answers.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = http_connection(stream, &keep_alive, &close).await {
                debug!("http connection: {e}");
            }
        });
    }
}

fn response(body: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves requests on one connection until the client closes or asks to.
async fn http_connection(mut stream: TcpStream, keep_alive: &[u8], close: &[u8]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Answer every complete request already buffered (pipelining).
        while let Some(head_len) = find_head_end(&buf) {
            let request = Request::parse(&buf[..head_len]);
            let total = head_len + request.content_length;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            if request.keep_alive {
                stream.write_all(keep_alive).await?;
            } else {
                stream.write_all(close).await?;
                return stream.shutdown().await;
            }
        }
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The little we need from a request head.
struct Request {
    keep_alive: bool,
    content_length: usize,
}

impl Request {
    fn parse(head: &[u8]) -> Request {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let http10 = lines.next().is_some_and(|l| l.ends_with("HTTP/1.0"));
        let mut keep_alive = !http10;
        let mut content_length = 0;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
        Request {
            keep_alive,
            content_length,
        }
    }
}

/// Echoes every byte back; shuts down its write half when the client does.
pub async fn serve_echo(listener: TcpListener) -> io::Result<()> {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (mut reader, mut writer) = stream.split();
            match tokio::io::copy(&mut reader, &mut writer).await {
                Ok(_) => {
                    let _ = writer.shutdown().await;
                }
                Err(e) => debug!("echo connection: {e}"),
            }
        });
    }
}

/// Sends every datagram back to whoever sent it (`backend --echo --udp`),
/// for the UDP tests and benchmarks.
pub async fn serve_udp_echo(socket: tokio::net::UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        if let Err(e) = socket.send_to(&buf[..n], from).await {
            debug!("udp echo to {from}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_keep_alive_and_length() {
        let r = Request::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.keep_alive);
        let r = Request::parse(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let r =
            Request::parse(b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(r.content_length, 5);
    }
}
