//! The `tcplb` executable: parse flags (and the config file), start logging,
//! build the runtime, run the balancer. `tcplb ctl ...` is the control
//! API's client instead ([`tcplb::ctl`]); `tcplb check ...` validates a
//! configuration without starting ([`tcplb::runtime::check`]); `tcplb man`
//! and `tcplb completions SHELL` print the man page and shell completions
//! ([`tcplb::manual`]).

use tcplb::config::cli::{Startup, StartupError};
use tcplb::proxy::pipe;
use tcplb::runtime::upgrade::{Channel, Inherited, Relaunch};
use tcplb::runtime::{Balancer, check, signals, systemd, upgrade};

fn main() {
    // A separate parse path: the balancer's flags and `--help` stay exactly
    // as they are, and `ctl` is never mistaken for one of them.
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        std::process::exit(tcplb::ctl::main(std::env::args_os()));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "man" || a == "completions")
    {
        std::process::exit(tcplb::manual::main(std::env::args_os()));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "check") {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        std::process::exit(check::main(std::env::args_os().skip(2)));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Sockets handed over by an old tcplb (an upgrade) or by systemd.
    // SAFETY: no other thread runs yet, and nothing has opened a descriptor.
    let mut inherited = match unsafe { upgrade::receive() } {
        Some(Ok(inherited)) => inherited,
        Some(Err(e)) => {
            eprintln!("error: upgrade: {e}");
            std::process::exit(1);
        }
        // SAFETY: as above.
        None => Inherited::from_systemd(unsafe { systemd::take_listen_fds() }),
    };
    let channel = inherited.take_channel();
    let startup = match Startup::try_from_args(std::env::args_os()) {
        Ok(startup) => startup,
        Err(StartupError::Flags(e)) => {
            if let Some(channel) = channel {
                channel.report_failure(&e.to_string());
            }
            e.exit()
        }
        Err(e @ StartupError::File(_)) => {
            eprintln!("{e}");
            if let Some(channel) = channel {
                channel.report_failure(&format!("the configuration is not valid: {e}"));
            }
            std::process::exit(2);
        }
    };
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
    runtime.block_on(run(startup, inherited, channel));
}

async fn run(startup: Startup, inherited: Inherited, channel: Option<Channel>) {
    let workers = startup.workers.map(|n| n as usize);
    let mut balancer = match Balancer::bind_inheriting(startup.config, workers, inherited) {
        Ok(balancer) => balancer,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(channel) = channel {
                channel.report_failure(&format!("{e:#}"));
            }
            std::process::exit(1);
        }
    };
    if let Some(channel) = channel {
        balancer.take_over_from(channel);
    }
    if let Some(source) = startup.source {
        signals::reload_on_sighup(balancer.reload_handle(), source, balancer.shutdown_token());
    }
    match Relaunch::current() {
        Ok(relaunch) => signals::upgrade_on_sigusr2(
            balancer.reload_handle(),
            relaunch,
            balancer.shutdown_token(),
        ),
        Err(e) => log::warn!("cannot find this executable's path ({e}); SIGUSR2 upgrades are off"),
    }
    signals::reopen_on_sigusr1(balancer.access_log_reopener(), balancer.shutdown_token());
    balancer.run_until(signals::shutdown_signal()).await;
}
