//! The Runner Management page: three static files compiled into the binary
//! and served at `/`, `/app.js` and `/app.css`. The page is a client of the
//! public admin API like any other (it holds the admin token the user
//! types, in `sessionStorage`), so this module has no state and no routes
//! of its own beyond the files.
//!
//! **Invariant:** the page never needs a private route; what it shows, a
//! script with the admin token can get from `/api/v1`.

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// Scripts and styles only from this origin (no inline script, no inline
/// style, no `eval`), API calls only to it, no frames, no form posts
/// elsewhere. Downloads are `blob:` links, which navigation allows.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Adds the page's three routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| async { file("text/html; charset=utf-8", INDEX_HTML) }),
    )
    .route(
        "/app.js",
        web::get().to(|| async { file("text/javascript; charset=utf-8", APP_JS) }),
    )
    .route(
        "/app.css",
        web::get().to(|| async { file("text/css; charset=utf-8", APP_CSS) }),
    );
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // A new binary serves new files; a stale app.js against a newer
        // API is worse than one more request.
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        // CSP would block them anyway; this keeps the files honest.
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("style="), "inline style");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML") && !APP_JS.contains("eval("));
        assert!(
            !APP_JS.contains("localStorage"),
            "the token stays in sessionStorage"
        );
        assert!(!APP_CSS.contains("url(http"));
    }
}
