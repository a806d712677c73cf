//! `backend`: the demo backend. `backend 8081` serves HTTP saying
//! "Hello from backend :8081" (with `--name-peer`, "... to IP", IP who
//! connected); `backend --echo 9000` echoes bytes back, `backend --echo
//! --udp 9000` datagrams.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use tokio::net::TcpListener;

/// A tiny demo backend for trying tcplb.
#[derive(Parser)]
#[command(name = "backend", version, about)]
struct Args {
    /// Port to listen on.
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Echo bytes back instead of answering HTTP.
    #[arg(long)]
    echo: bool,
    /// With --echo: echo UDP datagrams instead of TCP bytes.
    #[arg(long, requires = "echo")]
    udp: bool,
    /// Also say who connected ("Hello from backend :8081 to 10.0.0.5"):
    /// behind several balancers, which one served.
    #[arg(long, conflicts_with = "echo")]
    name_peer: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = SocketAddr::new(args.bind, args.port);
    if args.udp {
        let result = match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => {
                log::info!("demo backend (udp echo) on {addr}");
                tcplb::demo::serve_udp_echo(socket).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            eprintln!("error: udp {addr}: {e}");
        }
        std::process::exit(1);
    }
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mode = if args.echo { "echo" } else { "http" };
    log::info!("demo backend ({mode}) listening on {addr}");
    let result = if args.echo {
        tcplb::demo::serve_echo(listener).await
    } else if args.name_peer {
        tcplb::demo::serve_http_naming_peer(listener).await
    } else {
        tcplb::demo::serve_http(listener).await
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
