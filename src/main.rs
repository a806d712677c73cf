//! The `tcplb` executable: parse flags, start logging, run the balancer.

use clap::Parser;
use tcplb::balancer::Balancer;
use tcplb::cli::Cli;
use tcplb::{pipe, signals};

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    pipe::set_splice_mode(cli.splice);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.workers {
        runtime.worker_threads(workers as usize);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(cli));
}

async fn run(cli: Cli) {
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
