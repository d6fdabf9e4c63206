//! Vendor adapters: validate a vendor payload against its JSON Schema, then map it to
//! canonical events. One module per vendor; each owns its schemas (under `schemas/<vendor>/`,
//! embedded at build time), its discriminator and its mapping.
//!
//! **Invariant:** adapters are pure. They never touch the network, the store or the clock
//! (`received_at` is handed in), so they are trivially testable and fuzzable.

pub mod inbound;

use std::{borrow::Cow, collections::HashMap, fmt, sync::LazyLock};

use chrono::{DateTime, Utc};
use jsonschema::Validator;
use phonenumber::country;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{self, CloudEvent, Common, Direction, Mapped, Payload, SCHEMA_VERSION, convert};

/// The closed list of a vendor module's events, each naming its schema: `Variant = "name"`
/// embeds `schemas/<vendor>/<name>.json`, so a variant without a schema does not compile.
/// The name is what messages and `vendor_event` show.
macro_rules! events {
    ($vendor:literal { $($(#[$doc:meta])* $variant:ident = $name:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event { $($(#[$doc])* $variant),+ }

        impl Event {
            pub const ALL: &'static [Event] = &[$(Event::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $(Event::$variant => $name),+ }
            }

            pub fn schema(self) -> &'static str {
                match self {
                    $(Event::$variant => include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"), "/schemas/", $vendor, "/", $name, ".json"
                    ))),+
                }
            }
        }
    };
}

/// The one list of vendors. It generates [`Vendor`] (with `ALL`, `as_str`, `parse` and serde
/// names) and the dispatch to each vendor module, so a vendor missing from any table is a
/// compile error. Every vendor module must define:
/// - `Event` (with `events!`) and `fn event(&Value) -> Result<Event, Violation>`, its discriminator;
/// - `fn map(Event, &Payload, &Context) -> MapResult`, its mapping;
/// - `fn identity(Event, &Value) -> Option<Identity>`, the fields that tell one instance of
///   an event from another for `dedup = "event"` (README, "Deduplication"); `None` when a
///   payload lacks them (then the body digest is used).
macro_rules! vendors {
    ($($(#[$doc:meta])* $variant:ident = $name:literal => $module:ident),+ $(,)?) => {
        $(mod $module;)+

        /// The vendors callgate understands. Adding one is a line in `vendors!` plus its module,
        /// schemas and fixtures.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Vendor { $($(#[$doc])* #[serde(rename = $name)] $variant),+ }

        // For the admin API's OpenAPI document, by hand: the derive does not see a
        // `serde(rename)` given through a macro fragment, and would document the Rust names.
        impl utoipa::PartialSchema for Vendor {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .enum_values(Some([$($name),+]))
                        .description(Some("A vendor callgate understands."))
                        .build(),
                ))
            }
        }

        impl utoipa::ToSchema for Vendor {}

        impl Vendor {
            pub const ALL: [Vendor; [$($name),+].len()] = [$(Vendor::$variant),+];
            /// Every vendor name, for help texts and errors.
            pub const NAMES: &'static str = join_names!($($name),+);

            pub fn as_str(self) -> &'static str {
                match self { $(Vendor::$variant => $name),+ }
            }

            pub fn parse(name: &str) -> Option<Vendor> {
                match name { $($name => Some(Vendor::$variant),)+ _ => None }
            }

            /// The event of a payload, from the vendor's discriminator.
            fn event(self, body: &Value) -> Result<VendorEvent, Violation> {
                match self { $(Vendor::$variant => $module::event(body).map(VendorEvent::$variant)),+ }
            }
        }

        /// One vendor's event: what selects the schema and the mapping.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        enum VendorEvent { $($variant($module::Event)),+ }

        impl VendorEvent {
            fn all() -> impl Iterator<Item = VendorEvent> {
                std::iter::empty()
                    $(.chain($module::Event::ALL.iter().map(|e| VendorEvent::$variant(*e))))+
            }

            fn vendor(self) -> Vendor {
                match self { $(VendorEvent::$variant(_) => Vendor::$variant),+ }
            }

            fn name(self) -> &'static str {
                match self { $(VendorEvent::$variant(e) => e.name()),+ }
            }

            fn schema(self) -> &'static str {
                match self { $(VendorEvent::$variant(e) => e.schema()),+ }
            }

            fn map(self, payload: &Payload<'_>, cx: &Context<'_>) -> MapResult {
                match self { $(VendorEvent::$variant(e) => $module::map(e, payload, cx)),+ }
            }

            fn identity(self, body: &Value) -> Option<Identity> {
                match self { $(VendorEvent::$variant(e) => $module::identity(e, body)),+ }
            }
        }
    };
}

macro_rules! join_names {
    ($first:literal $(, $rest:literal)*) => { concat!($first $(, ", ", $rest)*) };
}

/// The `call` object Retell AI and vox.ai share.
mod call_object;
mod dedup;
pub mod drift;

pub use dedup::{Dedup, Identity, Key, KeyedBy};
pub use drift::{Drift, DriftKind, UnknownValue};

vendors! {
    Oneinbox = "oneinbox" => oneinbox,
    Vox = "vox" => vox,
    Salpre = "salpre" => salpre,
    Utel = "utel" => utel,
    Retell = "retell" => retell,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest vendor-derived text (a value, a key, a path) a message repeats, in characters:
/// enough to recognise it, bounded for hostile input.
pub const MAX_ECHO_CHARS: usize = 80;
/// Longest violation message or path, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 200;
/// Most violations listed for one payload: enough to fix it, bounded for hostile input.
pub const MAX_VIOLATIONS: usize = 20;
/// Violations are counted up to this many; beyond it the count says "more than".
pub const MAX_COUNTED: usize = 1000;

/// `text` cut to at most `max` characters (on a char boundary), with `…` when cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A short description of a vendor value for a message: a string's first characters, a
/// scalar as written, a container by its kind (its content is never serialised).
fn preview(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{}\"", cut(s, MAX_ECHO_CHARS / 2)),
        Value::Array(items) => format!("an array of {} item(s)", items.len()),
        Value::Object(map) => format!("an object with {} key(s)", map.len()),
        scalar => cut(&scalar.to_string(), MAX_ECHO_CHARS / 2).into_owned(),
    }
}

/// One problem of a payload, located by a JSON pointer into it. Both parts are cut to 200
/// characters (by `Violation::new`), so a violation never repeats a large vendor value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// JSON pointer into the payload (`""` for the whole body).
    pub path: String,
    /// What is wrong there, at most 200 characters.
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let bounded = |text: String| match cut(&text, MAX_MESSAGE_CHARS) {
            Cow::Borrowed(_) => text,
            Cow::Owned(short) => short,
        };
        Violation { path: bounded(path.into()), message: bounded(message.into()) }
    }

    /// A violation from the schema validator, described without the instance value (the
    /// validator's own message embeds it whole).
    fn from_schema(error: &jsonschema::ValidationError<'_>) -> Self {
        let message = error.masked_with(preview(error.instance())).to_string();
        Violation::new(error.instance_path().to_string(), message)
    }
}

/// A descriptive field in a shape the adapter does not know (canonical.md §1.4): the event
/// went out without that fact and the value is in `vendor_extra`, exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Degraded {
    /// Which fact was lost, from a fixed set per adapter ("transcript", "call_analysis"…):
    /// bounded, so it can label a metric.
    pub field: &'static str,
    /// Where the value is in the payload.
    pub pointer: String,
    /// What was wrong, without the value (bounded).
    pub problem: String,
}

impl Degraded {
    pub fn new(field: &'static str, pointer: &str, problem: impl Into<String>) -> Self {
        let bounded = |text: &str| cut(text, MAX_MESSAGE_CHARS).into_owned();
        Degraded { field, pointer: bounded(pointer), problem: bounded(&problem.into()) }
    }
}

/// What a payload became: its canonical events, in emission order, the descriptive fields
/// that could not be read, and the key it is deduplicated on (its event ids derive from it).
#[derive(Debug, Clone)]
pub struct Normalized {
    pub events: Vec<CloudEvent>,
    pub degraded: Vec<Degraded>,
    /// What the payload shows that the mapping does not know ([`drift`]): new fields, unknown
    /// values, degraded fields.
    pub drift: Vec<Drift>,
    /// The name of the payload's vendor event as its schema is named (`v2/call_ended`): what
    /// the drift report groups by.
    pub schema: &'static str,
    pub key: Key,
}

/// [`Normalized`] plus the pointers of every value the adapter consumed: what the exact
/// "nothing is lost" test checks (consumed ∪ `vendor_extra` = the payload).
#[derive(Debug, Clone)]
pub struct Trace {
    pub normalized: Normalized,
    pub consumed: Vec<String>,
}

/// How many violations a payload has, counted up to [`MAX_COUNTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Exactly(usize),
    MoreThan(usize),
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exactly(1) => f.write_str("1 problem"),
            Count::Exactly(n) => write!(f, "{n} problems"),
            Count::MoreThan(n) => write!(f, "more than {n} problems"),
        }
    }
}

/// Why a payload was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    #[error("body is not valid JSON: {message} at line {line} column {column}")]
    NotJson { message: String, line: usize, column: usize },
    #[error("unknown event for vendor {vendor}: {}", .violation.message)]
    UnknownEvent { vendor: Vendor, violation: Violation },
    /// `violations` lists at most [`MAX_VIOLATIONS`]; `count` says how many there are.
    #[error("payload violates the {vendor} `{event}` schema ({count}{})", listed(.violations.len(), *.count))]
    Invalid { vendor: Vendor, event: &'static str, violations: Vec<Violation>, count: Count },
}

/// ", first N listed" when the list is shorter than the count.
fn listed(shown: usize, count: Count) -> String {
    match count {
        Count::Exactly(n) if n <= shown => String::new(),
        _ => format!(", first {shown} listed"),
    }
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

    fn invalid(event: VendorEvent, violation: Violation) -> Self {
        Rejection::Invalid {
            vendor: event.vendor(),
            event: event.name(),
            violations: vec![violation],
            count: Count::Exactly(1),
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

/// An event's schema, compiled, and the paths it declares (what drift calls known).
struct Compiled {
    validator: Validator,
    known: drift::Known,
}

/// Every vendor schema, compiled once per process. Schemas are embedded, so a failure here is
/// a build defect; [`init`] surfaces it at start-up instead of at the first request.
static VALIDATORS: LazyLock<Result<HashMap<VendorEvent, Compiled>, String>> = LazyLock::new(|| {
    VendorEvent::all()
        .map(|event| {
            let failed = |e: String| format!("schema {}/{}: {e}", event.vendor(), event.name());
            let validator = compile(event.schema()).map_err(failed)?;
            let schema: Value = serde_json::from_str(event.schema()).map_err(|e| failed(e.to_string()))?;
            Ok((event, Compiled { validator, known: drift::Known::of(&schema) }))
        })
        .collect()
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

/// Parses, validates and maps one raw vendor body into canonical events, in emission order,
/// keyed by its body (`dedup = "body"`).
pub fn normalize(origin: &Origin<'_>, body: &[u8], received_at: DateTime<Utc>) -> Result<Normalized, Rejection> {
    normalize_keyed(origin, body, Dedup::Body, received_at)
}

/// [`normalize`] with the source's `dedup`: under [`Dedup::Event`] the payload is keyed (and
/// its event ids derived) by its vendor event identity, or by its body when it has none.
pub fn normalize_keyed(
    origin: &Origin<'_>,
    body: &[u8],
    dedup: Dedup,
    received_at: DateTime<Utc>,
) -> Result<Normalized, Rejection> {
    run(origin, body, dedup, received_at, |_| ())
}

/// The identity `dedup = "event"` keys a payload by, or `None` when it has none (tests and
/// tools; the payload must pass its schema).
pub fn identity(vendor: Vendor, body: &[u8]) -> Result<Option<Identity>, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    let event = vendor.event(&value).map_err(|violation| Rejection::UnknownEvent { vendor, violation })?;
    validate(event, &value)?;
    Ok(event.identity(&value))
}

/// [`normalize`], also returning what the adapter consumed (for tests and tracing tools).
pub fn trace(origin: &Origin<'_>, body: &[u8], received_at: DateTime<Utc>) -> Result<Trace, Rejection> {
    let mut consumed = Vec::new();
    let normalized = run(origin, body, Dedup::Body, received_at, |p| consumed = p.consumed())?;
    Ok(Trace { normalized, consumed })
}

fn not_json(e: &serde_json::Error) -> Rejection {
    Rejection::NotJson { message: json_error_message(e), line: e.line(), column: e.column() }
}

fn run(
    origin: &Origin<'_>,
    body: &[u8],
    dedup: Dedup,
    received_at: DateTime<Utc>,
    inspect: impl FnOnce(&Payload<'_>),
) -> Result<Normalized, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    let vendor = origin.vendor;
    let event = vendor.event(&value).map_err(|violation| Rejection::UnknownEvent { vendor, violation })?;
    validate(event, &value)?;
    let key = match dedup {
        Dedup::Body => Key { digest: canonical::body_digest(body), by: KeyedBy::Body },
        Dedup::Event => match event.identity(&value) {
            Some(identity) => Key { digest: identity.digest(vendor), by: KeyedBy::Event },
            None => Key { digest: canonical::body_digest(body), by: KeyedBy::BodyFallback },
        },
    };
    let payload = Payload::new(&value);
    let cx = Context { origin, received_at: convert::rfc3339(received_at) };
    let mapped = event.map(&payload, &cx).map_err(|violation| Rejection::invalid(event, violation))?;
    inspect(&payload);
    let residual = payload.residual();
    let degraded = payload.degradations();
    let drift = match VALIDATORS.as_ref().ok().and_then(|compiled| compiled.get(&event)) {
        Some(compiled) => drift::of(&compiled.known, &residual, &degraded, &payload.unknown_values()),
        None => Vec::new(), // not reached: `validate` passed
    };
    let events = mapped.finish(&key.digest, residual);
    Ok(Normalized { events, degraded, drift, schema: event.name(), key })
}

/// Checks `value` against the schema of `event`; the violations reported are bounded in
/// number ([`MAX_VIOLATIONS`]), in count ([`MAX_COUNTED`]) and in length ([`Violation`]).
fn validate(event: VendorEvent, value: &Value) -> Result<(), Rejection> {
    let validator = match VALIDATORS.as_ref() {
        Ok(validators) => validators.get(&event).map(|c| &c.validator),
        Err(e) => return Err(Rejection::invalid(event, Violation::new("", e.clone()))),
    };
    let Some(validator) = validator else {
        return Err(Rejection::invalid(event, Violation::new("", "no schema compiled for this event")));
    };
    if validator.is_valid(value) {
        return Ok(());
    }
    let (violations, count) = violations(validator, value);
    Err(Rejection::Invalid { vendor: event.vendor(), event: event.name(), violations, count })
}

/// The first [`MAX_VIOLATIONS`] violations of `value`, and how many there are (counting stops
/// after [`MAX_COUNTED`], so hostile input cannot make counting itself expensive).
fn violations(validator: &Validator, value: &Value) -> (Vec<Violation>, Count) {
    let mut violations = Vec::new();
    let mut seen = 0;
    for error in validator.iter_errors(value).take(MAX_COUNTED + 1) {
        seen += 1;
        if violations.len() < MAX_VIOLATIONS {
            violations.push(Violation::from_schema(&error));
        }
    }
    let count = if seen > MAX_COUNTED { Count::MoreThan(MAX_COUNTED) } else { Count::Exactly(seen) };
    (violations, count)
}

/// serde_json's message without its trailing " at line L column C" (reported separately).
fn json_error_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The discriminator of a payload: the string at `pointer`, looked up with `find`.
fn discriminate<E>(
    body: &Value,
    pointer: &str,
    vendor: Vendor,
    find: impl Fn(&str) -> Option<E>,
) -> Result<E, Violation> {
    let name = match body.pointer(pointer) {
        Some(Value::String(name)) => name,
        Some(_) => return Err(Violation::new(pointer, "event name must be a string")),
        None if !body.is_object() => {
            return Err(Violation::new("", "payload must be a JSON object"));
        }
        None => return Err(Violation::new(pointer, "event name is missing")),
    };
    find(name)
        .ok_or_else(|| Violation::new(pointer, format!("unknown {vendor} event \"{}\"", cut(name, MAX_ECHO_CHARS))))
}

/// [`discriminate`] over the names of an `events!` list.
fn discriminate_named<E: Copy>(
    body: &Value,
    pointer: &str,
    vendor: Vendor,
    all: &[E],
    name: impl Fn(E) -> &'static str,
) -> Result<E, Violation> {
    discriminate(body, pointer, vendor, |found| all.iter().copied().find(|e| name(*e) == found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(vendor: Vendor) -> Origin<'static> {
        Origin { source: vendor.as_str(), vendor, phone_region: None }
    }

    #[test]
    fn every_vendor_schema_compiles() {
        init().unwrap();
        for vendor in Vendor::ALL {
            assert!(VendorEvent::all().any(|e| e.vendor() == vendor), "{vendor} has no schema");
            assert_eq!(Vendor::parse(vendor.as_str()), Some(vendor));
            let json = serde_json::to_value(vendor).unwrap();
            assert_eq!(json, vendor.as_str(), "serde name");
            assert_eq!(serde_json::from_value::<Vendor>(json).unwrap(), vendor);
            assert!(Vendor::NAMES.contains(vendor.as_str()));
        }
        assert_eq!(VALIDATORS.as_ref().unwrap().len(), VendorEvent::all().count());
    }

    #[test]
    fn not_json_reports_position() {
        let err = normalize(&origin(Vendor::Vox), b"{\n  \"event\": ", Utc::now()).unwrap_err();
        match err {
            Rejection::NotJson { line, column, .. } => assert_eq!((line, column), (2, 11)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cut_keeps_a_short_prefix_on_a_char_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("héllo wörld", 4), "héll…");
        assert_eq!(cut(&"한".repeat(100), 3), "한한한…");
    }

    fn rejection(body: Value) -> Rejection {
        normalize(&origin(Vendor::Vox), &serde_json::to_vec(&body).unwrap(), Utc::now()).unwrap_err()
    }

    /// A 900 KB value where a time belongs, and as the event name: neither the violations nor
    /// the rejection's message repeat it.
    #[test]
    fn rejections_never_echo_a_large_vendor_value() {
        let huge = "x".repeat(900 * 1024);
        let wrong_type = serde_json::json!({"event": "call_ended", "call": {"call_id": "c1", "end_timestamp": huge}});
        let unknown_event = serde_json::json!({"event": huge, "call": {"call_id": "c1"}});
        for body in [wrong_type, unknown_event] {
            let rejection = rejection(body);
            let echoed = serde_json::to_string(&rejection.violations()).unwrap().len() + rejection.to_string().len();
            assert!(echoed < 1024, "{echoed} bytes echoed: {rejection}");
        }
    }

    /// Many violations, each about a large value or a large key: the list is capped, its
    /// items are short, and the count stops at MAX_COUNTED.
    #[test]
    fn the_violations_reported_are_bounded_in_number_count_and_length() {
        let validator =
            compile(r#"{"type": "array", "items": {"type": "object", "additionalProperties": false}}"#).unwrap();
        let long = "y".repeat(10_000);
        let mut items: Vec<Value> = (0..3000).map(|_| Value::from(long.as_str())).collect();
        items[0] = serde_json::json!({ long.as_str(): 1 });
        let (violations, count) = violations(&validator, &Value::Array(items));
        assert_eq!(count, Count::MoreThan(MAX_COUNTED));
        assert_eq!(violations.len(), MAX_VIOLATIONS);
        assert!(violations.iter().all(|v| v.message.chars().count() <= MAX_MESSAGE_CHARS + 1), "{violations:?}");
        assert_eq!(violations[1].path, "/1");
        assert_eq!(violations[1].message, format!(r#""{}…" is not of type "object""#, "y".repeat(40)));
        let rejection = Rejection::Invalid { vendor: Vendor::Vox, event: "x", violations, count };
        assert!(rejection.to_string().ends_with("(more than 1000 problems, first 20 listed)"), "{rejection}");
        let (few, count) = super::violations(&validator, &serde_json::json!([1, {}]));
        assert_eq!((few.len(), count), (1, Count::Exactly(1)));
        assert_eq!(few[0].message, r#"1 is not of type "object""#);
    }

    #[test]
    fn a_wrong_typed_string_is_previewed_not_repeated() {
        let rejection = rejection(
            serde_json::json!({"event": "call_ended", "call": {"call_id": "c1", "end_timestamp": "y".repeat(5000)}}),
        );
        let violations = rejection.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].path, "/call/end_timestamp");
        assert!(
            violations[0].message.starts_with(&format!(r#""{}…" is not of type"#, "y".repeat(40))),
            "{violations:?}"
        );
        assert!(rejection.to_string().ends_with("(1 problem)"), "{rejection}");
    }

    /// Under `dedup = "event"` a re-serialised payload gets the same key and so the same event
    /// ids; without its identity fields it is keyed by its body; `body` keys by the bytes.
    #[test]
    fn the_key_and_the_ids_follow_the_dedup_mode() {
        let (one, other) = (
            br#"{"event": "call_started", "call": {"call_id": "c1", "start_timestamp": 1775980200000}}"#.as_slice(),
            b"{\"call\":{\"start_timestamp\":1775980200000,\"call_id\":\"c1\"},\n\"event\":\"call_started\"}"
                .as_slice(),
        );
        let run = |body: &[u8], dedup| normalize_keyed(&origin(Vendor::Vox), body, dedup, Utc::now()).unwrap();
        let ids = |n: &Normalized| n.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let (a, b) = (run(one, Dedup::Event), run(other, Dedup::Event));
        assert_eq!((a.key, a.key.by), (b.key, KeyedBy::Event));
        assert_eq!(ids(&a), ids(&b));
        let (a, b) = (run(one, Dedup::Body), run(other, Dedup::Body));
        assert_eq!((a.key.digest, a.key.by), (canonical::body_digest(one), KeyedBy::Body));
        assert_ne!(ids(&a), ids(&b));
        let timeless = br#"{"event": "call_started", "call": {"call_id": "c1"}}"#;
        let fallback = run(timeless, Dedup::Event);
        assert_eq!((fallback.key.digest, fallback.key.by), (canonical::body_digest(timeless), KeyedBy::BodyFallback));
        assert_eq!(ids(&fallback), ids(&run(timeless, Dedup::Body)));
    }
}
