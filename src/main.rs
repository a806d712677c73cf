//! The `tcplb` executable: parse flags, start logging, run the balancer.

use clap::Parser;
use tcplb::balancer::Balancer;
use tcplb::cli::Cli;
use tcplb::signals;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let balancer = match Balancer::bind(cli.into_config()) {
        Ok(balancer) => balancer,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    tokio::spawn(signals::shutdown_on_signal(balancer.shutdown_token()));
    balancer.run().await;
}
