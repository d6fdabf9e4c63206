//! The HTTP/1 accept loop, with the limits axum's `serve` does not expose: a deadline for
//! request headers (slow senders), a cap on header bytes, a cap on open connections, and a way
//! for a handler to close its connection ([`ConnectionClose`]); and the one JSON error body
//! every endpoint answers with.

use std::{any::Any, future::Future, pin::pin, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::Request,
    http::{StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper::{server::conn::http1, service::Service as _};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use serde::Serialize;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

/// In every request's extensions: closes the connection the request came on, whatever it is
/// doing (the live tail cuts off a reader that stopped reading: its answer can never finish).
#[derive(Debug, Clone)]
pub struct ConnectionClose(CancellationToken);

impl ConnectionClose {
    pub fn close(&self) {
        self.0.cancel();
    }
}

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger is answered 431.
    pub max_header_bytes: usize,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// open connections to finish their current request (the caller bounds that wait).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(limit = limits.max_connections, "Too many open connections; closing a new one.");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(limits.max_header_bytes);
                let close = CancellationToken::new();
                let handle = ConnectionClose(close.clone());
                let service = TowerToHyperService::new(router.clone());
                let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(handle.clone());
                    service.call(request)
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    // Dropping the connection closes its socket.
                    tokio::select! {
                        _ = connection => {}
                        () = close.cancelled() => {}
                    }
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The JSON error body every endpoint uses (`gateway.md` §3):
/// `{"error": {"code", "message", "details": [...]}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable (`bad_request`, `not_found`, `unauthorized`, `store_unavailable`, …).
    pub code: String,
    /// For people; a caller's value appears in it only cut short.
    pub message: String,
    /// Each problem (`{path, message}` for a payload), or what a bulk operation did before it
    /// stopped (`{done}`); often empty.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
}

/// The [`ErrorBody`] answer.
pub fn error_response<D: Serialize>(status: StatusCode, code: &str, message: &str, details: &[D]) -> Response {
    // A detail that does not serialise (it never happens with the types used) becomes null.
    let details = details.iter().map(|d| serde_json::to_value(d).unwrap_or_default()).collect();
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.to_owned(), details } };
    (status, Json(body)).into_response()
}

/// The error code of a status that a handler did not answer itself (axum's rejections,
/// 405, a panic), for [`json_errors`].
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "request_error",
    }
}

/// Longest text of a non-JSON error answer carried into the JSON message (axum's rejection
/// texts are short; this only bounds a surprise).
const MAX_PLAIN_MESSAGE: usize = 200;

/// Middleware: an error answer that is not JSON yet (an extractor's plain-text rejection,
/// axum's empty 405) gets the JSON error body, so every endpoint speaks one error shape.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4 * MAX_PLAIN_MESSAGE).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_ascii_lowercase()
    } else {
        cut(text, MAX_PLAIN_MESSAGE)
    };
    let mut answer = error_response::<()>(status, status_code_name(status), &message, &[]);
    // Keep what the original answer said beyond its body (`Allow` on a 405, for instance).
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// At most `max` bytes of `text`, cut on a character boundary, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The answer to a handler that panicked (`tower_http::catch_panic`): a JSON 500 instead of
/// a reset connection. The panic message is logged, never sent.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %cut(what, 500), "A request handler panicked.");
    error_response::<()>(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error", &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é…");
        assert_eq!(cut(&"x".repeat(1000), 4), "xxxx…");
    }
}
