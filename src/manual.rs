//! `tcplb man` and `tcplb completions SHELL`: the man page and the shell
//! completions, generated from the very clap definitions the parsers use
//! ([`Cli`] for `tcplb` and `tcplb check`, [`CtlCli`] for `tcplb ctl`), so
//! a flag, its default or its possible values cannot be documented one way
//! and parsed another (ripgrep's `rg --generate man` does the same).
//!
//! The man page is clap_mangen's rendering of the flags, section by section
//! as `--help` groups them, framed by what clap does not know: the
//! commands, signals, environment, exit codes and files. `contrib/tcplb.1`
//! and `contrib/completions/` are this module's output, checked in for the
//! package; `tests/generated.rs` fails when they are stale.
//!
//! It sits on top, beside `main` and [`crate::ctl`]: it reads the two
//! command definitions and prints.

use std::ffi::OsString;
use std::io::{self, Write};

use clap::{Arg, Command, CommandFactory, ValueEnum};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::config::cli::Cli;
use crate::ctl::CtlCli;

/// The shells `tcplb completions` writes for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// `tcplb man` and `tcplb completions`, as clap commands: what `main`
/// parses their arguments with, and what the whole command line lists.
fn man_command() -> Command {
    Command::new("man")
        .about("Print this manual page (roff), generated from the flags' definitions")
        .long_about(
            "Print this manual page (roff), generated from the flags' definitions: \
             `tcplb man | man -l -`",
        )
}

fn completions_command() -> Command {
    Command::new("completions")
        .about("Print shell completions for tcplb and its commands")
        .arg(
            Arg::new("shell")
                .required(true)
                .value_name("SHELL")
                .value_parser(clap::builder::PossibleValuesParser::new(
                    SHELLS
                        .iter()
                        .filter_map(ValueEnum::to_possible_value)
                        .collect::<Vec<_>>(),
                ))
                .help("The shell to complete in"),
        )
}

/// `tcplb check`: the same flags as `tcplb` itself.
fn check_command() -> Command {
    Command::new("check")
        .about("Validate a configuration as a start would, without starting")
        .args(Cli::command().get_arguments().cloned())
}

/// The whole command line: `tcplb`'s flags, and `check`, `ctl`, `man` and
/// `completions` as its subcommands. (The executable dispatches those on
/// its first argument, so the balancer's own parser and `--help` stay
/// exactly as they are; this command is for the man page and the
/// completions.)
pub fn command() -> Command {
    Cli::command()
        .subcommand(check_command())
        .subcommand(CtlCli::command().name("ctl").bin_name("tcplb ctl"))
        .subcommand(man_command())
        .subcommand(completions_command())
}

/// Runs `tcplb man ...` or `tcplb completions ...` (`args` starts with
/// the program name); returns the exit code: 0, 1 when stdout cannot be
/// written, 2 for bad arguments.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().skip(1).collect();
    let man = args.first().is_some_and(|a| a == "man");
    let parser = if man {
        man_command()
    } else {
        completions_command()
    };
    let matches = match parser.bin_name("tcplb").try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let mut out = io::stdout().lock();
    let written = if man {
        man_page(&mut out)
    } else {
        let shell = matches
            .get_one::<String>("shell")
            .map(|s| s.parse::<Shell>());
        match shell {
            Some(Ok(shell)) => completions(shell, &mut out),
            _ => Err(io::Error::other("no shell given")),
        }
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write: {e}");
            1
        }
    }
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command(), "tcplb", &mut buf);
    let mut script = String::from_utf8_lossy(&buf).into_owned();
    if shell == Shell::Fish {
        script = repair_fish(script);
    }
    out.write_all(script.as_bytes())
}

/// The line of clap_complete's fish script that gives up on a command
/// line argparse cannot read yet.
const FISH_GIVE_UP: &str = "\n    or return\n";

/// Two gaps of clap_complete's fish script, filled from the same command:
/// its guard for the top level gives up while an option still waits for
/// its value (`tcplb --strategy <TAB>` offered files), and it completes no
/// positional argument's values (`tcplb completions <TAB>`).
fn repair_fish(script: String) -> String {
    // A line argparse cannot read is one whose last option waits for its
    // value: that is the top level still, not a subcommand.
    let mut script = script.replacen(FISH_GIVE_UP, "\n    or return 0\n", 1);
    for sub in command().get_subcommands() {
        for arg in sub.get_arguments().filter(|a| a.is_positional()) {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                script.push_str(&format!(
                    "complete -c tcplb -n \"__fish_tcplb_using_subcommand {}\" -f -a \"{}\"\n",
                    sub.get_name(),
                    values.join(" ")
                ));
            }
        }
    }
    script
}

/// Writes the man page, tcplb(1).
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let tcplb = Man::new(Cli::command())
        .title("TCPLB")
        .source(format!("tcplb {version}"))
        .manual("User Commands");
    // Each clap_mangen piece starts with the same apostrophe preamble;
    // the page needs it once.
    let preamble = Roff::new().render();
    let mut page = String::new();
    let mut piece = |render: &dyn Fn(&mut Vec<u8>) -> io::Result<()>| -> io::Result<()> {
        let mut buf = Vec::new();
        render(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        match text.strip_prefix(&preamble) {
            Some(rest) if !page.is_empty() => page.push_str(rest),
            _ => page.push_str(&text),
        }
        Ok(())
    };
    piece(&|w| tcplb.render_title(w))?;
    piece(&|w| tcplb.render_name_section(w))?;
    piece(&|w| synopsis().to_writer(w))?;
    piece(&|w| description().to_writer(w))?;
    piece(&|w| tcplb.render_options_section(w))?;
    piece(&|w| commands().to_writer(w))?;
    // `tcplb ctl`'s own options, under a heading of their own.
    let ctl = CtlCli::command()
        .disable_help_flag(true)
        .disable_version_flag(true)
        .mut_args(|a| a.help_heading("CTL OPTIONS"));
    piece(&|w| Man::new(ctl.clone()).render_options_section(w))?;
    piece(&|w| ctl_commands(&ctl).to_writer(w))?;
    piece(&|w| fixed_sections().to_writer(w))?;
    out.write_all(page.as_bytes())
}

fn synopsis() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    let lines: [&[&str]; 5] = [
        &["tcplb", " [OPTIONS]"],
        &["tcplb check", " [OPTIONS] ", "--config", " FILE"],
        &["tcplb ctl", " [CTL OPTIONS] COMMAND [ARGS]"],
        &["tcplb man"],
        &["tcplb completions", " bash|zsh|fish"],
    ];
    for (i, parts) in lines.iter().enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        let inline: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(j, p)| if j % 2 == 0 { bold(*p) } else { roman(*p) })
            .collect();
        roff.text(inline);
    }
    roff
}

fn description() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([
        bold("tcplb"),
        roman(
            " accepts TCP connections on one or more listeners and pipes each one, \
             bytes unchanged in both directions, to a healthy backend of the listener's \
             pool (or, for TLS, of the route its server name selects). Listeners, pools \
             and process-wide settings come from the flags below or from a TOML file (",
        ),
        bold("--config"),
        roman(
            "); flags given on the command line override the file for every listener. \
             Durations read \"250ms\", \"10s\", \"2m\", \"1h 30m\"; a bare number is seconds.",
        ),
    ]);
    roff.control("PP", []);
    roff.text([roman(
        "Every flag and every key of the file, with its default, where it may appear \
         and whether a reload applies it, is in the configuration reference, \
         /usr/share/doc/tcplb/docs/configuration.md; /etc/tcplb/tcplb.toml shows \
         the file.",
    )]);
    roff
}

fn commands() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let cmd = command();
    for sub in cmd.get_subcommands() {
        roff.control("TP", []);
        roff.text([bold(format!("tcplb {}", sub.get_name()))]);
        let about = sub.get_long_about().or_else(|| sub.get_about());
        let about = about.map(|a| a.to_string()).unwrap_or_default();
        roff.text([roman(format!("{}.", about.trim_end_matches('.')))]);
        let more = match sub.get_name() {
            "check" => {
                "It checks the file's syntax, keys and values, then what it points at: \
                 listen and admin addresses can be bound, backend names resolve, the token \
                 file reads, the state file's, pid file's and admin socket's directories \
                 take new files, TLS certificates and keys read and match (a certificate \
                 expiring within 14 days is a warning). It prints a summary and exits 0, or lists every problem \
                 with its file and line and exits 1 (2 for bad flags). It takes the same \
                 flags as tcplb, so a unit's exact command line can be checked."
            }
            "ctl" => {
                "The control API's client: list pools, backends and open connections; \
                 drain, maintenance, ready, weights; add and remove backends; close one \
                 connection or all of a backend's; turn the instance's readiness off and \
                 on (ready off, ready on). Repeat --admin (or give --admin-file) to apply \
                 a command to several instances at once: each result is reported, and the \
                 exit code is 0 only if all succeeded. Exit 0 on success, 1 on an error \
                 from the server or the connection, 2 on bad arguments. See CTL OPTIONS \
                 and CTL COMMANDS."
            }
            _ => continue,
        };
        roff.text([roman(more)]);
    }
    roff
}

/// Each `tcplb ctl` command: its synopsis from its arguments, and its help.
fn ctl_commands(ctl: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["CTL COMMANDS"]);
    for sub in ctl.get_subcommands().filter(|s| s.get_name() != "help") {
        let line = ctl_usage(sub).into_iter().map(|(font, text)| match font {
            Font::Bold => bold(text),
            Font::Italic => italic(text),
            Font::Roman => roman(text),
        });
        roff.control("TP", []);
        roff.text(line.collect::<Vec<_>>());
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments().filter(|a| !is_generated(a)) {
            let Some(help) = arg.get_help() else { continue };
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => value_name(arg),
            };
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = match defaults.as_slice() {
                [] => String::new(),
                values if arg.get_action().takes_values() => {
                    format!(" [default: {}]", values.join(","))
                }
                // A switch's implicit "false".
                _ => String::new(),
            };
            roff.control("br", []);
            roff.text([italic(name), roman(format!(": {help}{default}"))]);
        }
    }
    roff
}

/// How a piece of a synopsis is set: commands and flags bold, what the
/// user fills in italic, brackets plain.
#[derive(Clone, Copy)]
enum Font {
    Bold,
    Italic,
    Roman,
}

/// One `tcplb ctl` command's synopsis, piece by piece, from its arguments:
/// `tcplb ctl drain POOL BACKEND [--deadline DUR]`.
fn ctl_usage(sub: &Command) -> Vec<(Font, String)> {
    let mut line = vec![(Font::Bold, format!("tcplb ctl {}", sub.get_name()))];
    for arg in sub.get_arguments().filter(|a| !is_generated(a)) {
        line.push((Font::Roman, " ".into()));
        let value = value_name(arg);
        match arg.get_long() {
            Some(long) => {
                line.push((Font::Roman, "[".into()));
                line.push((Font::Bold, format!("--{long}")));
                if arg.get_action().takes_values() {
                    line.push((Font::Roman, " ".into()));
                    line.push((Font::Italic, value));
                }
                line.push((Font::Roman, "]".into()));
            }
            None if arg.is_required_set() => line.push((Font::Italic, value)),
            None => line.extend([
                (Font::Roman, "[".into()),
                (Font::Italic, value),
                (Font::Roman, "]".into()),
            ]),
        }
    }
    line
}

/// Every `tcplb ctl` command's synopsis as plain text, as the man page
/// sets it (the control documentation must show each one).
pub fn ctl_synopses() -> Vec<String> {
    CtlCli::command()
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|sub| ctl_usage(sub).into_iter().map(|(_, text)| text).collect())
        .collect()
}

/// What an argument's value is called: its value name, else its id.
fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map_or_else(
            || arg.get_id().to_string().to_uppercase(),
            |n| n.to_string(),
        )
}

/// `--help` and `--version`, which clap adds to every command.
fn is_generated(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// What clap cannot know: signals, environment, exit codes, files.
fn fixed_sections() -> Roff {
    let mut roff = Roff::new();
    let entries = |roff: &mut Roff, title: &str, items: &[(&str, &str)]| {
        roff.control("SH", [title]);
        for (name, text) in items {
            roff.control("TP", []);
            roff.text([bold(*name)]);
            roff.text([roman(*text)]);
        }
    };
    entries(
        &mut roff,
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Re-reads the configuration file, runs the checks of tcplb check and \
                 applies it for new connections; open connections keep what they started \
                 with. A file with problems is rejected whole and the running configuration \
                 stays. Settings a reload cannot apply in place (backlog, admin address, \
                 token file, admin socket, state file, pid file, resolver, access log) are \
                 named in the log as needing an upgrade or a restart.",
            ),
            (
                "SIGUSR2",
                "Binary upgrade: starts the executable at the path tcplb was started from, \
                 with the same arguments, and hands it every listening socket and the \
                 operators' runtime changes. Once the new process serves, the old one stops \
                 accepting, drains and exits; if the new one fails (bad configuration, \
                 crash, 60 s without reporting ready) the old one keeps serving and logs \
                 why. With --pid-file PATH the file always names the serving process: \
                 kill -USR2 \"$(cat PATH)\".",
            ),
            (
                "SIGUSR1",
                "Reopens the access log file: what is queued is written to the file open \
                 until then, then the path is opened again, so a rename followed by SIGUSR1 \
                 (logrotate's postrotate) loses no line.",
            ),
            (
                "SIGTERM, SIGINT",
                "GET /ready answers 503 and systemd is told STOPPING=1 at once; the \
                 listeners go on accepting for the shutdown delay (--shutdown-delay, 0 by \
                 default); then stop accepting, let open connections finish for up to the \
                 drain timeout (those still open in its last tenth, at most 10 s, are \
                 closed one after another over it), exit.",
            ),
        ],
    );
    entries(
        &mut roff,
        "ENVIRONMENT",
        &[
            (
                "RUST_LOG",
                "Log level on stderr: info by default (start-up, health transitions, \
                 membership changes, shutdown); debug adds each connection.",
            ),
            (
                "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
                "systemd socket activation: a listener takes the passed socket whose \
                 FileDescriptorName= is its name, or the one bound at its listen address; \
                 a socket named admin serves the admin endpoint.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "systemd notifications: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, and \
                 MAINPID= from an upgrade's new process.",
            ),
        ],
    );
    entries(
        &mut roff,
        "EXIT STATUS",
        &[
            (
                "0",
                "A clean shutdown, a valid configuration (tcplb check).",
            ),
            (
                "1",
                "A failure after the arguments were read: a listener that cannot be bound, \
                 problems found by tcplb check, an error from tcplb ctl.",
            ),
            (
                "2",
                "A bad flag or a bad configuration file, before anything binds.",
            ),
        ],
    );
    entries(
        &mut roff,
        "FILES",
        &[
            (
                "/etc/tcplb/tcplb.toml",
                "The configuration the systemd unit starts with.",
            ),
            (
                "/lib/systemd/system/tcplb.service, tcplb.socket",
                "The systemd units.",
            ),
            (
                "/run/tcplb/tcplb.pid",
                "The serving process's PID, as the unit starts tcplb (--pid-file).",
            ),
            (
                "/usr/share/doc/tcplb/",
                "README.md and docs/: the configuration reference, health checks, runtime \
                 control, observability, TLS, upgrades, running more than one instance \
                 (fleet), benchmarks, design, testing.",
            ),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemd.socket"),
        roman("(5), "),
        bold("sd_notify"),
        roman("(3), "),
        bold("logrotate"),
        roman("(8)"),
    ]);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_command_line_is_consistent() {
        // clap's own debug checks (unique ids, names, value parsers).
        command().debug_assert();
    }

    #[test]
    fn the_man_page_has_every_flag_and_ctl_command_and_one_preamble() {
        let mut page = Vec::new();
        man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        let preamble = Roff::new().render();
        assert_eq!(page.matches(preamble.as_str()).count(), 1);
        for arg in Cli::command().get_arguments() {
            let long = arg.get_long().unwrap();
            assert!(
                page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "{long}"
            );
        }
        for sub in ["drain", "close\\-connections", "weight"] {
            assert!(page.contains(&format!("tcplb ctl {sub}")), "{sub}");
        }
        for heading in [
            "LISTENER",
            "HEALTH CHECKS",
            "CTL OPTIONS",
            "SIGNALS",
            "FILES",
        ] {
            let found = page
                .lines()
                .any(|l| l.starts_with(".SH") && l.contains(heading));
            assert!(found, "{heading}");
        }
    }

    #[test]
    fn the_fish_repair_finds_what_it_repairs() {
        let mut buf = Vec::new();
        clap_complete::generate(Shell::Fish, &mut command(), "tcplb", &mut buf);
        let script = String::from_utf8(buf).unwrap();
        assert_eq!(
            script.matches(FISH_GIVE_UP).count(),
            1,
            "clap_complete changed"
        );
        let repaired = repair_fish(script);
        assert!(!repaired.contains(FISH_GIVE_UP));
        assert!(repaired.ends_with(
            "complete -c tcplb -n \"__fish_tcplb_using_subcommand completions\" -f -a \"bash zsh fish\"\n"
        ));
    }

    #[test]
    fn completions_name_subcommands_and_possible_values() {
        for shell in SHELLS {
            let mut script = Vec::new();
            completions(shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            for word in ["--strategy", "maglev", "close-connections", "--deadline"] {
                assert!(script.contains(word), "{shell}: {word}");
            }
        }
    }
}
