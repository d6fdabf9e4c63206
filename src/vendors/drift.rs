//! Vendor drift (canonical.md §1.4): what a payload shows that the mapping does not know —
//! fields outside its event's schema, enum-like values outside the adapter's tables, and
//! descriptive fields in a shape the adapter cannot read. Pure, like the adapters: it reads the
//! schema, the payload's `vendor_extra` and what the adapter reported, and returns [`Drift`]s
//! for the drift report (`GET /v1/admin/drift`).
//!
//! **The rule for "new":** a field of `vendor_extra` is new when its event's schema
//! (`schemas/<vendor>/<event>.json`) does not declare it. A declared property without inner
//! `properties` or `items` covers everything inside it (a descriptive value taken whole); one
//! with them covers only itself, its children are judged one by one. Documented vendor fields
//! that the mapper does not read are declared in the schema with a description only (no
//! constraint), so the schema is also the list of fields callgate knows.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Degraded, MAX_COUNTED, MAX_ECHO_CHARS, MAX_MESSAGE_CHARS, MAX_VIOLATIONS, cut};

/// Kinds of drift, the `kind` label of `callgate_vendor_drift_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A field of `vendor_extra` that the event's schema does not declare.
    UnknownField,
    /// An enum-like value the adapter's table does not know, normalised to `unknown`.
    UnknownValue,
    /// A descriptive field in a shape the adapter cannot read ([`Degraded`]).
    Degraded,
}

impl DriftKind {
    pub const ALL: [DriftKind; 3] = [DriftKind::UnknownField, DriftKind::UnknownValue, DriftKind::Degraded];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::UnknownField => "unknown_field",
            DriftKind::UnknownValue => "unknown_value",
            DriftKind::Degraded => "degraded",
        }
    }

    pub fn parse(text: &str) -> Option<DriftKind> {
        DriftKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// An enum-like value (an end reason, a status, a role, a sentiment) that the adapter's table
/// does not know: the event carries `unknown` with the raw value beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownValue {
    /// Which value, from a fixed set per adapter ("disconnection_reason", "role"…).
    pub field: &'static str,
    /// Where the value is in the payload.
    pub pointer: String,
    /// The vendor's value, cut to [`MAX_ECHO_CHARS`].
    pub raw: String,
}

impl UnknownValue {
    pub fn new(field: &'static str, pointer: &str, raw: &str) -> Self {
        UnknownValue {
            field,
            pointer: cut(pointer, MAX_MESSAGE_CHARS).into_owned(),
            raw: cut(raw, MAX_ECHO_CHARS).into_owned(),
        }
    }
}

/// One kind of drift at one place of a payload, with how often the payload shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: DriftKind,
    /// Where: object keys joined by `.`, array items as `[]` (`call.transcript[].role`), so
    /// every item of an array counts at one path; cut to 200 characters.
    pub path: String,
    /// The raw value of an [`DriftKind::UnknownValue`] (cut to 80 characters), else empty.
    pub value: String,
    /// A short example that never holds a vendor's field value: the shape of a new field
    /// (`a string of 12 characters`, `an object with keys a, b`), what was wrong with a
    /// degraded one, the raw word of an unknown value.
    pub example: String,
    /// How many times this payload shows it (the items of an array, each).
    pub count: u64,
}

/// Most distinct drifts one payload reports: enough to see the change, bounded for hostile
/// input (a payload of 10,000 new keys).
pub const MAX_PER_PAYLOAD: usize = MAX_VIOLATIONS;

/// The property paths an event's schema declares, each with whether the schema describes what
/// is inside it (`true`: its children are judged one by one) or takes it whole (`false`).
#[derive(Debug, Clone, Default)]
pub struct Known(HashMap<String, bool>);

impl Known {
    /// The declared paths of a schema (`properties`, `items`, through `allOf`/`anyOf`/`oneOf`
    /// and `if`/`then`/`else`; `not` declares nothing).
    pub fn of(schema: &Value) -> Known {
        let mut known = Known::default();
        known.declare(schema, "");
        known
    }

    fn declare(&mut self, schema: &Value, at: &str) {
        let Some(node) = schema.as_object() else { return };
        for combinator in ["allOf", "anyOf", "oneOf"] {
            for sub in node.get(combinator).and_then(Value::as_array).into_iter().flatten() {
                self.declare(sub, at);
            }
        }
        for conditional in ["if", "then", "else"] {
            if let Some(sub) = node.get(conditional) {
                self.declare(sub, at);
            }
        }
        for (key, sub) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let path = join(at, key);
            self.insert(&path, describes_inside(sub));
            self.declare(sub, &path);
        }
        if let Some(items) = node.get("items") {
            let path = format!("{at}[]");
            self.insert(&path, describes_inside(items));
            self.declare(items, &path);
        }
    }

    fn insert(&mut self, path: &str, inside: bool) {
        let entry = self.0.entry(path.to_owned()).or_insert(inside);
        *entry |= inside;
    }

    fn get(&self, path: &str) -> Option<bool> {
        self.0.get(path).copied()
    }
}

/// Whether a schema says what is inside the value (directly or in a combinator).
fn describes_inside(schema: &Value) -> bool {
    let Some(node) = schema.as_object() else { return false };
    node.contains_key("properties")
        || node.contains_key("items")
        || ["allOf", "anyOf", "oneOf"]
            .iter()
            .any(|c| node.get(*c).and_then(Value::as_array).is_some_and(|subs| subs.iter().any(describes_inside)))
        || ["if", "then", "else"].iter().any(|c| node.get(*c).is_some_and(describes_inside))
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// The drift of one payload: new fields of its `vendor_extra` (under `known`), and what the
/// adapter reported as degraded or unknown; aggregated by (kind, path, value), in that order,
/// at most [`MAX_PER_PAYLOAD`].
pub fn of(known: &Known, extra: &Map<String, Value>, degraded: &[Degraded], unknown: &[UnknownValue]) -> Vec<Drift> {
    let mut out: Vec<Drift> = Vec::new();
    let mut add = |kind: DriftKind, path: String, value: String, example: String| {
        if let Some(seen) = out.iter_mut().find(|d| d.kind == kind && d.path == path && d.value == value) {
            seen.count += 1;
        } else if out.len() < MAX_PER_PAYLOAD {
            out.push(Drift { kind, path, value, example, count: 1 });
        }
    };
    let mut fields = Vec::new();
    new_fields(known, extra, &mut String::new(), &mut fields);
    for (path, example) in fields {
        add(DriftKind::UnknownField, path, String::new(), example);
    }
    for u in unknown {
        add(DriftKind::UnknownValue, path_of(&u.pointer), u.raw.clone(), u.raw.clone());
    }
    for d in degraded {
        add(DriftKind::Degraded, path_of(&d.pointer), String::new(), cut(&d.problem, MAX_ECHO_CHARS).into_owned());
    }
    out
}

/// The undeclared keys under `map` (at `at`, a buffer the walk reuses), with the shape of
/// each value; a new key is reported once, not every key inside it. The walk stops after
/// [`MAX_COUNTED`] of them.
fn new_fields(known: &Known, map: &Map<String, Value>, at: &mut String, out: &mut Vec<(String, String)>) {
    let len = at.len();
    for (key, value) in map {
        if out.len() >= MAX_COUNTED {
            return;
        }
        if len > 0 {
            at.push('.');
        }
        at.push_str(key);
        match known.get(at) {
            Some(false) => {}
            Some(true) => descend(known, value, at, out),
            None => {
                let reported = format!("{}{}", &at[..at.len() - key.len()], mask(key));
                out.push((cut(&reported, MAX_MESSAGE_CHARS).into_owned(), shape(value)));
            }
        }
        at.truncate(len);
    }
}

fn descend(known: &Known, value: &Value, at: &mut String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => new_fields(known, map, at, out),
        // Items are not fields: only keys inside declared items are judged.
        Value::Array(items) => {
            let len = at.len();
            at.push_str("[]");
            if known.get(at) == Some(true) {
                for item in items {
                    descend(known, item, at, out);
                }
            }
            at.truncate(len);
        }
        _ => {}
    }
}

/// A vendor's key name as the report shows it: a key with more than 3 digits (a phone number
/// or an id used as a key, as in a map keyed by number) has its digits shown as `#`, so no
/// number reaches the store and such keys fold into one row.
fn mask(key: &str) -> std::borrow::Cow<'_, str> {
    if key.bytes().filter(u8::is_ascii_digit).count() > 3 {
        key.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect::<String>().into()
    } else {
        key.into()
    }
}

/// A JSON pointer as a drift path: tokens joined by `.`, array indexes as `[]`.
pub fn path_of(pointer: &str) -> String {
    let mut path = String::new();
    for token in pointer.split('/').skip(1) {
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str("[]");
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&token.replace("~1", "/").replace("~0", "~"));
        }
    }
    cut(&path, MAX_MESSAGE_CHARS).into_owned()
}

/// The shape of a value without any of its content but key names: a phone number, a name or
/// a token in a new field never reaches the store.
pub fn shape(value: &Value) -> String {
    let text = match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) if n.is_f64() => "a fractional number".to_owned(),
        Value::Number(_) => "an integer".to_owned(),
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        Value::Array(items) => match items.first() {
            None => "an empty array".to_owned(),
            Some(first) => format!("an array of {} item(s), the first {}", items.len(), shape(first)),
        },
        Value::Object(map) if map.is_empty() => "an empty object".to_owned(),
        Value::Object(map) => {
            // Only as many key names as an example shows (a hostile object may have many).
            let mut text = "an object with keys ".to_owned();
            for (i, key) in map.keys().enumerate() {
                if text.len() > 2 * MAX_ECHO_CHARS {
                    break;
                }
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(cut(&mask(key), MAX_ECHO_CHARS).as_ref());
            }
            text
        }
    };
    cut(&text, MAX_ECHO_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn declared_paths_cover_their_subtree_unless_the_schema_describes_inside() {
        let schema = json!({
            "properties": {
                "event": {"const": "x"},
                "call": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "blob": {"description": "taken whole"},
                    "status": {"anyOf": [{"type": "object", "properties": {"name": {}}}, {"type": "string"}]},
                    "messages": {"type": "array", "items": {"type": "object", "properties": {"role": {}}}}
                }}
            },
            "not": {"required": ["forbidden"]}
        });
        let known = Known::of(&schema);
        let extra = json!({
            "call": {
                "blob": {"anything": [1, 2]},
                "status": {"name": "x", "colour": "red"},
                "messages": [null, {"tone": "calm", "role": "a"}, {"tone": "cross"}],
                "brand_new": "+14155550100"
            },
            "forbidden": 1,
            "top": {"a": 1, "b": 2}
        });
        let drift = of(&known, extra.as_object().unwrap(), &[], &[]);
        let paths: Vec<(&str, &str)> = drift.iter().map(|d| (d.path.as_str(), d.example.as_str())).collect();
        assert_eq!(
            paths,
            [
                ("call.brand_new", "a string of 12 characters"),
                ("call.messages[].tone", "a string of 4 characters"),
                ("call.status.colour", "a string of 3 characters"),
                ("forbidden", "an integer"),
                ("top", "an object with keys a, b"),
            ],
            "{drift:?}"
        );
        assert!(drift.iter().all(|d| d.kind == DriftKind::UnknownField && d.value.is_empty()));
        assert_eq!(drift[1].count, 2, "one new key in two items");
    }

    #[test]
    fn pointers_become_paths_with_array_items_folded() {
        assert_eq!(path_of("/call/transcript/3/role"), "call.transcript[].role");
        assert_eq!(path_of("/messages/0/role"), "messages[].role");
        assert_eq!(path_of("/a~1b/c~0d"), "a/b.c~d");
        assert_eq!(path_of(""), "");
    }

    #[test]
    fn repeated_drift_is_counted_and_a_payload_reports_a_bounded_number() {
        let unknown: Vec<UnknownValue> =
            (0..3).map(|i| UnknownValue::new("role", &format!("/messages/{i}/role"), "narrator")).collect();
        let drift = of(&Known::default(), &Map::new(), &[], &unknown);
        assert_eq!(drift.len(), 1);
        assert_eq!(
            (drift[0].path.as_str(), drift[0].value.as_str(), drift[0].count),
            ("messages[].role", "narrator", 3)
        );
        let many: Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(of(&Known::default(), &many, &[], &[]).len(), MAX_PER_PAYLOAD);
        let wide: Map<String, Value> = (0..10_000).map(|i| (format!("key{i}"), json!(i))).collect();
        let example = shape(&Value::Object(wide));
        assert!(example.starts_with("an object with keys ") && example.chars().count() <= MAX_ECHO_CHARS + 1);
        let keyed_by_number = json!({"+998901234567": {"+14155550100": 1, "v2_flag": true}});
        let drift = of(&Known::default(), keyed_by_number.as_object().unwrap(), &[], &[]);
        assert_eq!(drift[0].path, "+############", "a number used as a key is masked");
        assert_eq!(drift[0].example, "an object with keys +###########, v2_flag");
        let long = UnknownValue::new("reason", "/reason", &"z".repeat(10_000));
        assert_eq!(long.raw.chars().count(), MAX_ECHO_CHARS + 1, "cut, with an ellipsis");
    }
}
