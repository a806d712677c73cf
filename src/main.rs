//! The `tcplb` executable: parse flags (and the config file), start logging,
//! run the balancer.

use tcplb::balancer::Balancer;
use tcplb::cli::Startup;
use tcplb::signals;

#[tokio::main]
async fn main() {
    let startup = Startup::from_args_or_exit();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
