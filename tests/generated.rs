//! The files generated from the flags' definitions: `contrib/tcplb.1` and
//! `contrib/completions/` must be exactly what the binary prints (`tcplb
//! man`, `tcplb completions SHELL`), the man page must render without a
//! warning, the completions must complete in real shells, and the `.deb`
//! must install them where man and the shells look.

mod common;

use std::path::Path;
use std::process::Command;

use common::tcplb_output as tcplb;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The generated files: path under the root, and the `tcplb` arguments
/// that print it.
const GENERATED: &[(&str, &[&str])] = &[
    ("contrib/tcplb.1", &["man"]),
    ("contrib/completions/tcplb.bash", &["completions", "bash"]),
    ("contrib/completions/_tcplb", &["completions", "zsh"]),
    ("contrib/completions/tcplb.fish", &["completions", "fish"]),
];

/// Runs `program args` and returns its stdout; fails the test (with how to
/// install the program) when it cannot run or fails.
fn run(program: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): install it with `apt-get install {package}` \
                 (scripts/test.sh does, from scripts/test-packages.txt)"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_checked_in_man_page_and_completions_are_what_the_binary_prints() {
    let mut stale = Vec::new();
    for (path, args) in GENERATED {
        let (code, printed, err) = tcplb(args);
        assert_eq!(code, 0, "tcplb {args:?}: {err}");
        assert!(err.is_empty(), "tcplb {args:?} wrote to stderr: {err}");
        let checked_in = std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_default();
        if checked_in != printed {
            stale.push(format!(
                "{path} is stale: regenerate it with `cargo run -q -- {} > {path}`",
                args.join(" ")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\n(scripts/generate.sh regenerates every one of them)",
        stale.join("\n")
    );
}

#[test]
fn man_and_completions_take_their_arguments_like_any_command() {
    let (code, _, err) = tcplb(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
    let (code, _, err) = tcplb(&["completions"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = tcplb(&["man", "--nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = tcplb(&["man", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("manual page"), "{out}");
}

#[test]
fn the_man_page_renders_without_a_warning_and_names_every_flag() {
    // -k: preconv, as man itself runs it (the help texts hold UTF-8).
    let page = run(
        "groff",
        "groff-base",
        // -P-cbou: plain text, no overstrike for bold and underline.
        &[
            "-k",
            "-man",
            "-Tutf8",
            "-ww",
            "-rLL=200n",
            "-P-cbou",
            "contrib/tcplb.1",
        ],
    );
    let out = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z", "contrib/tcplb.1"])
        .current_dir(ROOT)
        .output()
        .expect("groff");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.is_empty(), "groff warns:\n{warnings}");
    // Rendered text, not the roff source: hyphens are plain again.
    let page = page.replace(['\u{2010}', '\u{2212}'], "-");
    for flag in ["--listen", "--strategy", "--tcp-user-timeout", "--pid-file"] {
        assert!(page.contains(flag), "{flag} missing from the rendered page");
    }
    for text in [
        "maglev",
        "tcplb ctl drain POOL BACKEND [--deadline DUR]",
        "SIGUSR2",
        "EXIT STATUS",
    ] {
        assert!(
            page.contains(text),
            "{text:?} missing from the rendered page"
        );
    }
}

#[test]
fn bash_completes_flags_values_and_ctl_commands() {
    // The completion function, called as bash's programmable completion
    // calls it: COMP_WORDS and COMP_CWORD, then "$1" the command, "$2" the
    // word being completed, "$3" the word before it.
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let script = format!(
            "source contrib/completions/tcplb.bash\n\
             COMP_WORDS=({words})\n\
             COMP_CWORD={cword}\n\
             COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
             COMP_POINT=${{#COMP_LINE}}\n\
             _tcplb tcplb '{current}' '{previous}'\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            words = quoted.join(" "),
            cword = words.len() - 1,
            current = words[words.len() - 1],
            previous = words[words.len() - 2],
        );
        run("bash", "bash", &["-c", &script])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let strategies = complete(&["tcplb", "--strategy", ""]);
    assert_eq!(
        strategies,
        ["round-robin", "least-conn", "p2c", "hash", "maglev"],
        "{strategies:?}"
    );
    let flags = complete(&["tcplb", "--tcp-"]);
    assert_eq!(
        flags,
        ["--tcp-keepalive", "--tcp-user-timeout"],
        "{flags:?}"
    );
    let ctl = complete(&["tcplb", "ctl", "clo"]);
    assert_eq!(ctl, ["close", "close-connections"], "{ctl:?}");
    let check = complete(&["tcplb", "check", "--conf"]);
    assert_eq!(check, ["--config"], "{check:?}");
    let shells = complete(&["tcplb", "completions", ""]);
    let shells: Vec<&String> = shells.iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(shells, ["bash", "zsh", "fish"], "{shells:?}");
}

#[test]
fn fish_completes_flags_values_and_ctl_commands() {
    let complete = |line: &str| -> Vec<String> {
        let script =
            format!("source contrib/completions/tcplb.fish; complete --do-complete '{line}'");
        run("fish", "fish", &["--no-config", "-c", &script])
            .lines()
            // "value<TAB>description"
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    let strategies = complete("tcplb --strategy ");
    for name in ["round-robin", "least-conn", "p2c", "hash", "maglev"] {
        assert!(
            strategies.iter().any(|s| s == name),
            "{name}: {strategies:?}"
        );
    }
    let ctl = complete("tcplb ctl clo");
    assert_eq!(ctl, ["close", "close-connections"], "{ctl:?}");
    let drain = complete("tcplb ctl drain --dead");
    assert_eq!(drain, ["--deadline"], "{drain:?}");
    let shells = complete("tcplb completions ");
    assert_eq!(shells, ["bash", "fish", "zsh"], "{shells:?}");
    let after = complete("tcplb --listen 127.0.0.1:8080 --str");
    assert_eq!(after, ["--strategy"], "{after:?}");
}

#[test]
fn the_zsh_completion_is_valid_zsh_for_every_command() {
    run("zsh", "zsh", &["-n", "contrib/completions/_tcplb"]);
    let script = std::fs::read_to_string(Path::new(ROOT).join("contrib/completions/_tcplb"))
        .expect("read the zsh completion");
    assert!(script.starts_with("#compdef tcplb"), "{}", &script[..40]);
    for word in ["--strategy", "maglev", "close-connections", "--deadline"] {
        assert!(
            script.contains(word),
            "{word} missing from the zsh completion"
        );
    }
}

#[test]
fn the_package_installs_the_man_page_the_completions_and_the_docs() {
    let manifest: toml::Table = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let assets: Vec<(String, String)> = assets
        .iter()
        .map(|a| {
            let a = a
                .as_array()
                .expect("an asset is [source, destination, mode]");
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (source, destination) in [
        ("contrib/tcplb.1", "usr/share/man/man1/"),
        (
            "contrib/completions/tcplb.bash",
            "usr/share/bash-completion/completions/tcplb",
        ),
        (
            "contrib/completions/_tcplb",
            "usr/share/zsh/vendor-completions/",
        ),
        (
            "contrib/completions/tcplb.fish",
            "usr/share/fish/vendor_completions.d/",
        ),
        ("docs/*.md", "usr/share/doc/tcplb/docs/"),
        ("examples/configs/*.toml", "usr/share/doc/tcplb/examples/"),
    ] {
        assert!(
            assets.iter().any(|(s, d)| s == source && d == destination),
            "Cargo.toml's [package.metadata.deb] assets lack [\"{source}\", \"{destination}\", \"644\"]"
        );
    }
    // Every source is there to be packed (a glob matches at least one file).
    for (source, _) in &assets {
        if source.starts_with("target/") {
            continue;
        }
        let found = match source.split_once("/*") {
            Some((dir, suffix)) => std::fs::read_dir(Path::new(ROOT).join(dir))
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
                })
                .unwrap_or(false),
            None => Path::new(ROOT).join(source).is_file(),
        };
        assert!(found, "the package's asset {source} does not exist");
    }
}
