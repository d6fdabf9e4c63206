//! What makes two payloads of a source the same delivery (`[sources.NAME] dedup`).
//!
//! The store deduplicates on (source, 32-byte key) within the redelivery window, and event
//! ids are derived from the key. With `dedup = "body"` the key is the SHA-256 of the raw body;
//! with `dedup = "event"` it is the SHA-256 of the payload's [`Identity`]: the fields that
//! tell one instance of a vendor event from another, which each vendor module defines
//! (`identity` beside its `map`). A payload without them is keyed by its body.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Vendor;

/// `[sources.NAME] dedup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dedup {
    /// Byte-identical bodies are the same delivery.
    #[default]
    Body,
    /// Payloads with the same vendor event identity are the same delivery, however they are
    /// serialised.
    Event,
}

impl Dedup {
    pub const NAMES: &'static str = "`body` or `event`";

    pub fn parse(name: &str) -> Option<Dedup> {
        match name {
            "body" => Some(Dedup::Body),
            "event" => Some(Dedup::Event),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dedup::Body => "body",
            Dedup::Event => "event",
        }
    }
}

/// What a payload's dedup key was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedBy {
    /// The raw body (`dedup = "body"`).
    Body,
    /// The vendor event identity (`dedup = "event"`).
    Event,
    /// The raw body, because the payload lacks its identity fields (`dedup = "event"`).
    BodyFallback,
}

/// A payload's dedup key: what the store deduplicates on and event ids derive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub digest: [u8; 32],
    pub by: KeyedBy,
}

/// Domain separation of identity digests from body digests (and from later identity forms).
const IDENTITY_DOMAIN: &[u8] = b"event-v1\n";

/// The fields that identify one instance of a vendor event: its name and labelled values, in
/// a fixed order per event. Values are kept in a canonical JSON form (object keys sorted, no
/// whitespace), so re-ordered keys or other whitespace in a redelivery give the same identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    event: &'static str,
    parts: Vec<(&'static str, String)>,
}

impl Identity {
    /// An identity of `event` (the vendor event name), with no fields yet.
    pub fn new(event: &'static str) -> Identity {
        Identity { event, parts: Vec::new() }
    }

    /// Adds the value at the first of `pointers` that is present and not null, labelled
    /// `label`; `None` (the payload has no identity) when none is.
    pub fn field(mut self, body: &Value, label: &'static str, pointers: &[&str]) -> Option<Identity> {
        let value = pointers.iter().find_map(|at| body.pointer(at).filter(|v| !v.is_null()))?;
        self.parts.push((label, canonical(value)));
        Some(self)
    }

    /// Adds the value at `pointer`, or null when absent: a field that tells instances apart
    /// when the vendor sends it, and whose absence is itself a fact.
    pub fn optional(mut self, body: &Value, label: &'static str, pointer: &str) -> Identity {
        let value = body.pointer(pointer).unwrap_or(&Value::Null);
        self.parts.push((label, canonical(value)));
        self
    }

    /// The labels of the fields, in order (what README's table lists).
    pub fn labels(&self) -> Vec<&'static str> {
        self.parts.iter().map(|(label, _)| *label).collect()
    }

    /// SHA-256 over `"event-v1\n" ‖ vendor ‖ "\n" ‖ event ‖ "\n"` and `label=value\n` per
    /// field. Canonical JSON never holds a raw newline, so the encoding is unambiguous.
    pub fn digest(&self, vendor: Vendor) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(IDENTITY_DOMAIN);
        for text in [vendor.as_str(), self.event] {
            hasher.update(text.as_bytes());
            hasher.update(b"\n");
        }
        for (label, value) in &self.parts {
            hasher.update(label.as_bytes());
            hasher.update(b"=");
            hasher.update(value.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().into()
    }
}

/// `value` as JSON with object keys sorted and no whitespace, whatever order the vendor sent.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": "\n", "x": null}], "a": true}"#).unwrap();
        let b: Value = serde_json::from_str("{\"a\":true,\n \"b\":[1,{\"x\":null,\"y\":\"\\n\"}]}").unwrap();
        assert_eq!(canonical(&a), r#"{"a":true,"b":[1,{"x":null,"y":"\n"}]}"#);
        assert_eq!(canonical(&a), canonical(&b));
    }

    #[test]
    fn the_digest_separates_vendor_event_labels_and_values() {
        let body = json!({"id": "c1", "t": 5, "u": "5"});
        let id = |event, label, at| Identity::new(event).field(&body, label, &[at]).unwrap();
        let base = id("e", "call_id", "/id").digest(Vendor::Vox);
        assert_eq!(base, id("e", "call_id", "/id").digest(Vendor::Vox), "deterministic");
        assert_ne!(base, id("e", "call_id", "/id").digest(Vendor::Salpre), "vendor");
        assert_ne!(base, id("f", "call_id", "/id").digest(Vendor::Vox), "event");
        assert_ne!(base, id("e", "time", "/id").digest(Vendor::Vox), "label");
        // A number and the same digits as a string are different values.
        assert_ne!(id("e", "time", "/t").digest(Vendor::Vox), id("e", "time", "/u").digest(Vendor::Vox));
        assert_ne!(base, crate::canonical::body_digest(br#"{"id": "c1"}"#));
    }

    #[test]
    fn a_missing_or_null_field_means_no_identity_and_the_first_present_pointer_wins() {
        let body = json!({"a": null, "b": 2});
        assert!(Identity::new("e").field(&body, "x", &["/a"]).is_none());
        assert!(Identity::new("e").field(&body, "x", &["/missing"]).is_none());
        let first = Identity::new("e").field(&body, "x", &["/a", "/b"]).unwrap();
        assert_eq!(first.parts, [("x", "2".to_owned())]);
        let optional = Identity::new("e").optional(&body, "y", "/missing");
        assert_eq!(optional.parts, [("y", "null".to_owned())]);
        assert_eq!(Dedup::parse("event"), Some(Dedup::Event));
        assert_eq!(Dedup::parse("Event"), None);
    }
}
