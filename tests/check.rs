//! `tcplb check`: the real binary validates a file without starting, lists
//! every problem with its line, and prints a summary of a valid one.

mod common;
use common::{TempFile, tcplb_output};

/// `tcplb check ARGS`: its exit code, stdout and stderr.
fn check(args: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("check")
        .chain(args.iter().copied())
        .collect();
    tcplb_output(&args)
}

#[test]
fn the_example_file_is_valid_and_summarised() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tcplb.example.toml");
    let (code, out, err) = check(&["--config", example]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains("listeners (3):"), "{out}");
    assert!(out.contains("routes (2):"), "{out}");
    assert!(out.contains("-> pool api"), "{out}");
    assert!(out.contains("pools (5):"), "{out}");
    assert!(out.contains("web: least-conn"), "{out}");
    assert!(out.lines().count() <= 24, "one screen:\n{out}");
}

#[test]
fn every_problem_is_listed_with_its_file_and_line() {
    let file = TempFile::new(
        "bad.toml",
        "drain_timeout = \"soon\"\n\
         [[listener]]\n\
         listen = \"127.0.0.1:0\"\n\
         backends = [\"127.0.0.1:2\"]\n\
         retries = -2\n\
         strategy = \"fastest\"\n\
         [[listener]]\n\
         name = \"bad/name\"\n\
         listen = \"127.0.0.1:0\"\n\
         backends = [\"no-such-host.invalid:80\"]\n",
    );
    let (code, out, err) = check(&["--config", file.arg()]);
    assert_eq!(code, 1, "{out}\n{err}");
    for place in [":1:17:", ":5:11:", ":6:12:", ":8:8:", ":10:13:"] {
        assert!(
            err.contains(&format!("{}{place}", file.arg())),
            "{place} missing:\n{err}"
        );
    }
    assert!(err.contains("NOT valid"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn what_the_file_points_at_is_checked_with_its_line() {
    let dir = std::env::temp_dir().join(format!("tcplb-check-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = TempFile::new(
        "paths.toml",
        &format!(
            "admin_token_file = \"{0}/missing-token\"\n\
             state_file = \"{0}/no-dir/state.json\"\n\
             admin_socket = \"{0}/no-dir/admin.sock\"\n\
             [[listener]]\n\
             listen = \"192.0.2.1:0\"\n\
             backends = [\"127.0.0.1:2\"]\n",
            dir.display()
        ),
    );
    let (code, _, err) = check(&["--config", file.arg()]);
    assert_eq!(code, 1, "{err}");
    for place in [":1:20:", ":2:14:", ":3:16:", ":5:10:"] {
        assert!(
            err.contains(&format!("{}{place}", file.arg())),
            "{place} missing:\n{err}"
        );
    }
    assert!(err.contains("not an address of this machine"), "{err}");
    assert!(err.contains("4 problem(s)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn paths_are_checked_even_when_the_file_has_problems() {
    let dir = std::env::temp_dir().join(format!("tcplb-check-both-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = TempFile::new(
        "both.toml",
        &format!(
            "admin_token_file = \"{0}/missing-token\"\n\
             access_log = \"{0}/no-dir/access.log\"\n\
             state_file = \"{0}/no-dir/state.json\"\n\
             [[listener]]\n\
             listen = \"127.0.0.1:0\"\n\
             [[listener]]\n\
             listen = \"192.0.2.1:0\"\n\
             backends = [\"127.0.0.1:3\"]\n\
             strategy = \"fastest\"\n",
            dir.display()
        ),
    );
    let (code, out, err) = check(&["--config", file.arg()]);
    assert_eq!(code, 1, "{out}\n{err}");
    let path = file.arg();
    for expected in [
        format!("error: {path}:9:12: key `listener.strategy`: unknown strategy \"fastest\""),
        format!("error: {path}:1:20: key `admin_token_file`: cannot read the admin token file"),
        format!(
            "error: {path}:2:14: key `access_log`: cannot create files in {}/no-dir",
            dir.display()
        ),
        format!(
            "error: {path}:3:14: key `state_file`: cannot create files in {}/no-dir",
            dir.display()
        ),
        // The first listener cannot be built; the second can (its bad
        // strategy left at the default), so it is bound, and named by its
        // own line.
        format!("error: {path}:4:1: key `listener.backends`: listener 127.0.0.1:0 has no backends"),
        format!("error: {path}:7:10: key `listener.listen`: cannot listen on 192.0.2.1:0"),
    ] {
        assert!(err.contains(&expected), "{expected:?} missing:\n{err}");
    }
    assert!(
        err.contains("6 problem(s); the configuration is NOT valid"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_problem_of_every_tls_route_is_listed() {
    let file = TempFile::new(
        "routes.toml",
        "[[listener]]\n\
         listen = \"127.0.0.1:0\"\n\
         backends = [\"127.0.0.1:2\"]\n\
         [[listener.route]]\n\
         name = \"a\"\n\
         server_names = [\"a.example\"]\n\
         backends = []\n\
         tcp_keepalive = { idle = \"0s\" }\n\
         [[listener.route]]\n\
         allow = [\"10.0.0.0/8\"]\n\
         server_names = [\"bad name\"]\n\
         alpn = [\"\"]\n\
         backends = [\"127.0.0.1:3\"]\n",
    );
    let (code, out, err) = check(&["--config", file.arg()]);
    assert_eq!(code, 1, "{out}\n{err}");
    let path = file.arg();
    for expected in [
        // The first route's pool: no backends, and a bad keepalive.
        format!(
            "error: {path}:7:12: key `listener.backends`: listener 127.0.0.1:0 has no backends"
        ),
        format!("error: {path}:8:17: key `listener.tcp_keepalive`: bad keepalive \"0s\""),
        // The second route: four problems of its own.
        format!("error: {path}:9:1: key `listener.route`: `allow` is a listener-wide setting"),
        format!("error: {path}:9:1: key `listener.route.name`: this route has no `name`"),
        format!(
            "error: {path}:11:17: key `listener.route.server_names`: bad server name \"bad name\""
        ),
        format!("error: {path}:12:8: key `listener.route.alpn`: bad ALPN protocol \"\""),
    ] {
        assert!(err.contains(&expected), "{expected:?} missing:\n{err}");
    }
    assert!(
        err.contains("6 problem(s); the configuration is NOT valid"),
        "{err}"
    );
}

#[test]
fn a_missing_file_and_bad_flags_fail() {
    let (code, _, err) = check(&["--config", "/nonexistent/tcplb.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read the configuration file"), "{err}");
    let (code, _, err) = check(&["--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
}
