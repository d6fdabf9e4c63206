//! Salpre: `{event_type, timestamp_utc (epoch seconds), payload, is_test}`. Call ids are
//! integers; `transcript` and `error` nest the call under `payload.call`.

use serde_json::Value;

use super::{Context, MapResult, Violation};
use crate::canonical::{
    Details, Draft, End, EndReason, EndedBy, ErrorInfo, EventType, Mapped, Payload, Status, Vendor, convert,
};

pub const SCHEMAS: &[(&str, &str)] = &[
    ("call_initiated", include_str!("../../schemas/salpre/call_initiated.json")),
    ("call_ringing", include_str!("../../schemas/salpre/call_ringing.json")),
    ("call_answered", include_str!("../../schemas/salpre/call_answered.json")),
    ("transcript", include_str!("../../schemas/salpre/transcript.json")),
    ("call_ended", include_str!("../../schemas/salpre/call_ended.json")),
    ("error", include_str!("../../schemas/salpre/error.json")),
];

pub fn event_key(body: &Value) -> Result<&'static str, Violation> {
    let known: Vec<(&str, &'static str)> = SCHEMAS.iter().map(|(k, _)| (*k, *k)).collect();
    super::discriminate(body, "/event_type", &known, Vendor::Salpre)
}

pub fn map(key: &'static str, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/event_type");
    // `transcript` and `error` carry the call as an object; the others flatten it.
    let (call, id_field) =
        if matches!(key, "transcript" | "error") { ("/payload/call", "id") } else { ("/payload", "call_id") };
    let call_id = p
        .id(&format!("{call}/{id_field}"))
        .ok_or_else(|| Violation::new(format!("{call}/{id_field}"), "call id is missing"))?;
    let mut common = cx.common(key, call_id);
    common.test = p.bool("/is_test").unwrap_or(false);
    common.direction = p.direction(&format!("{call}/direction"));
    cx.numbers(&mut common, p.str(&format!("{call}/from")), p.str(&format!("{call}/to")));
    let at = p.i64("/timestamp_utc").and_then(convert::from_epoch_s);
    common.occurred_at = at.clone();

    let events = match key {
        "call_initiated" => {
            vec![Draft::new(EventType::CallInitiated, Details { started_at: at, ..Details::default() })]
        }
        "call_ringing" => vec![Draft::new(EventType::CallRinging, Details::default())],
        "call_answered" => {
            vec![Draft::new(EventType::CallConnected, Details { connected_at: at, ..Details::default() })]
        }
        "transcript" => {
            // `payload.timestamp_utc` is a string of unknown unit ("111111" in the docs): it
            // is not interpreted, and travels in vendor_extra.
            let utterance = p.utterance("/payload", "type", "transcript", None)?;
            vec![Draft::new(
                EventType::TranscriptSegment,
                Details { transcript: Some(vec![utterance]), ..Details::default() },
            )]
        }
        "call_ended" => {
            let end = End { reason: EndReason::CompletedUnspecified, reason_raw: None, by: EndedBy::Unknown };
            let ended = Details { status: Some(Status::Completed), end: Some(end), ended_at: at, ..Details::default() };
            let mut events = vec![Draft::new(EventType::CallEnded, ended)];
            let transcript = (0..p.len("/payload/transcript"))
                .map(|i| p.utterance(&format!("/payload/transcript/{i}"), "type", "message", None))
                .collect::<Result<Vec<_>, Violation>>()?;
            if transcript.is_empty() {
                p.consume("/payload/transcript");
            } else {
                events.push(Draft::new(
                    EventType::TranscriptFinal,
                    Details { transcript: Some(transcript), ..Details::default() },
                ));
            }
            events
        }
        "error" => {
            let message = p
                .str("/payload/error_message")
                .ok_or_else(|| Violation::new("/payload/error_message", "error message is missing"))?;
            vec![Draft::new(EventType::CallError, Details { error: Some(ErrorInfo { message }), ..Details::default() })]
        }
        other => {
            return Err(Violation::new("/event_type", format!("no mapping for salpre {other}")));
        }
    };
    Ok(Mapped { common, metadata: Default::default(), variables: Default::default(), events })
}
