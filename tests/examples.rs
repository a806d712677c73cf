//! Examples that run: every configuration in `examples/configs/` passes
//! `tcplb check`, the README uses every one of them (and names no other),
//! and every `tcplb` command line in the README's shell blocks passes
//! `tcplb check` with the same arguments, so a documented example never
//! goes stale; and every relative link of the README and docs/ leads to a
//! file and a heading that exist. The TLS quick start's `tcplb.pem` and
//! `tcplb.key` (which the README makes with openssl) are made by the test,
//! with a test CA, in the directory the checks run in.

mod common;

use std::path::Path;

use common::{tcplb_output, tcplb_output_in};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("examples/configs"))
        .expect("examples/configs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    names
}

/// A directory to run the checks in, as a user who followed the README
/// would: the TLS quick start's `tcplb.pem` and `tcplb.key`, and
/// `examples/` (a link to the repository's) for the paths the README's
/// command lines name. The CA owns the directory.
fn quick_start_dir(name: &str) -> common::pki::Ca {
    let mut ca = common::pki::Ca::new(name);
    ca.server("tcplb", &["localhost"], common::pki::Key::Ecdsa);
    std::os::unix::fs::symlink(Path::new(ROOT).join("examples"), ca.dir.path("examples"))
        .expect("link examples/");
    ca
}

/// `tcplb check ARGS` run in `dir` (relative paths in a file land there).
fn check_in(dir: &Path, args: &[String]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("check")
        .chain(args.iter().map(String::as_str))
        .collect();
    tcplb_output_in(dir, &args)
}

#[test]
fn every_example_configuration_passes_tcplb_check() {
    let names = examples();
    assert!(names.len() >= 5, "{names:?}");
    // Relative paths in an example (a state file, an admin socket, TLS
    // files) are checked in a directory of the test's own.
    let dir = quick_start_dir("examples").dir;
    let mut failed = Vec::new();
    for name in &names {
        let path = Path::new(ROOT).join("examples/configs").join(name);
        let args = ["--config".to_string(), path.display().to_string()];
        let (code, out, err) = check_in(&dir.0, &args);
        if code != 0 || !out.contains("is valid") {
            failed.push(format!(
                "examples/configs/{name} (exit {code}):\n{out}{err}"
            ));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    let (code, _, _) = tcplb_output(&["check", "--config", "/nonexistent/tcplb.toml"]);
    assert_eq!(
        code, 1,
        "a missing file is a problem, so this test can fail"
    );
}

#[test]
fn the_readme_uses_every_example_and_names_no_other() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let names = examples();
    for name in &names {
        assert!(
            readme.contains(&format!("examples/configs/{name}")),
            "README.md never uses examples/configs/{name}: show it in a quick start, or remove it"
        );
    }
    for mention in readme.split("examples/configs/").skip(1) {
        let name: String = mention
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        if name.is_empty() {
            continue; // The folder itself.
        }
        assert!(
            names.contains(&name),
            "README.md names examples/configs/{name}, which does not exist"
        );
    }
}

/// A shell line's words: quotes grouped, a trailing `# comment` dropped.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `tcplb ...` command lines of the README's `sh` blocks (a trailing
/// `\` continues a line), without the program name; `tcplb ctl`, `man`,
/// `completions` and `check` lines are other commands.
fn readme_command_lines(readme: &str) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let command = std::mem::take(&mut pending);
        let words = words(&command);
        let Some(program) = words.first() else {
            continue;
        };
        let is_tcplb = program == "tcplb" || program.ends_with("/tcplb");
        let other = ["ctl", "man", "completions", "check"];
        if is_tcplb && !words.get(1).is_some_and(|w| other.contains(&w.as_str())) {
            lines.push(words[1..].to_vec());
        }
    }
    lines
}

#[test]
fn every_tcplb_command_line_in_the_readme_passes_tcplb_check() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let lines = readme_command_lines(&readme);
    assert!(lines.len() >= 3, "{lines:?}");
    let mut failed = Vec::new();
    let dir = quick_start_dir("readme-lines");
    for args in &lines {
        let (code, out, err) = check_in(&dir.dir.0, args);
        if code != 0 {
            failed.push(format!(
                "tcplb {} (exit {code}):\n{out}{err}",
                args.join(" ")
            ));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn shell_words_are_split_as_a_shell_would() {
    assert_eq!(
        words("tcplb --health-send 'PING\\r\\n' --x \"a b\"   # comment"),
        ["tcplb", "--health-send", "PING\\r\\n", "--x", "a b"]
    );
    let readme = "```sh\ntcplb --listen 1 \\\n  --backend 2\ntcplb ctl pools\n```\n\
                  ```\ntcplb --not-shell\n```\n";
    assert_eq!(
        readme_command_lines(readme),
        [["--listen", "1", "--backend", "2"]]
    );
}

/// The anchors GitHub gives a markdown file's headings.
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        let slug: String = title
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        found.push(slug);
    }
    found
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.path());
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for part in text.split("](").skip(1) {
            let Some(link) = part.split(')').next().filter(|l| !l.contains(' ')) else {
                continue;
            };
            if link.starts_with("http") || link.is_empty() {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let name = file
                .strip_prefix(ROOT)
                .unwrap_or(file)
                .display()
                .to_string();
            if !target.exists() {
                broken.push(format!("{name}: ({link}): no such file"));
            } else if !anchor.is_empty()
                && target.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&target).unwrap())
                    .contains(&anchor.to_string())
            {
                broken.push(format!("{name}: ({link}): no such heading"));
            }
        }
    }
    assert!(files.len() > 5, "{files:?}");
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}
