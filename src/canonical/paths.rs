//! Which dotted paths a canonical event can have (`type`, `data.direction`,
//! `data.metadata.campaign`…), read from the canonical JSON Schema
//! (`schemas/canonical/event.json`), and the paths that hold phone numbers.
//!
//! Route filters and `omit` lists name paths; checking them here at load turns a typo
//! (`data.directon`) into a configuration error instead of a filter that never matches.

use std::sync::LazyLock;

use serde_json::Value;

/// The canonical schema, parsed once. It is embedded at build time and a unit test parses
/// it, so this cannot fail at run time.
static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../schemas/canonical/event.json")).expect("the embedded canonical schema")
});

/// The CloudEvents attributes a consumer cannot do without (CloudEvents 1.0 "REQUIRED"):
/// a route may not omit them.
pub const REQUIRED_ATTRIBUTES: [&str; 4] = ["id", "source", "specversion", "type"];

/// Every field of canonical `data` that holds a phone number (`canonical.md` §4): the
/// parties as sent and in E.164, an SMS's parties and a transfer's target. What a route's
/// `mask_numbers` masks.
pub const NUMBER_FIELDS: [&str; 7] =
    ["data.from", "data.to", "data.from_e164", "data.to_e164", "data.sms.from", "data.sms.to", "data.transfer.target"];

/// What a path names in a canonical event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string, number, boolean or null.
    Value,
    /// An object with known members (`data`, `data.end`), or a free one (`data.metadata`).
    Object,
    /// An array (`data.transcript`).
    Array,
    /// Something inside a free object (`data.metadata.campaign`): any shape.
    Inside,
}

/// Resolves a dotted path against the canonical schema. The error says which prefix of the
/// path no canonical event can have, briefly.
pub fn shape(path: &str) -> Result<Shape, String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("`{}` is not a dotted path such as `data.direction`", crate::http::cut(path, 80)));
    }
    let mut node = &*SCHEMA;
    let mut walked = String::new();
    for segment in path.split('.') {
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            return match classify(node) {
                Shape::Object => Ok(Shape::Inside),
                Shape::Array => Err(format!("`{walked}` is an array: address it whole")),
                _ => Err(format!("`{walked}` is a single value: nothing is below it")),
            };
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
        node = properties.get(segment).ok_or_else(|| {
            if walked.contains('.') {
                format!("no canonical event has `{}`", crate::http::cut(&walked, 80))
            } else {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                format!(
                    "`{}` is not an attribute of a canonical event ({}, or data.<path>)",
                    crate::http::cut(segment, 80),
                    known.join(", ")
                )
            }
        })?;
    }
    Ok(classify(node))
}

fn classify(node: &Value) -> Shape {
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if node.get("properties").is_some() || types.contains(&"object") {
        Shape::Object
    } else if types.contains(&"array") {
        Shape::Array
    } else {
        Shape::Value
    }
}

/// Looks a dotted path up in a canonical event as JSON.
pub fn get<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(event, |value, key| value.get(key))
}

/// Removes a dotted path from a canonical event as JSON (nothing when it is absent).
pub fn remove(event: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (parent.split('.').try_fold(event, |value, key| value.get_mut(key)), last),
        None => (Some(event), path),
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

/// Digits of a masked number left visible at its end.
pub const MASK_KEEP_DIGITS: usize = 4;
/// A number with fewer digits than this (an extension, a short code) is masked whole:
/// keeping four of them would show most of it.
pub const MASK_MIN_DIGITS: usize = 8;
/// What a masked value that is not a plain phone number becomes.
pub const MASKED: &str = "***";

/// Masks a phone number: every digit but the last four becomes `*`, and `+`, spaces and
/// `-().` stay where they were (`+821012345678` → `+********5678`). A value with anything
/// else in it (a SIP URI, `anonymous`) or with fewer than eight digits becomes `***`.
pub fn mask_number(number: &str) -> String {
    let phone_like = number.chars().all(|c| c.is_ascii_digit() || "+ -().".contains(c));
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if !phone_like || digits < MASK_MIN_DIGITS {
        return MASKED.to_owned();
    }
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen > digits - MASK_KEEP_DIGITS { c } else { '*' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_canonical_schema() {
        assert_eq!(shape("type"), Ok(Shape::Value));
        assert_eq!(shape("subject"), Ok(Shape::Value));
        assert_eq!(shape("data"), Ok(Shape::Object));
        assert_eq!(shape("data.direction"), Ok(Shape::Value));
        assert_eq!(shape("data.test"), Ok(Shape::Value));
        assert_eq!(shape("data.end.reason"), Ok(Shape::Value));
        assert_eq!(shape("data.metadata"), Ok(Shape::Object));
        assert_eq!(shape("data.metadata.campaign"), Ok(Shape::Inside));
        assert_eq!(shape("data.vendor_extra.call.deep.er"), Ok(Shape::Inside));
        assert_eq!(shape("data.analysis.extracted.intent"), Ok(Shape::Inside));
        assert_eq!(shape("data.transcript"), Ok(Shape::Array));
        assert!(shape("data.transcript.text").unwrap_err().contains("`data.transcript` is an array"));
        assert!(shape("data.direction.x").unwrap_err().contains("`data.direction` is a single value"));
        assert!(shape("data.directon").unwrap_err().contains("no canonical event has `data.directon`"));
        assert!(shape("dataschema").unwrap_err().contains("not an attribute"));
        assert!(shape("data..x").is_err() && shape("").is_err() && shape(".type").is_err());
    }

    #[test]
    fn every_number_field_is_a_value_of_the_schema() {
        for field in NUMBER_FIELDS {
            assert_eq!(shape(field), Ok(Shape::Value), "{field}");
        }
        for attribute in REQUIRED_ATTRIBUTES {
            assert_eq!(shape(attribute), Ok(Shape::Value), "{attribute}");
        }
    }

    #[test]
    fn numbers_keep_their_last_four_digits_and_their_punctuation() {
        assert_eq!(mask_number("+821012345678"), "+********5678");
        assert_eq!(mask_number("+82 10-1234-5678"), "+** **-****-5678");
        assert_eq!(mask_number("(415) 555-0123"), "(***) ***-0123");
        assert_eq!(mask_number("1001"), MASKED, "an extension is masked whole");
        assert_eq!(mask_number("5550123"), MASKED, "seven digits are masked whole");
        assert_eq!(mask_number("sip:+821012345678@pbx.example"), MASKED);
        assert_eq!(mask_number("anonymous"), MASKED);
        assert_eq!(mask_number(""), MASKED);
    }

    #[test]
    fn paths_are_read_and_removed() {
        let mut event = serde_json::json!({"id": "x", "data": {"a": {"b": 1, "c": 2}, "d": 3}});
        assert_eq!(get(&event, "data.a.b"), Some(&serde_json::json!(1)));
        assert_eq!(get(&event, "data.a.z"), None);
        remove(&mut event, "data.a.b");
        remove(&mut event, "data.nothing.here");
        remove(&mut event, "data.d.not_an_object");
        remove(&mut event, "id");
        assert_eq!(event, serde_json::json!({"data": {"a": {"c": 2}, "d": 3}}));
    }
}
