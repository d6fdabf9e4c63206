//! Vendor adapters: validate a vendor payload against its JSON Schema, then map it to
//! canonical events. One module per vendor; each owns its schemas (under `schemas/<vendor>/`,
//! embedded at build time), its discriminator and its mapping.
//!
//! **Invariant:** adapters are pure. They never touch the network, the store or the clock
//! (`received_at` is handed in), so they are trivially testable and fuzzable.

mod oneinbox;
mod salpre;
mod utel;
mod vox;

use std::{collections::HashMap, sync::LazyLock};

use chrono::{DateTime, Utc};
use jsonschema::Validator;
use phonenumber::country;
use serde::Serialize;
use serde_json::Value;

use crate::canonical::{self, CloudEvent, Common, Direction, Mapped, Payload, SCHEMA_VERSION, Vendor, convert};

/// One schema violation, located by a JSON pointer into the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { path: path.into(), message: message.into() }
    }
}

/// Why a payload was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    #[error("body is not valid JSON: {message} at line {line} column {column}")]
    NotJson { message: String, line: usize, column: usize },
    #[error("unknown event for vendor {vendor}: {}", .violation.message)]
    UnknownEvent { vendor: Vendor, violation: Violation },
    #[error("payload violates the {vendor} `{event}` schema ({} problem(s))", .violations.len())]
    Invalid { vendor: Vendor, event: String, violations: Vec<Violation> },
}

impl Rejection {
    pub fn violations(&self) -> Vec<Violation> {
        match self {
            Rejection::NotJson { message, line, column } => {
                vec![Violation::new("", format!("{message} at line {line} column {column}"))]
            }
            Rejection::UnknownEvent { violation, .. } => vec![violation.clone()],
            Rejection::Invalid { violations, .. } => violations.clone(),
        }
    }
}

/// Where a payload came from: the facts about its source that mapping needs.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub source: &'a str,
    pub vendor: Vendor,
    /// Region for national phone numbers (`phone_region` of the source).
    pub phone_region: Option<country::Id>,
}

/// The context an adapter maps with.
pub struct Context<'a> {
    pub origin: &'a Origin<'a>,
    pub received_at: String,
}

impl Context<'_> {
    /// The `Common` block with the fields every adapter fills the same way; the adapter then
    /// sets what its payload carries.
    pub fn common(&self, vendor_event: impl Into<String>, call_id: String) -> Common {
        Common {
            schema_version: SCHEMA_VERSION,
            vendor: self.origin.vendor,
            source: self.origin.source.to_owned(),
            vendor_event: vendor_event.into(),
            vendor_format: None,
            test: false,
            call_id,
            agent_id: None,
            direction: Direction::Unknown,
            from: None,
            to: None,
            from_e164: None,
            to_e164: None,
            occurred_at: None,
            received_at: self.received_at.clone(),
        }
    }

    /// Sets `from`/`to` exactly as sent, and their E.164 forms when derivable.
    pub fn numbers(&self, common: &mut Common, from: Option<String>, to: Option<String>) {
        common.from_e164 = convert::e164(from.as_deref(), self.origin.phone_region);
        common.to_e164 = convert::e164(to.as_deref(), self.origin.phone_region);
        common.from = from;
        common.to = to;
    }
}

/// A mapping failure after the schema passed: a value the schema cannot express a rule for.
pub type MapResult = Result<Mapped, Violation>;

impl Vendor {
    fn schemas(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Vendor::Oneinbox => oneinbox::SCHEMAS,
            Vendor::Vox => vox::SCHEMAS,
            Vendor::Salpre => salpre::SCHEMAS,
            Vendor::Utel => utel::SCHEMAS,
        }
    }

    /// The schema key of a payload, from the vendor's discriminator.
    fn event_key(self, body: &Value) -> Result<&'static str, Violation> {
        match self {
            Vendor::Oneinbox => oneinbox::event_key(body),
            Vendor::Vox => vox::event_key(body),
            Vendor::Salpre => salpre::event_key(body),
            Vendor::Utel => utel::event_key(body),
        }
    }

    fn map(self, key: &'static str, payload: &Payload<'_>, cx: &Context<'_>) -> MapResult {
        match self {
            Vendor::Oneinbox => oneinbox::map(key, payload, cx),
            Vendor::Vox => vox::map(key, payload, cx),
            Vendor::Salpre => salpre::map(key, payload, cx),
            Vendor::Utel => utel::map(key, payload, cx),
        }
    }
}

type Validators = HashMap<(Vendor, &'static str), Validator>;

/// Every vendor schema, compiled once per process. Schemas are embedded, so a failure here is
/// a build defect; [`init`] surfaces it at start-up instead of at the first request.
static VALIDATORS: LazyLock<Result<Validators, String>> = LazyLock::new(|| {
    let mut validators = HashMap::new();
    for vendor in Vendor::ALL {
        for (key, text) in vendor.schemas() {
            validators.insert((vendor, *key), compile(text).map_err(|e| format!("schema {vendor}/{key}: {e}"))?);
        }
    }
    Ok(validators)
});

/// Compiles a JSON Schema with format assertions on and no network access (the `jsonschema`
/// crate is built without its HTTP resolver, so a remote `$ref` fails to compile).
pub fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    jsonschema::options().should_validate_formats(true).build(&schema).map_err(|e| e.to_string())
}

/// Compiles every vendor schema; call once at start-up.
pub fn init() -> Result<(), String> {
    VALIDATORS.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Most violations listed for one payload: enough to fix it, bounded for hostile input.
const MAX_VIOLATIONS: usize = 50;

/// Parses, validates and maps one raw vendor body into canonical events, in emission order.
pub fn normalize(origin: &Origin<'_>, body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<CloudEvent>, Rejection> {
    normalize_digested(origin, body, &canonical::body_digest(body), received_at)
}

/// [`normalize`] for a caller that already holds the body's SHA-256 (ingress stores it too).
pub fn normalize_digested(
    origin: &Origin<'_>,
    body: &[u8],
    digest: &[u8; 32],
    received_at: DateTime<Utc>,
) -> Result<Vec<CloudEvent>, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Rejection::NotJson {
        message: json_error_message(&e),
        line: e.line(),
        column: e.column(),
    })?;
    let vendor = origin.vendor;
    let key = vendor.event_key(&value).map_err(|violation| Rejection::UnknownEvent { vendor, violation })?;
    let validators = VALIDATORS.as_ref().map_err(|e| Rejection::Invalid {
        vendor,
        event: key.to_owned(),
        violations: vec![Violation::new("", e.clone())],
    })?;
    let validator = &validators[&(vendor, key)];
    if !validator.is_valid(&value) {
        let violations = validator
            .iter_errors(&value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation::new(e.instance_path().to_string(), e.to_string()))
            .collect();
        return Err(Rejection::Invalid { vendor, event: key.to_owned(), violations });
    }
    let payload = Payload::new(&value);
    let cx = Context { origin, received_at: convert::rfc3339(received_at) };
    let mapped = vendor.map(key, &payload, &cx).map_err(|violation| Rejection::Invalid {
        vendor,
        event: key.to_owned(),
        violations: vec![violation],
    })?;
    Ok(mapped.finish(digest, payload.residual()))
}

/// serde_json's message without its trailing " at line L column C" (reported separately).
fn json_error_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The discriminator of a payload: a string at `pointer`, looked up in `known`.
fn discriminate(
    body: &Value,
    pointer: &str,
    known: &[(&str, &'static str)],
    vendor: Vendor,
) -> Result<&'static str, Violation> {
    let name = match body.pointer(pointer) {
        Some(Value::String(name)) => name,
        Some(_) => return Err(Violation::new(pointer, "event name must be a string")),
        None if !body.is_object() => {
            return Err(Violation::new("", "payload must be a JSON object"));
        }
        None => return Err(Violation::new(pointer, "event name is missing")),
    };
    known
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, key)| *key)
        .ok_or_else(|| Violation::new(pointer, format!("unknown {vendor} event \"{name}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vendor_schema_compiles() {
        init().unwrap();
        for vendor in Vendor::ALL {
            assert!(!vendor.schemas().is_empty(), "{vendor} has no schema");
        }
    }

    #[test]
    fn not_json_reports_position() {
        let origin = Origin { source: "vox", vendor: Vendor::Vox, phone_region: None };
        let err = normalize(&origin, b"{\n  \"event\": ", Utc::now()).unwrap_err();
        match err {
            Rejection::NotJson { line, column, .. } => assert_eq!((line, column), (2, 11)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
