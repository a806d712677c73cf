//! The `tcplb` executable: parse flags (and the config file), start logging,
//! build the runtime, run the balancer. `tcplb ctl ...` is the control
//! API's client instead ([`tcplb::ctl`]); `tcplb check ...` validates a
//! configuration without starting ([`tcplb::runtime::check`]).

use tcplb::config::cli::Startup;
use tcplb::proxy::pipe;
use tcplb::runtime::{Balancer, check, signals};

fn main() {
    // A separate parse path: the balancer's flags and `--help` stay exactly
    // as they are, and `ctl` is never mistaken for one of them.
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        std::process::exit(tcplb::ctl::main(std::env::args_os()));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "check") {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        std::process::exit(check::main(std::env::args_os().skip(2)));
    }
    let startup = Startup::from_args_or_exit();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    pipe::set_splice_mode(startup.splice);
    // Probes, signals, reloads and the admin endpoint; connections run on
    // the balancer's worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(startup));
}

async fn run(startup: Startup) {
    let workers = startup.workers.map(|n| n as usize);
    let balancer = match Balancer::bind_with_workers(startup.config, workers) {
        Ok(balancer) => balancer,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    if let Some(source) = startup.source {
        signals::reload_on_sighup(balancer.reload_handle(), source, balancer.shutdown_token());
    }
    balancer.run_until(signals::shutdown_signal()).await;
}
