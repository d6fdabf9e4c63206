//! The operator commands (`callgate dead-letters|quarantine|routes|drift|tail …`): thin clients
//! of the admin API, so that a running gateway stays the only writer of its store.

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::Value;

use crate::config::Config;

/// Where and how to reach the admin API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// From `--url`/`--token`, else from the configuration (`[admin] listen` or
    /// `server.listen`, and `[admin] token`).
    pub fn new(url: Option<String>, token: Option<String>, config: Option<&Config>) -> Result<Client, String> {
        let base = match (url, config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(config)) => {
                let mut addr = config.admin.listen.unwrap_or(config.server.listen);
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
            (None, None) => return Err("give --url or a configuration".into()),
        };
        let token = token.or_else(|| config.and_then(|c| c.admin.token.as_ref()).map(|t| t.expose().to_owned()));
        let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
        Ok(Client { base, token, http })
    }

    pub async fn call(&self, method: Method, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
        self.send(method, path, query, None).await
    }

    /// [`Client::call`] with a JSON body.
    pub async fn call_with(&self, method: Method, path: &str, body: &Value) -> Result<Value, String> {
        self.send(method, path, &[], Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {}", self.base, e.without_url()))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"].as_str().unwrap_or("no detail");
            let mut text = format!("{status}: {message}");
            // Keyed details (a rejected configuration's errors), one per line.
            for detail in body["error"]["details"].as_array().into_iter().flatten() {
                if let (Some(key), Some(problem)) = (detail["key"].as_str(), detail["message"].as_str()) {
                    let _ = write!(text, "\n  - {key}: {problem}");
                }
            }
            Err(text)
        }
    }
}

/// Longest SSE line `callgate tail` accepts (the gateway's are far shorter).
const MAX_SSE_LINE: usize = 1 << 20;

/// How a `callgate tail` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEnd {
    /// The gateway dropped this reader (`event: dropped`), with its message.
    Dropped(String),
    /// The gateway closed the stream (`event: closed`, at shutdown), with its message.
    Closed(String),
    /// The connection ended without a word from the gateway.
    Cut,
}

impl Client {
    /// Follows the live tail (`GET /v1/admin/stream` with `query`), printing one line per
    /// message on `out` (text, or `{"event": …, "data": …}` with `json`), until the gateway
    /// ends the stream. The `ready` message is told on standard error.
    pub async fn tail(
        &self,
        query: &[(&str, String)],
        json: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<TailEnd, String> {
        let url = format!("{}/v1/admin/stream", self.base);
        let mut request = self.http.get(&url).query(query).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {}", self.base, e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("no detail");
            return Err(format!("{status}: {message}"));
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data = String::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(TailEnd::Cut),
                Err(e) => return Err(format!("the stream from {} failed: {}", self.base, e.without_url())),
            };
            pending.extend_from_slice(&chunk);
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    let name = std::mem::take(&mut event);
                    let text = std::mem::take(&mut data);
                    if let Some(end) = self.show(&name, &text, json, out)? {
                        return Ok(end);
                    }
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                // Anything else is a comment (the keep-alive) or a field callgate does not send.
            }
            if pending.len() > MAX_SSE_LINE {
                return Err("the stream sent a line over 1 MiB; is this a callgate gateway?".into());
            }
        }
    }

    /// Prints one SSE message; the end of the stream when it says so.
    fn show(
        &self,
        event: &str,
        data: &str,
        json: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<TailEnd>, String> {
        let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let message = || value["message"].as_str().unwrap_or("no detail").to_owned();
        let line = match event {
            "ready" => {
                eprintln!("callgate: following the live tail of {} (Ctrl-C to stop)", self.base);
                return Ok(None);
            }
            "dropped" => return Ok(Some(TailEnd::Dropped(message()))),
            "closed" => return Ok(Some(TailEnd::Closed(message()))),
            "accepted" | "outcome" if json => {
                format!(r#"{{"event":{},"data":{}}}"#, Value::from(event), if value.is_null() { "null" } else { data })
            }
            "accepted" | "outcome" => tail_line(event, &value),
            _ => return Ok(None),
        };
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("cannot write the tail: {e}"))?;
        Ok(None)
    }
}

/// One message of the tail as a line of text.
fn tail_line(event: &str, v: &Value) -> String {
    let text = |key: &str| cell(&v[key]);
    let now = chrono::Utc::now().format("%H:%M:%S%.3f");
    if event == "accepted" {
        let routes: Vec<String> = v["routes"].as_array().map(|r| r.iter().map(cell).collect()).unwrap_or_default();
        let routes = if routes.is_empty() { "(no route)".to_owned() } else { routes.join(",") };
        format!(
            "{now} accepted {} {} subject {} source {} -> {routes}",
            text("type"),
            text("id"),
            text("subject"),
            text("source")
        )
    } else {
        let error = v["error"].as_str().map(|e| format!(" error: {e}")).unwrap_or_default();
        format!(
            "{now} outcome  {} {} {} {}ms {} {} subject {} attempt {}{error}",
            text("route"),
            text("outcome"),
            text("status"),
            text("duration_ms"),
            text("type"),
            text("event_id"),
            text("subject"),
            text("attempt")
        )
    }
}

/// `text` as one percent-encoded URL path segment (a subject may hold `/`, `?`, `#`…).
pub fn path_segment(text: &str) -> String {
    let mut url = url::Url::parse("http://localhost/").expect("a constant URL");
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push(text);
    }
    url.path().trim_start_matches('/').to_owned()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain-text table of `rows` under `columns` (JSON keys), for list commands.
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, key)| {
                    let value = key.split('.').try_fold(row, |v, k| v.get(k)).unwrap_or(&Value::Null);
                    let mut text = cell(value);
                    if text.chars().count() > 60 {
                        text = text.chars().take(57).collect::<String>() + "...";
                    }
                    text
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (title, _))| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(title.len()))
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, values: Vec<&str>| {
        let parts: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, columns.iter().map(|(t, _)| *t).collect());
    for row in &cells {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// Two consecutive answers of a paged quarantine replay as one: results appended, counts
/// added, `more`/`next_after_id` from the later one.
pub fn merge_replays(mut first: Value, next: Value) -> Value {
    if let (Some(all), Some(more)) = (first["results"].as_array_mut(), next["results"].as_array()) {
        all.extend(more.iter().cloned());
    }
    for key in ["accepted", "duplicate", "rejected"] {
        let sum = first[key].as_u64().unwrap_or(0) + next[key].as_u64().unwrap_or(0);
        first[key] = sum.into();
    }
    first["more"] = next["more"].clone();
    first["next_after_id"] = next["next_after_id"].clone();
    first
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subject_is_one_path_segment() {
        assert_eq!(super::path_segment("vox:6b0f-1c2b"), "vox:6b0f-1c2b");
        assert_eq!(super::path_segment("salpre:a/b?c#d e%"), "salpre:a%2Fb%3Fc%23d%20e%25");
    }
}
