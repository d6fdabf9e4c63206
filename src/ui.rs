//! The dashboard: `GET /ui` on the admin listener. A static page (`ui/`: HTML, CSS and plain
//! ES modules, no build step) embedded in the binary, which calls the admin API from the
//! browser with the bearer token the operator enters once (kept in the tab's
//! `sessionStorage`, never in a URL).
//!
//! **Invariant:** the assets hold no data and need no token; every API call the page makes
//! carries the bearer token, and the live tail opens with a single-use ticket.
//! **Invariant:** every answer carries a strict Content-Security-Policy (`default-src 'self'`,
//! no inline script or style, no framing), so hostile vendor data that reaches the page can
//! only ever be text: the page builds its DOM with `textContent`, never `innerHTML`.
//! The dashboard is not part of the admin API's OpenAPI document (it is merged beside it in
//! `server.rs`).

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use crate::http::error_response;

/// What every dashboard answer says about itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page and its parts, embedded at build time.
const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", bytes: include_bytes!("../ui/index.html") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("../ui/style.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", bytes: include_bytes!("../ui/icon.svg") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../ui/app.js") },
    Asset { name: "api.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../ui/api.js") },
    Asset { name: "dom.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../ui/dom.js") },
    Asset { name: "views.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../ui/views.js") },
    Asset { name: "tail.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../ui/tail.js") },
];

/// Each asset's strong ETag: the first 16 bytes of its SHA-256, computed once.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.bytes)[..16]))).collect());

/// `/ui`, `/ui/` and `/ui/{file}`; no token needed (the files hold no data).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/ui", get(index)).route("/ui/", get(index)).route("/ui/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(at) = ASSETS.iter().position(|a| a.name == name) else {
        let mut answer = error_response::<()>(StatusCode::NOT_FOUND, "not_found", "no such dashboard file", &[]);
        secure(answer.headers_mut());
        return answer;
    };
    let (asset, etag) = (&ASSETS[at], &ETAGS[at]);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut answer = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let headers = answer.headers_mut();
    secure(headers);
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    // Always revalidated (a new binary serves new files), answered 304 while unchanged.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js") || a.name.ends_with(".html")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            // `/ui/x` in the page, `from './x.js'` between the modules.
            let named = text
                .match_indices("/ui/")
                .map(|(at, _)| at + 4)
                .chain(text.match_indices("from './").map(|(at, _)| at + 8));
            for start in named {
                let rest = &text[start..];
                let end = rest.find(['"', '\'']).unwrap_or(rest.len());
                let file = &rest[..end];
                if !file.is_empty() {
                    assert!(names.contains(&file), "{} names {file}, which is not embedded", asset.name);
                }
            }
            assert!(!text.contains("innerHTML"), "{} uses innerHTML", asset.name);
        }
    }
}
