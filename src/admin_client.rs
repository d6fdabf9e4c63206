//! The operator commands (`callgate dead-letters|quarantine|routes …`): thin clients of the
//! admin API, so that a running gateway stays the only writer of its store.

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
        let mut request = self.http.request(method, format!("{}{path}", self.base)).query(query);
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
            Err(format!("{status}: {message}"))
        }
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
