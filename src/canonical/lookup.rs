//! The canonical inbound lookup: what callgate asks a CRM just before a call starts
//! (`call.inbound_lookup`), and what the CRM answers. Vendor-neutral: a vendor's inbound
//! webhook (vox `call_inbound`) is translated into a [`LookupRequest`] and the
//! [`LookupAnswer`] back into the vendor's response by that vendor's module.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{SCHEMA_VERSION, Vendor, convert};

/// The CloudEvents `type` of a lookup request.
pub const LOOKUP_TYPE: &str = "call.inbound_lookup";

/// The numbers of a call about to start, as a vendor's inbound webhook gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundCall {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A lookup request as CloudEvents 1.0 structured-mode JSON. No `subject`: the call has no id
/// yet. Its `id` is random (`lk_` + 32 hex digits): a lookup is never retried or stored.
#[derive(Debug, Clone, Serialize)]
pub struct LookupRequest {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub datacontenttype: &'static str,
    pub data: LookupData,
}

/// `data` of a lookup request: the numbers as sent and, where derivable, in E.164.
#[derive(Debug, Clone, Serialize)]
pub struct LookupData {
    pub schema_version: u8,
    pub vendor: Vendor,
    pub source: String,
    pub direction: super::Direction,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_e164: Option<String>,
    pub to_e164: Option<String>,
}

impl LookupRequest {
    /// The lookup for `call` arriving at `source`; `now` is the request's `time`.
    pub fn new(
        source: &str,
        vendor: Vendor,
        region: Option<phonenumber::country::Id>,
        call: InboundCall,
        now: chrono::DateTime<chrono::Utc>,
    ) -> LookupRequest {
        let from_e164 = convert::e164(call.from.as_deref(), region);
        let to_e164 = convert::e164(call.to.as_deref(), region);
        LookupRequest {
            specversion: "1.0",
            id: format!("lk_{:032x}", fastrand::u128(..)),
            source: format!("/callgate/sources/{source}"),
            kind: LOOKUP_TYPE,
            time: convert::rfc3339(now),
            datacontenttype: "application/json",
            data: LookupData {
                schema_version: SCHEMA_VERSION,
                vendor,
                source: source.to_owned(),
                direction: super::Direction::Inbound,
                from: call.from,
                to: call.to,
                from_e164,
                to_e164,
            },
        }
    }
}

/// What a lookup answers, and what a source's `fallback` holds: the canonical names of
/// `data.variables` and `data.metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupAnswer {
    /// Per-call variables for the agent's prompt (vox `dynamic_variables`).
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// Stored with the call by the vendor and sent back in its call events (vox `metadata`).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Why a lookup answer cannot be used. The message never repeats the answer's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedAnswer {
    #[error("not JSON")]
    NotJson,
    #[error("not a JSON object")]
    NotObject,
    #[error("`{0}` is not an object")]
    NotMap(&'static str),
    /// Keys other than `variables` and `metadata` (a CRM answering some other shape).
    #[error("unexpected key (only `variables` and `metadata` are read)")]
    UnknownKey,
}

impl LookupAnswer {
    /// Reads a lookup's answer body. Both keys are optional; anything else is malformed, so a
    /// CRM answering some other shape falls back instead of sending half its intent.
    pub fn parse(body: &[u8]) -> Result<LookupAnswer, MalformedAnswer> {
        let value: Value = serde_json::from_slice(body).map_err(|_| MalformedAnswer::NotJson)?;
        let Value::Object(mut object) = value else { return Err(MalformedAnswer::NotObject) };
        let mut take = |key: &'static str| match object.remove(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(MalformedAnswer::NotMap(key)),
        };
        let variables = take("variables")?;
        let metadata = take("metadata")?;
        if !object.is_empty() {
            return Err(MalformedAnswer::UnknownKey);
        }
        Ok(LookupAnswer { variables, metadata })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let ok = LookupAnswer::parse(br#"{"variables":{"name":"Kim"},"metadata":{"crm_id":7}}"#).unwrap();
        assert_eq!(Value::Object(ok.variables), json!({"name": "Kim"}));
        assert_eq!(Value::Object(ok.metadata), json!({"crm_id": 7}));
        assert_eq!(LookupAnswer::parse(b"{}").unwrap(), LookupAnswer::default());
        assert_eq!(LookupAnswer::parse(br#"{"variables":null}"#).unwrap(), LookupAnswer::default());
        assert_eq!(LookupAnswer::parse(b"<html>"), Err(MalformedAnswer::NotJson));
        assert_eq!(LookupAnswer::parse(b"[1]"), Err(MalformedAnswer::NotObject));
        assert_eq!(LookupAnswer::parse(br#"{"variables":"x"}"#), Err(MalformedAnswer::NotMap("variables")));
        assert_eq!(LookupAnswer::parse(br#"{"name":"Kim"}"#), Err(MalformedAnswer::UnknownKey));
    }

    #[test]
    fn a_request_carries_the_numbers_in_e164() {
        let call = InboundCall { from: Some("01012345678".into()), to: Some("+827012345678".into()) };
        let request =
            LookupRequest::new("vox", Vendor::Vox, Some(phonenumber::country::Id::KR), call, chrono::Utc::now());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["type"], "call.inbound_lookup");
        assert_eq!(json["source"], "/callgate/sources/vox");
        assert_eq!(json["data"]["from_e164"], "+821012345678");
        assert_eq!(json["data"]["to_e164"], "+827012345678");
        assert_eq!(json["data"]["from"], "01012345678");
        assert!(json.get("subject").is_none());
        assert!(request.id.starts_with("lk_") && request.id.len() == 35);
    }
}
