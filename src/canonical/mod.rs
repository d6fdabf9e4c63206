//! The canonical call-event model (`canonical.md`): CloudEvents 1.0 envelopes around one
//! vendor-neutral `data` shape, plus the conversions every vendor adapter shares.
//!
//! Adapters never build [`CloudEvent`]s themselves: they return a [`Mapped`] (facts common to
//! the payload plus one [`Draft`] per canonical event), and [`Mapped::finish`] adds the
//! envelope — deterministic ids, `subject`, `time` — the same way for every vendor.

pub mod convert;
pub mod lookup;
pub mod paths;
pub mod payload;
pub mod sample;

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Defined, with its dispatch, by the one vendor list in `vendors`.
pub use crate::vendors::Vendor;
pub use payload::Payload;

/// Version of the `data` shape; bumped only on a breaking change.
pub const SCHEMA_VERSION: u8 = 1;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value whose text this is.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| serde::de::Error::unknown_variant(&text, &[$($text),+]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // For the admin API's OpenAPI document: a string of these words.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .enum_values(Some([$($text),+]))
                        .build(),
                ))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}

// After the macro: `call` declares enums with it.
pub mod call;
pub mod completed;

string_enum! {
    /// Canonical event types (`canonical.md` §3).
    EventType {
        CallInitiated = "call.initiated",
        CallRinging = "call.ringing",
        CallConnected = "call.connected",
        CallTransferred = "call.transferred",
        CallLegEnded = "call.leg.ended",
        CallEnded = "call.ended",
        CallFailed = "call.failed",
        CallError = "call.error",
        CallAnalyzed = "call.analyzed",
        CallRecordingReady = "call.recording.ready",
        CallFlowTransition = "call.flow_transition",
        CallCdr = "call.cdr",
        TranscriptSegment = "transcript.segment",
        TranscriptPartial = "transcript.partial",
        TranscriptFinal = "transcript.final",
        SmsReceived = "sms.received",
        CallCompleted = "call.completed",
    }
}

string_enum! {
    /// The webhook version of a vendor that has several (vox `v1` / `v2`).
    VendorFormat { V1 = "v1", V2 = "v2" }
}

string_enum! {
    Direction { Inbound = "inbound", Outbound = "outbound", Internal = "internal", Unknown = "unknown" }
}

string_enum! {
    /// Terminal call status (`canonical.md` §6).
    Status { Completed = "completed", NoAnswer = "no_answer", Busy = "busy", Canceled = "canceled", Failed = "failed" }
}

string_enum! {
    EndReason {
        CustomerHangup = "customer_hangup",
        AgentHangup = "agent_hangup",
        Transferred = "transferred",
        Voicemail = "voicemail",
        SilenceTimeout = "silence_timeout",
        MaxDuration = "max_duration",
        NoAnswer = "no_answer",
        Busy = "busy",
        Declined = "declined",
        Canceled = "canceled",
        InvalidNumber = "invalid_number",
        DialFailed = "dial_failed",
        CapacityLimit = "capacity_limit",
        Billing = "billing",
        PlatformError = "platform_error",
        CompletedUnspecified = "completed_unspecified",
        Unknown = "unknown",
    }
}

string_enum! {
    EndedBy { Customer = "customer", Agent = "agent", System = "system", Unknown = "unknown" }
}

string_enum! {
    Role { Agent = "agent", Customer = "customer", System = "system", Tool = "tool", Unknown = "unknown" }
}

string_enum! {
    Sentiment { Positive = "positive", Neutral = "neutral", Negative = "negative", Unknown = "unknown" }
}

string_enum! {
    TransferType { Blind = "blind", Attended = "attended", Unknown = "unknown" }
}

impl EventType {
    /// The terminal event for a status: `call.ended` ⇔ `completed`, else `call.failed`.
    pub fn for_end(status: Status) -> EventType {
        match status {
            Status::Completed => EventType::CallEnded,
            Status::NoAnswer | Status::Busy | Status::Canceled | Status::Failed => EventType::CallFailed,
        }
    }
}

/// A canonical event as CloudEvents 1.0 structured-mode JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudEvent {
    #[serde(skip_deserializing, default = "de::spec_version")]
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub subject: String,
    pub time: String,
    #[serde(skip_deserializing, default = "de::content_type")]
    pub datacontenttype: &'static str,
    pub data: EventData,
}

/// `data` of a canonical event: the facts common to the payload, then the event's own.
/// The parts every event of a payload shares are shared, not copied, between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventData {
    #[serde(flatten)]
    pub common: Arc<Common>,
    #[serde(flatten)]
    pub details: Details,
    pub metadata: Arc<Map<String, Value>>,
    pub variables: Arc<Map<String, Value>>,
    pub vendor_extra: Arc<Map<String, Value>>,
}

/// Fields every event made from one payload shares (`canonical.md` §4, first table).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Common {
    pub schema_version: u8,
    pub vendor: Vendor,
    pub source: String,
    pub vendor_event: String,
    pub vendor_format: Option<VendorFormat>,
    pub test: bool,
    pub call_id: String,
    pub agent_id: Option<String>,
    pub direction: Direction,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_e164: Option<String>,
    pub to_e164: Option<String>,
    pub occurred_at: Option<String>,
    pub received_at: String,
}

/// Fields present only when the event carries them (`canonical.md` §4, second table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub talk_duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Vec<Utterance>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<Sms>,
    /// `call.completed` only: how the call was completed and what it lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<Box<completed::Completion>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct End {
    pub reason: EndReason,
    pub reason_raw: Option<String>,
    pub by: EndedBy,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Utterance {
    pub role: Role,
    pub role_raw: String,
    pub text: String,
    pub at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Analysis {
    pub summary: Option<String>,
    pub outcome: Option<String>,
    pub sentiment: Option<Sentiment>,
    pub sentiment_raw: Option<String>,
    #[schema(value_type = Object)]
    pub extracted: Map<String, Value>,
}

impl Analysis {
    /// An analysis with nothing known.
    pub fn empty() -> Self {
        Analysis { summary: None, outcome: None, sentiment: None, sentiment_raw: None, extracted: Map::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cost {
    #[schema(value_type = Option<f64>)]
    pub amount: Option<serde_json::Number>,
    pub unit: Option<String>,
    #[schema(value_type = Option<f64>)]
    pub billed_seconds: Option<serde_json::Number>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfer {
    #[serde(rename = "type")]
    pub kind: TransferType,
    pub target: Option<String>,
    pub related_call_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowNode {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub from_node: FlowNode,
    pub to_node: FlowNode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sms {
    pub from: Option<String>,
    pub to: Option<String>,
    pub text: String,
}

/// One canonical event an adapter wants emitted, before the envelope is added.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: EventType,
    pub details: Details,
}

impl Draft {
    pub fn new(kind: EventType, mut details: Details) -> Self {
        // `call.analyzed` promises an analysis: when the vendor sent neither analysis nor
        // cost, it is present with nothing known rather than missing.
        if kind == EventType::CallAnalyzed && details.analysis.is_none() && details.cost.is_none() {
            details.analysis = Some(Analysis::empty());
        }
        Draft { kind, details }
    }
}

/// What an adapter makes of one payload: shared facts and the events in emission order.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub common: Common,
    pub metadata: Map<String, Value>,
    pub variables: Map<String, Value>,
    pub events: Vec<Draft>,
}

impl Mapped {
    /// A payload's events with no metadata or variables (only vox sends those).
    pub fn new(common: Common, events: Vec<Draft>) -> Self {
        Mapped { common, metadata: Map::new(), variables: Map::new(), events }
    }

    /// Wraps every draft in its CloudEvents envelope. `key` is the payload's dedup key: the
    /// SHA-256 of the raw body, or of its vendor event identity under `dedup = "event"`
    /// (`vendors::Key`), so ids are a pure function of (source, key, position) and survive
    /// redelivery.
    pub fn finish(self, key: &[u8; 32], vendor_extra: Map<String, Value>) -> Vec<CloudEvent> {
        let Mapped { common, metadata, variables, events } = self;
        let (metadata, variables, vendor_extra) = (Arc::new(metadata), Arc::new(variables), Arc::new(vendor_extra));
        // Per source, not per vendor: two accounts of one vendor may reuse call ids
        // (canonical.md §2), and a call's delivery order is kept per (route, subject).
        let subject = format!("{}:{}", common.source, common.call_id);
        let time = common.occurred_at.clone().unwrap_or_else(|| common.received_at.clone());
        let source = format!("/callgate/sources/{}", common.source);
        let ids = EventIds::new(&common.source, key);
        let common = Arc::new(common);
        events
            .into_iter()
            .enumerate()
            .map(|(index, draft)| CloudEvent {
                specversion: "1.0",
                id: ids.id(index),
                source: source.clone(),
                kind: draft.kind,
                subject: subject.clone(),
                time: time.clone(),
                datacontenttype: "application/json",
                data: EventData {
                    common: common.clone(),
                    details: draft.details,
                    metadata: metadata.clone(),
                    variables: variables.clone(),
                    vendor_extra: vendor_extra.clone(),
                },
            })
            .collect()
    }
}

/// Event ids: `ce_` + 32 hex digits of SHA-256(source ‖ "\n" ‖ hex(key) ‖ "\n" ‖ index),
/// where the key is SHA-256(body) (or of the event identity, `dedup = "event"`). The hash state
/// after the part shared by one payload's events is computed once.
struct EventIds(Sha256);

impl EventIds {
    fn new(source: &str, key: &[u8; 32]) -> Self {
        let mut hex = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the digest's length.
        let _ = hex::encode_to_slice(key, &mut hex);
        let mut hasher = Sha256::new();
        hasher.update(source.as_bytes());
        hasher.update(b"\n");
        hasher.update(hex);
        hasher.update(b"\n");
        EventIds(hasher)
    }

    fn id(&self, index: usize) -> String {
        let mut hasher = self.0.clone();
        hasher.update(index.to_string().as_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; 35];
        id[..3].copy_from_slice(b"ce_");
        let _ = hex::encode_to_slice(&digest[..16], &mut id[3..]);
        String::from_utf8_lossy(&id).into_owned()
    }
}

/// Reading a stored [`CloudEvent`] back: the fields callgate always writes with one fixed value
/// get it back (their text is not read).
mod de {
    pub(super) fn spec_version() -> &'static str {
        "1.0"
    }

    pub(super) fn content_type() -> &'static str {
        "application/json"
    }
}

/// SHA-256 of a raw body.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}
