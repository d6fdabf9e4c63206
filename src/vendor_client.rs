//! `callgate vendors register|list|update|unregister SOURCE`: make a vendor send a source's
//! webhooks to callgate. Through the vendor's documented API where it has one (OneInbox
//! `/v1/webhooks`, Utel `/integration/webhook`); for the others (Salpre, vox) the exact URL,
//! headers and console steps are printed.
//!
//! **Invariant:** a vendor API key is read from the environment only (never a flag, so never
//! in a shell history or a process list), and is never printed.
//! **Invariant:** Utel's `PUT /integration/webhook` replaces every webhook of the account, so
//! callgate sends back every webhook it read, untouched, with only its own added or changed,
//! and reads the list again to prove none was dropped.

use std::fmt::Write as _;

use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::{
    admin_client,
    canonical::Vendor,
    config::{Auth, Config, SourceConfig},
};

/// OneInbox's API key and base URL (the base has a default: OneInbox's public API).
pub const ONEINBOX_API_KEY: &str = "ONEINBOX_API_KEY";
pub const ONEINBOX_API_URL: &str = "ONEINBOX_API_URL";
pub const ONEINBOX_DEFAULT_URL: &str = "https://api.oneinbox.ai";
/// Utel's API token (from `POST /auth/login`) and base URL (each account's own host: no default).
pub const UTEL_API_TOKEN: &str = "UTEL_API_TOKEN";
pub const UTEL_API_URL: &str = "UTEL_API_URL";

/// OneInbox's events, as its webhook guide's create example subscribes them.
pub const ONEINBOX_EVENTS: &[&str] = &[
    "call.started",
    "call.ended",
    "call.analyzed",
    "call.failed",
    "call.recording.available",
    "transcript.partial",
    "transcript.final",
];
/// Utel's per-webhook event flags (every one is required in a `PUT`).
pub const UTEL_EVENTS: &[&str] =
    &["call_started", "call_ended", "dial_started", "dial_answered", "dial_ended", "call_transferred", "call_saved"];
/// Salpre's events, ticked in its console.
pub const SALPRE_EVENTS: &[&str] =
    &["call_initiated", "call_ringing", "call_answered", "transcript", "call_ended", "error"];
/// vox's call-data events (all of them are sent once the URL is set).
pub const VOX_EVENTS: &[&str] = &["call_started", "mid_call", "call_ended", "call_analyzed", "sms_received"];
/// Retell's call events that callgate maps (its other, opt-in events are refused with 422).
pub const RETELL_EVENTS: &[&str] = &["call_started", "call_ended", "call_analyzed"];

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Add callgate's webhook, or bring an existing one up to date.
    Register { public_url: String, events: Option<Vec<String>> },
    /// Change callgate's existing webhook (an error when there is none).
    Update { public_url: String, events: Option<Vec<String>> },
    /// Remove callgate's webhook, and nothing else.
    Unregister,
    /// Show the vendor's webhooks, callgate's marked.
    List,
}

/// Where the environment is read: a seam so that tests need not change the process's.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Runs `request` for `source` and returns what to print.
pub async fn run(
    config: &Config,
    source: &str,
    request: Request,
    show_secrets: bool,
    env: Env<'_>,
) -> Result<String, String> {
    let Some(source_config) = config.sources.get(source) else {
        let names: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        return Err(format!("no source named `{source}` in {} (sources: {})", config.path.display(), names.join(", ")));
    };
    let target = |public_url: &str| Target::new(source, source_config, public_url, show_secrets);
    match source_config.vendor {
        Vendor::Oneinbox => {
            let api = Api::from_env(env, ONEINBOX_API_KEY, ONEINBOX_API_URL, Some(ONEINBOX_DEFAULT_URL))?;
            match request {
                Request::Register { public_url, events } => {
                    oneinbox_put(&api, source, &target(&public_url)?, events, source_config, false).await
                }
                Request::Update { public_url, events } => {
                    oneinbox_put(&api, source, &target(&public_url)?, events, source_config, true).await
                }
                Request::Unregister => oneinbox_unregister(&api, source, show_secrets).await,
                Request::List => oneinbox_list(&api, source, show_secrets).await,
            }
        }
        Vendor::Utel => {
            let api = Api::from_env(env, UTEL_API_TOKEN, UTEL_API_URL, None)?;
            match request {
                Request::Register { public_url, events } => {
                    utel_put(&api, Some((&target(&public_url)?, events)), source, source_config, false, show_secrets)
                        .await
                }
                Request::Update { public_url, events } => {
                    utel_put(&api, Some((&target(&public_url)?, events)), source, source_config, true, show_secrets)
                        .await
                }
                Request::Unregister => utel_put(&api, None, source, source_config, true, show_secrets).await,
                Request::List => utel_list(&api, source, show_secrets).await,
            }
        }
        Vendor::Salpre | Vendor::Vox | Vendor::Retell => match request {
            Request::Register { public_url, events } | Request::Update { public_url, events } => {
                console_steps(&target(&public_url)?, source_config, events)
            }
            Request::Unregister => Ok(format!(
                "{} has no webhook API: remove the webhook in its console ({}).\n",
                source_config.vendor,
                console_place(source_config.vendor)
            )),
            Request::List => Ok(format!(
                "{} has no webhook API: its webhooks are listed in its console ({}).\n",
                source_config.vendor,
                console_place(source_config.vendor)
            )),
        },
    }
}

/// The URLs a vendor must call for one source.
pub struct Target {
    /// `{public}/v1/ingest/{source}`, with the source's query secret when it has one.
    pub ingest: Url,
    /// The same, for `/v1/inbound/{source}`.
    pub inbound: Url,
    /// Whether printed URLs show the secret.
    show_secrets: bool,
}

impl Target {
    pub fn new(source: &str, config: &SourceConfig, public_url: &str, show_secrets: bool) -> Result<Target, String> {
        let base = Url::parse(public_url.trim_end_matches('/')).map_err(|e| {
            format!("--public-url is not a URL ({e}); give the gateway's public base, e.g. https://hooks.example.com")
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() || base.fragment().is_some() {
            return Err(
                "--public-url must be an http(s) URL without query or fragment, e.g. https://hooks.example.com".into(),
            );
        }
        let at = |endpoint: &str| {
            let mut url = base.clone();
            let path = format!("{}/v1/{endpoint}/{source}", base.path().trim_end_matches('/'));
            url.set_path(&path);
            if let Auth::Query { name, value } = &config.auth {
                url.query_pairs_mut().append_pair(name, value.expose());
            }
            url
        };
        Ok(Target { ingest: at("ingest"), inbound: at("inbound"), show_secrets })
    }

    fn show(&self, url: &Url) -> String {
        shown(url.as_str(), self.show_secrets)
    }
}

/// A URL for printing: its query values (which may be secrets) hidden unless asked.
fn shown(url: &str, show_secrets: bool) -> String {
    match Url::parse(url) {
        Ok(_) if show_secrets => url.to_owned(),
        Ok(mut parsed) => {
            if parsed.query().is_some() {
                let names: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
                let mut pairs = parsed.query_pairs_mut();
                pairs.clear();
                for name in names {
                    pairs.append_pair(&name, "REDACTED");
                }
            }
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// Whether a vendor's webhook URL is this source's (any host: the public URL may change).
fn is_ours(url: Option<&str>, source: &str) -> bool {
    url.and_then(|u| Url::parse(u).ok())
        .is_some_and(|u| u.path().trim_end_matches('/').ends_with(&format!("/v1/ingest/{source}")))
}

/// The events to subscribe: the given ones (each must be the vendor's), else all.
fn events(given: Option<Vec<String>>, known: &[&str], vendor: Vendor) -> Result<Vec<String>, String> {
    let Some(given) = given else { return Ok(known.iter().map(|e| (*e).to_owned()).collect()) };
    let given: Vec<String> =
        given.iter().flat_map(|e| e.split(',')).map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    if given.is_empty() {
        return Err("--events lists no event".into());
    }
    for event in &given {
        if !known.contains(&event.as_str()) {
            return Err(format!(
                "`{}` is not a {vendor} event (known: {})",
                crate::vendors::cut(event, 40),
                known.join(", ")
            ));
        }
    }
    Ok(given)
}

/// The vendor APIs can set a URL only: a source must authenticate by its query string (or not).
fn url_only(vendor: Vendor, auth: &Auth) -> Result<(), String> {
    match auth {
        Auth::None | Auth::Query { .. } => Ok(()),
        _ => Err(format!(
            "{vendor}'s webhook API sets only a URL, so it cannot send this source's `auth` (a header or signature); give the source `auth = {{ type = \"query\", … }}` or none"
        )),
    }
}

/// Largest vendor API answer read, in bytes: a webhook list is a few kilobytes, and a larger
/// answer fails instead of growing memory without bound.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// One vendor API: a base URL and a bearer key, both from the environment.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn from_env(env: Env<'_>, key_var: &str, url_var: &str, default_url: Option<&str>) -> Result<Api, String> {
        let key = env(key_var).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            format!("set {key_var} to the vendor's API key (it is read from the environment only, never from the command line)")
        })?;
        let base = match (env(url_var).filter(|u| !u.is_empty()), default_url) {
            (Some(url), _) => url,
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                return Err(format!("set {url_var} to the vendor's API base URL (your account's API host)"));
            }
        };
        if Url::parse(&base).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return Err(format!("{url_var} is not an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api { base: base.trim_end_matches('/').to_owned(), key, http })
    }

    /// One call; a non-2xx answer is an error naming the status and the vendor's message.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: cannot reach {}: {}", self.base, e.without_url()))?;
        let status = response.status();
        let mut response = response;
        let mut text = Vec::new();
        // A broken read keeps what was read: cut JSON reads as no answer, as an unreadable one did.
        while let Ok(Some(chunk)) = response.chunk().await {
            if text.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("{method} {path}: {status}: the answer is larger than {MAX_ANSWER_BYTES} bytes"));
            }
            text.extend_from_slice(&chunk);
        }
        let value: Value = if text.trim_ascii().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&text).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let message = ["message", "error"]
                .iter()
                .find_map(|k| value.get(k))
                .map(|m| match m {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("message").and_then(Value::as_str).unwrap_or("no detail").to_owned(),
                    _ => "no detail".to_owned(),
                })
                .unwrap_or_else(|| "no detail".into());
            return Err(format!("{method} {path}: {status}: {}", crate::vendors::cut(&message, 200)));
        }
        Ok(value)
    }
}

// --- OneInbox -----------------------------------------------------------------------------

/// `GET /v1/webhooks`: the list, whether bare or wrapped (`data`, `webhooks`, `items`).
async fn oneinbox_webhooks(api: &Api) -> Result<Vec<Value>, String> {
    let answer = api.call(Method::GET, "/v1/webhooks", None).await?;
    let list = match &answer {
        Value::Array(items) => Some(items),
        Value::Object(o) => {
            ["data", "webhooks", "items", "result"].iter().find_map(|k| o.get(*k)).and_then(Value::as_array)
        }
        _ => None,
    };
    list.cloned().ok_or_else(|| "GET /v1/webhooks: the answer holds no list of webhooks".into())
}

fn ours<'a>(webhooks: &'a [Value], source: &str) -> Vec<&'a Value> {
    webhooks.iter().filter(|w| is_ours(w["url"].as_str(), source)).collect()
}

fn one_of_ours<'a>(webhooks: &'a [Value], source: &str, show_secrets: bool) -> Result<Option<&'a Value>, String> {
    match ours(webhooks, source).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        several => {
            let urls: Vec<String> =
                several.iter().map(|w| shown(w["url"].as_str().unwrap_or(""), show_secrets)).collect();
            Err(format!(
                "{} webhooks already point at /v1/ingest/{source}: {}; remove the extra ones first",
                several.len(),
                urls.join(", ")
            ))
        }
    }
}

async fn oneinbox_put(
    api: &Api,
    source: &str,
    target: &Target,
    events: Option<Vec<String>>,
    config: &SourceConfig,
    must_exist: bool,
) -> Result<String, String> {
    url_only(Vendor::Oneinbox, &config.auth)?;
    let events = events_for_put(events, ONEINBOX_EVENTS, Vendor::Oneinbox)?;
    let webhooks = oneinbox_webhooks(api).await?;
    let existing = one_of_ours(&webhooks, source, target.show_secrets)?;
    let url = target.ingest.as_str();
    let (verb, answer) = match existing {
        Some(webhook) => {
            let id = webhook_id(webhook)?;
            let mut change = json!({"url": url});
            if let Some(events) = &events {
                change["events"] = json!(events);
            }
            ("updated", api.call(Method::PATCH, &format!("/v1/webhooks/{id}"), Some(&change)).await?)
        }
        None if must_exist => {
            return Err(format!(
                "OneInbox has no webhook for /v1/ingest/{source}: use `callgate vendors register {source}`"
            ));
        }
        None => {
            let events = events.unwrap_or_else(|| ONEINBOX_EVENTS.iter().map(|e| (*e).to_owned()).collect());
            let create = json!({"name": format!("callgate {source}"), "url": url, "events": events});
            ("created", api.call(Method::POST, "/v1/webhooks", Some(&create)).await?)
        }
    };
    let mut out = format!(
        "OneInbox webhook {} {verb}: {}\n  events: {}\n",
        answer["id"].as_str().unwrap_or("(no id in the answer)"),
        target.show(&target.ingest),
        answer["events"]
            .as_array()
            .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
    );
    if answer.get("secret").is_some() {
        // OneInbox documents no signing scheme for it, so callgate cannot verify with it yet.
        out.push_str(
            "  OneInbox returned a webhook secret (not shown; OneInbox documents no signature that uses it).\n",
        );
    }
    Ok(out)
}

/// `--events` for an update: `None` keeps the vendor's current list (register fills the default).
fn events_for_put(given: Option<Vec<String>>, known: &[&str], vendor: Vendor) -> Result<Option<Vec<String>>, String> {
    given.map(|g| events(Some(g), known, vendor)).transpose()
}

fn webhook_id(webhook: &Value) -> Result<String, String> {
    crate::canonical::convert::id_string(&webhook["id"])
        .ok_or_else(|| "OneInbox listed the webhook without an id".to_owned())
}

async fn oneinbox_unregister(api: &Api, source: &str, show_secrets: bool) -> Result<String, String> {
    let webhooks = oneinbox_webhooks(api).await?;
    let Some(webhook) = one_of_ours(&webhooks, source, show_secrets)? else {
        return Ok(format!("OneInbox has no webhook for /v1/ingest/{source}: nothing to remove.\n"));
    };
    let id = webhook_id(webhook)?;
    api.call(Method::DELETE, &format!("/v1/webhooks/{id}"), None).await?;
    Ok(format!("OneInbox webhook {id} removed: {}\n", shown(webhook["url"].as_str().unwrap_or(""), show_secrets)))
}

async fn oneinbox_list(api: &Api, source: &str, show_secrets: bool) -> Result<String, String> {
    let webhooks = oneinbox_webhooks(api).await?;
    let rows: Vec<Value> = webhooks
        .iter()
        .map(|w| {
            json!({
                "id": w["id"],
                "name": w["name"],
                "url": shown(w["url"].as_str().unwrap_or(""), show_secrets),
                "events": w["events"].as_array().map(|e| e.len()).unwrap_or(0),
                "status": w["status"],
                "ours": if is_ours(w["url"].as_str(), source) { "yes" } else { "" },
            })
        })
        .collect();
    Ok(admin_client::table(
        &rows,
        &[
            ("ID", "id"),
            ("NAME", "name"),
            ("URL", "url"),
            ("EVENTS", "events"),
            ("STATUS", "status"),
            ("CALLGATE", "ours"),
        ],
    ))
}

// --- Utel ---------------------------------------------------------------------------------

/// `GET /integration/webhook`: every webhook of the account, exactly as Utel sent them.
async fn utel_webhooks(api: &Api) -> Result<Vec<Value>, String> {
    let answer = api.call(Method::GET, "/integration/webhook", None).await?;
    if answer["status"].as_str().is_some_and(|s| s != "success") {
        return Err(format!(
            "GET /integration/webhook: Utel answered `{}`",
            crate::vendors::cut(answer["message"].as_str().unwrap_or("error"), 200)
        ));
    }
    answer["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| "GET /integration/webhook: the answer has no `result` list".into())
}

/// Register, update (`target` given) or unregister (`None`) callgate's Utel webhook: read the
/// whole list, change only callgate's entry, write the whole list back, and read it again.
async fn utel_put(
    api: &Api,
    target: Option<(&Target, Option<Vec<String>>)>,
    source: &str,
    config: &SourceConfig,
    must_exist: bool,
    show_secrets: bool,
) -> Result<String, String> {
    url_only(Vendor::Utel, &config.auth)?;
    let before = utel_webhooks(api).await?;
    one_of_ours(&before, source, show_secrets)?;
    let (theirs, existing): (Vec<Value>, Vec<Value>) =
        before.iter().cloned().partition(|w| !is_ours(w["url"].as_str(), source));
    let existing = existing.into_iter().next();
    let mut list = theirs.clone();
    let (verb, ours) = match (target, existing) {
        (None, None) => {
            return Ok(format!(
                "Utel has no webhook for /v1/ingest/{source}: nothing to remove (the other {} are untouched).\n",
                theirs.len()
            ));
        }
        (None, Some(_)) => ("removed", None),
        (Some(_), None) if must_exist => {
            return Err(format!(
                "Utel has no webhook for /v1/ingest/{source}: use `callgate vendors register {source}`"
            ));
        }
        (Some((target, given)), existing) => {
            // An existing entry keeps whatever else Utel stores with it; a new one starts empty.
            let mut entry = existing.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
            let chosen: Vec<String> = match (given, &existing) {
                // An update without --events keeps the current ones.
                (None, Some(old)) => {
                    UTEL_EVENTS.iter().copied().filter(|e| old[*e] == true).map(str::to_owned).collect()
                }
                (given, _) => events(given, UTEL_EVENTS, Vendor::Utel)?,
            };
            entry.insert("url".into(), json!(target.ingest.as_str()));
            for event in UTEL_EVENTS {
                entry.insert((*event).into(), json!(chosen.iter().any(|c| c == event)));
            }
            let entry = Value::Object(entry);
            list.push(entry.clone());
            (if existing.is_some() { "updated" } else { "added" }, Some(entry))
        }
    };
    let put = api.call(Method::PUT, "/integration/webhook", Some(&Value::Array(list.clone()))).await;
    // Read back, even after a failed PUT (it may have been applied, in part): the replace-all
    // must have kept every other webhook exactly.
    let after = utel_webhooks(api).await;
    let restore = |what: String| {
        let before_json = serde_json::to_string_pretty(&before).unwrap_or_default();
        format!("{what}; restore them with PUT /integration/webhook. The list before the change was:\n{before_json}")
    };
    let after = match (put, after) {
        (Ok(_), Ok(after)) => after,
        (Err(e), Ok(after)) if theirs.iter().all(|w| after.contains(w)) => {
            return Err(format!("{e} (the other {} webhook(s) of the account are still listed)", theirs.len()));
        }
        (Err(e), Ok(_)) => return Err(restore(format!("{e}, and Utel no longer lists every other webhook"))),
        (Err(e), Err(_)) => return Err(restore(format!("{e}; Utel may have replaced its webhooks anyway"))),
        (Ok(_), Err(e)) => {
            return Err(restore(format!(
                "the PUT was answered, but reading the list back failed ({e}); check the other webhooks"
            )));
        }
    };
    let missing: Vec<&Value> = theirs.iter().filter(|w| !after.contains(w)).collect();
    if !missing.is_empty() {
        return Err(restore(format!("after the update Utel no longer lists {} of the other webhooks", missing.len())));
    }
    if let Some(entry) = &ours
        && !after.iter().any(|w| is_ours(w["url"].as_str(), source) && w["url"] == entry["url"])
    {
        return Err("after the update Utel does not list callgate's webhook".into());
    }
    let mut out = String::new();
    match ours {
        Some(entry) => {
            let on: Vec<&str> = UTEL_EVENTS.iter().copied().filter(|e| entry[*e] == true).collect();
            let _ = writeln!(out, "Utel webhook {verb}: {}", shown(entry["url"].as_str().unwrap_or(""), show_secrets));
            let _ = writeln!(out, "  events: {}", on.join(", "));
        }
        None => {
            let _ = writeln!(out, "Utel webhook for /v1/ingest/{source} {verb}.");
        }
    }
    let _ = writeln!(
        out,
        "  kept the other {} webhook(s) of the account unchanged (checked after the update).",
        theirs.len()
    );
    Ok(out)
}

async fn utel_list(api: &Api, source: &str, show_secrets: bool) -> Result<String, String> {
    let webhooks = utel_webhooks(api).await?;
    let rows: Vec<Value> = webhooks
        .iter()
        .map(|w| {
            let on: Vec<&str> = UTEL_EVENTS.iter().copied().filter(|e| w[*e] == true).collect();
            json!({
                "url": shown(w["url"].as_str().unwrap_or(""), show_secrets),
                "events": on.join(","),
                "ours": if is_ours(w["url"].as_str(), source) { "yes" } else { "" },
            })
        })
        .collect();
    Ok(admin_client::table(&rows, &[("URL", "url"), ("EVENTS", "events"), ("CALLGATE", "ours")]))
}

// --- Salpre and vox: console steps --------------------------------------------------------

fn console_place(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Salpre => "Settings > Integrations > Custom Webhook",
        Vendor::Vox => "the agent's settings, Webhook section",
        Vendor::Retell => "the dashboard's Webhooks settings (or the agent's Webhook URL)",
        _ => "the vendor's console",
    }
}

fn console_steps(target: &Target, config: &SourceConfig, given: Option<Vec<String>>) -> Result<String, String> {
    let mut out = String::new();
    let secret = |value: &str| {
        if target.show_secrets { value.to_owned() } else { "<secret: add --show-secrets to print it>".to_owned() }
    };
    match config.vendor {
        Vendor::Salpre => {
            let chosen = events(given, SALPRE_EVENTS, Vendor::Salpre)?;
            let _ = writeln!(out, "Salpre has no webhook API. In Salpre's console:");
            let _ = writeln!(out, "  1. Open Settings > Integrations > Custom Webhook and switch Enabled on.");
            let _ = writeln!(out, "  2. Webhook URL: {}", target.show(&target.ingest));
            match &config.auth {
                Auth::Header { name, value } => {
                    let _ = writeln!(out, "  3. Additional Headers: {name}: {}", secret(value.expose()));
                }
                Auth::Bearer { token } => {
                    let _ = writeln!(out, "  3. Additional Headers: Authorization: Bearer {}", secret(token.expose()));
                }
                Auth::Basic { username, password } => {
                    use base64::Engine;
                    let pair = format!("{username}:{}", password.expose());
                    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                    let _ = writeln!(out, "  3. Additional Headers: Authorization: Basic {}", secret(&encoded));
                }
                Auth::None | Auth::Query { .. } => {
                    let _ = writeln!(out, "  3. Additional Headers: none needed");
                }
                Auth::Hmac { .. } | Auth::Retell { .. } => {
                    return Err(
                        "Salpre signs nothing: give this source a `header` auth (Salpre's Additional Headers)".into()
                    );
                }
            }
            let _ = writeln!(out, "  4. Subscribe to Events: {}", chosen.join(", "));
            let _ = writeln!(
                out,
                "  5. Save. \"Test Webhook Integration\" sends events marked is_test, which routes skip unless include_test = true."
            );
        }
        Vendor::Vox => {
            if given.is_some() {
                return Err(format!(
                    "vox has no event selection: it sends every call-data event ({})",
                    VOX_EVENTS.join(", ")
                ));
            }
            let _ = writeln!(
                out,
                "vox has no webhook API. In the vox.ai dashboard, open the agent's settings, Webhook section:"
            );
            let _ = writeln!(out, "  1. Call data webhook URL: {}", target.show(&target.ingest));
            match &config.auth {
                Auth::Query { .. } | Auth::None => {}
                _ => {
                    let _ = writeln!(
                        out,
                        "     warning: vox documents no webhook headers or signatures; this source's auth needs one, so use a `query` auth instead."
                    );
                }
            }
            if config.inbound.is_some() {
                let _ = writeln!(out, "  2. Inbound webhook URL: {}", target.show(&target.inbound));
            } else {
                let _ = writeln!(
                    out,
                    "  2. Inbound webhook: leave it empty, or add [sources.NAME.inbound] and use /v1/inbound/NAME."
                );
            }
            let _ = writeln!(out, "  3. Save. vox sends {} to the call data URL.", VOX_EVENTS.join(", "));
        }
        Vendor::Retell => {
            let chosen = events(given, RETELL_EVENTS, Vendor::Retell)?;
            let _ = writeln!(out, "In Retell's dashboard (callgate does not change Retell agents through their API):");
            let _ = writeln!(
                out,
                "  1. Settings > Webhooks: Webhook URL {} (account-wide; an agent's own Webhook URL overrides it).",
                target.show(&target.ingest)
            );
            let _ = writeln!(out, "  2. Events: {}.", chosen.join(", "));
            match &config.auth {
                Auth::Retell { .. } => {
                    let _ = writeln!(
                        out,
                        "  3. Retell signs every webhook with the API key that has the webhook badge: that key is this source's `retell` auth api_key."
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "     warning: this source does not check x-retell-signature; give it auth = {{ type = \"retell\", api_key = \"${{RETELL_API_KEY}}\" }}."
                    );
                }
            }
        }
        other => return Err(format!("{other} is wired through its API, not its console")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_is_recognised_by_path_on_any_host() {
        assert!(is_ours(Some("https://a.example/v1/ingest/utel?secret=x"), "utel"));
        assert!(is_ours(Some("https://b.example/base/v1/ingest/utel/"), "utel"));
        assert!(!is_ours(Some("https://a.example/v1/ingest/utel2"), "utel"));
        assert!(!is_ours(Some("https://crm.example/webhook/calls"), "utel"));
        assert!(!is_ours(None, "utel"));
    }

    #[test]
    fn printed_urls_hide_query_values() {
        assert_eq!(
            shown("https://h.example/v1/ingest/u?secret=s3cr3t", false),
            "https://h.example/v1/ingest/u?secret=REDACTED"
        );
        assert_eq!(
            shown("https://h.example/v1/ingest/u?secret=s3cr3t", true),
            "https://h.example/v1/ingest/u?secret=s3cr3t"
        );
    }

    #[test]
    fn events_are_checked_against_the_vendors_list() {
        assert_eq!(events(None, UTEL_EVENTS, Vendor::Utel).unwrap().len(), 7);
        assert_eq!(
            events(Some(vec!["call_started,call_ended".into()]), UTEL_EVENTS, Vendor::Utel).unwrap(),
            ["call_started", "call_ended"]
        );
        let error = events(Some(vec!["call.started".into()]), UTEL_EVENTS, Vendor::Utel).unwrap_err();
        assert!(error.contains("not a utel event"), "{error}");
    }
}
