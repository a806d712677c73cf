//! The live status page: `GET /` on the admin endpoint, one HTML page with
//! its script and style sheet, all built into the binary (`include_str!`
//! of the files in `src/admin/page/`), with nothing fetched from anywhere
//! else: no CDN, no fonts, no images.
//!
//! It exists so an operator sees the fleet at a glance without Prometheus
//! or Grafana: listeners, pools and backends with their admin state (and
//! their agent's), health with since when and why, the last check's result
//! and reason, weight, connections, rates, errors and connect-time p50/p99,
//! and charts of up to the last 15 minutes, their time axis fitted to the
//! data there is (a fresh process's first minute fills the chart). The page's script draws everything
//! from `/status` and `/status/history` (inline SVG), refreshing every
//! 2 s. Names from the configuration or DNS reach the page only through
//! `textContent`, never as markup, so they cannot inject any.
//!
//! With write access configured (`--admin-token-file`, or any request over
//! `--admin-socket`), `/status` says `"write_access":true` and the page
//! shows drain / maintenance / ready buttons per backend; they call the
//! control API with the token the user types into the page, which keeps it
//! in memory only (gone on reload).
//!
//! The script and style are files of their own rather than inline so that
//! the Content-Security-Policy ([`CSP`]) can forbid inline script and style
//! altogether: everything comes from the endpoint itself.

/// The page.
pub const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script.
pub const STATUS_JS: &str = include_str!("page/status.js");
/// Its style sheet.
pub const STATUS_CSS: &str = include_str!("page/status.css");

/// Sent with the page and its assets: scripts, styles and requests only
/// from the endpoint itself, nothing inline, no frames, no forms posting
/// elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The asset at `path` and its content type, if it is one of the page's.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/status.js" => Some(("text/javascript; charset=utf-8", STATUS_JS)),
        "/status.css" => Some(("text/css; charset=utf-8", STATUS_CSS)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_nothing_inline() {
        for text in [INDEX_HTML, STATUS_JS, STATUS_CSS] {
            // The SVG namespace is a name, not an address anything loads.
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for outside in ["http:", "https:", "//cdn", "@import", "url(", "data:"] {
                assert!(!text.contains(outside), "{outside} in an asset");
            }
        }
        // Only the endpoint's own script and style sheet, nothing inline.
        assert!(INDEX_HTML.contains(r#"<script src="status.js"></script>"#));
        assert!(INDEX_HTML.contains(r#"<link rel="stylesheet" href="status.css">"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains("<style") && !INDEX_HTML.contains(" style="));
        // No inline event handlers (` onclick=` and the like).
        for (at, _) in INDEX_HTML.match_indices(" on") {
            let rest = &INDEX_HTML[at + 3..];
            let word = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            assert!(!rest[word..].starts_with('='), "an inline handler at {at}");
        }
        assert!(CSP.contains("script-src 'self';") && !CSP.contains("unsafe"));
    }

    #[test]
    fn names_reach_the_page_as_text_only() {
        // The script never writes markup from data.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!STATUS_JS.contains(sink), "{sink} in status.js");
        }
        assert!(STATUS_JS.contains("textContent"));
    }

    #[test]
    fn assets_are_found_by_path() {
        assert_eq!(asset("/").unwrap().0, "text/html; charset=utf-8");
        assert_eq!(asset("/status.js").unwrap().1, STATUS_JS);
        assert!(asset("/status.css").is_some());
        assert!(asset("/nope.js").is_none());
    }
}
