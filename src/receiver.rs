//! `callgate receive`: a tiny downstream that prints every request it gets, for trying routes
//! locally (the README walkthrough uses it). Not part of the gateway's data path.

use std::io::Write;

use axum::{Router, body::Bytes, http::HeaderMap, http::Method, http::Uri, routing::any};
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new().fallback(any(print));
    axum::serve(listener, app).await
}

async fn print(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> &'static str {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "--> {method} {uri}");
    for (name, value) in &headers {
        let name = name.as_str();
        if name.starts_with("x-") || name.starts_with("webhook-") || ["content-type", "user-agent"].contains(&name) {
            let _ = writeln!(out, "    {name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => {
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        }
        Err(_) => {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(&body));
        }
    }
    let _ = out.flush();
    "ok\n"
}
