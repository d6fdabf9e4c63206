//! vox.ai's inbound webhook (`call_inbound`): sent just before a call starts, it waits for the
//! dynamic variables to put in the agent's prompt. Two request forms are in vox's docs: the
//! current `{"event":"call_inbound","call_inbound":{"from_number","to_number"}}` and an older
//! flat `{"call_from","call_to"}`. Both are read; the answer is always the current form,
//! `{"call_inbound":{"dynamic_variables":{…},"metadata":{…}}}`.
//!
//! A rejection names a value's JSON type, not the value (but for an `event` name): in this
//! request a value may be a phone number, and rejections are logged and answered.

use serde_json::{Map, Value, json};

use crate::{
    canonical::{
        Vendor,
        lookup::{InboundCall, LookupAnswer},
        payload::kind_of,
    },
    vendors::{Count, Rejection, Violation, preview},
};

/// The event name, in messages.
const EVENT: &str = "call_inbound";
/// Longest phone number read, in bytes: longer is no phone number, and is not passed on.
const MAX_NUMBER_BYTES: usize = 64;

/// The numbers of an inbound webhook request, in either form.
pub fn request(body: &[u8]) -> Result<InboundCall, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Rejection::NotJson {
        message: crate::vendors::cut(&e.to_string(), 120).into_owned(),
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(object) = &value else {
        return Err(unknown(Violation::new("", format!("expected an object, got {}", kind_of(&value)))));
    };
    match object.get("event") {
        Some(Value::String(event)) if event == EVENT => match object.get(EVENT) {
            Some(Value::Object(call)) => {
                Ok(InboundCall { from: number(call, "from_number", "/call_inbound")?, to: number(call, "to_number", "/call_inbound")? })
            }
            Some(other) => Err(invalid(Violation::new("/call_inbound", format!("expected an object, got {}", kind_of(other))))),
            None => Err(invalid(Violation::new("/call_inbound", "is missing"))),
        },
        Some(other) => Err(unknown(Violation::new(
            "/event",
            // An event name is shown (it says which webhook was pointed here); nothing else is.
            match other {
                Value::String(_) => format!("expected \"call_inbound\" (vox's inbound webhook), got {}", preview(other)),
                _ => format!("expected \"call_inbound\" (vox's inbound webhook), got {}", kind_of(other)),
            },
        ))),
        // The older flat form has no `event`.
        None if object.contains_key("call_from") || object.contains_key("call_to") => {
            Ok(InboundCall { from: number(object, "call_from", "")?, to: number(object, "call_to", "")? })
        }
        None => Err(unknown(Violation::new(
            "",
            "neither vox's inbound request (`event: call_inbound`) nor its older form (`call_from`, `call_to`)",
        ))),
    }
}

/// vox's current response shape for a lookup's answer (or a fallback).
pub fn response(answer: &LookupAnswer) -> Value {
    json!({"call_inbound": {"dynamic_variables": answer.variables, "metadata": answer.metadata}})
}

/// A number field: a string, `null` or absent (web calls have none).
fn number(object: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, Rejection> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_NUMBER_BYTES => Ok(Some(s.clone())),
        Some(Value::String(_)) => {
            Err(invalid(Violation::new(format!("{at}/{key}"), format!("longer than {MAX_NUMBER_BYTES} bytes"))))
        }
        Some(other) => Err(invalid(Violation::new(
            format!("{at}/{key}"),
            format!("expected a string or null, got {}", kind_of(other)),
        ))),
    }
}

fn invalid(violation: Violation) -> Rejection {
    Rejection::Invalid { vendor: Vendor::Vox, event: EVENT, violations: vec![violation], count: Count::Exactly(1) }
}

fn unknown(violation: Violation) -> Rejection {
    Rejection::UnknownEvent { vendor: Vendor::Vox, violation }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_request_forms_are_read() {
        let current = br#"{"event":"call_inbound","call_inbound":{"from_number":"+12137771234","to_number":"+12137771235"}}"#;
        assert_eq!(
            request(current).unwrap(),
            InboundCall { from: Some("+12137771234".into()), to: Some("+12137771235".into()) }
        );
        let older = br#"{"call_from":"+821012345678","call_to":"+827087652143"}"#;
        assert_eq!(
            request(older).unwrap(),
            InboundCall { from: Some("+821012345678".into()), to: Some("+827087652143".into()) }
        );
        let web = br#"{"event":"call_inbound","call_inbound":{"from_number":null}}"#;
        assert_eq!(request(web).unwrap(), InboundCall::default());
    }

    #[test]
    fn other_bodies_are_refused_without_repeating_them() {
        assert!(matches!(request(b"not json"), Err(Rejection::NotJson { .. })));
        assert!(matches!(request(br#"{"event":"call_started","call":{}}"#), Err(Rejection::UnknownEvent { .. })));
        assert!(matches!(request(br#"{"hello":1}"#), Err(Rejection::UnknownEvent { .. })));
        let long = format!(r#"{{"call_from":"{}"}}"#, "1".repeat(10_000));
        let rejection = request(long.as_bytes()).unwrap_err();
        assert!(matches!(rejection, Rejection::Invalid { event: "call_inbound", .. }));
        assert!(!rejection.to_string().contains("1111111111") && rejection.violations()[0].path == "/call_from");
        let typed = request(br#"{"event":"call_inbound","call_inbound":{"from_number":821012345678}}"#).unwrap_err();
        assert_eq!(typed.violations()[0].path, "/call_inbound/from_number");
    }

    /// A number sent as a JSON number, or where an object belongs, is refused without being
    /// repeated: the rejection is logged and answered, and no phone number may be in either.
    #[test]
    fn rejections_never_repeat_a_number() {
        for body in [
            r#"{"event":"call_inbound","call_inbound":{"from_number":821012345678}}"#,
            r#"{"event":"call_inbound","call_inbound":{"to_number":[821012345678]}}"#,
            r#"{"event":"call_inbound","call_inbound":"+821012345678"}"#,
            r#"{"event":821012345678}"#,
            r#"{"call_from":"+821055556666","call_to":821012345678}"#,
            "821012345678",
            r#""+821012345678""#,
        ] {
            let rejection = request(body.as_bytes()).unwrap_err();
            let shown = format!("{rejection} {:?}", rejection.violations());
            assert!(!shown.contains("1012345678"), "{body} is repeated: {shown}");
        }
        let typed = request(br#"{"event":"call_inbound","call_inbound":{"from_number":821012345678}}"#).unwrap_err();
        assert_eq!(typed.violations()[0].message, "expected a string or null, got a number");
    }

    #[test]
    fn the_answer_is_in_the_current_shape() {
        let mut answer = LookupAnswer::default();
        answer.variables.insert("customer_name".into(), json!("Kim"));
        answer.metadata.insert("crm_id".into(), json!(42));
        assert_eq!(
            response(&answer),
            json!({"call_inbound": {"dynamic_variables": {"customer_name": "Kim"}, "metadata": {"crm_id": 42}}})
        );
    }
}
