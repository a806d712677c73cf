//! The `tcplb` executable: parse flags (and the config file), start logging,
//! build the runtime, run the balancer.

use tcplb::balancer::Balancer;
use tcplb::cli::Startup;
use tcplb::{pipe, signals};

fn main() {
    let startup = Startup::from_args_or_exit();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    pipe::set_splice_mode(startup.splice);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = startup.workers {
        runtime.worker_threads(workers as usize);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(startup));
}

async fn run(startup: Startup) {
    let balancer = match Balancer::bind(startup.config) {
        Ok(balancer) => balancer,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    if let Some(source) = startup.source {
        signals::reload_on_sighup(balancer.reload_handle(), source, balancer.shutdown_token());
    }
    tokio::spawn(signals::shutdown_on_signal(balancer.shutdown_token()));
    balancer.run().await;
}
