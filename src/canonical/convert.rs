//! Conversions shared by every adapter: times, phone numbers, roles, directions, sentiment.
//! Each one is total: an input it cannot convert gives `None` or an `Unknown`, never a guess.

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use phonenumber::country;
use serde_json::Value;

use super::{Direction, Role, Sentiment};

/// RFC 3339, UTC, `Z`, millisecond precision: the only time format callgate emits.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Epoch milliseconds (vox) to RFC 3339.
pub fn from_epoch_ms(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).and_then(representable).map(rfc3339)
}

/// Epoch seconds (Salpre) to RFC 3339.
pub fn from_epoch_s(s: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(s, 0).and_then(representable).map(rfc3339)
}

/// RFC 3339 has four-digit years: a time outside years 0000–9999 (such as milliseconds
/// sent where seconds were expected) cannot be written, and is left unconverted.
fn representable(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (0..=9999).contains(&chrono::Datelike::year(&t)).then_some(t)
}

/// An ISO 8601 / RFC 3339 timestamp with a zone (OneInbox) to RFC 3339 UTC.
pub fn from_iso(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| rfc3339(t.with_timezone(&Utc)))
}

/// A zone-less `Y-m-d H:i:s` local time at a fixed UTC offset (Utel: UTC+5) to RFC 3339 UTC.
pub fn from_local(text: &str, offset_hours: i32) -> Option<String> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    let offset = FixedOffset::east_opt(offset_hours * 3600)?;
    let local = offset.from_local_datetime(&naive).single()?;
    Some(rfc3339(local.with_timezone(&Utc)))
}

/// Seconds (integer or fractional) to whole milliseconds.
pub fn seconds_to_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| s.checked_mul(1000))
            .or_else(|| n.as_f64().filter(|s| s.is_finite() && *s >= 0.0).map(|s| (s * 1000.0).round() as i64)),
        _ => None,
    }
}

/// An id that vendors send as a string or an integer, always as a string.
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// E.164 form of a phone number when it can be derived: already international, or national
/// with the source's region. Extensions and unparseable values give `None`.
pub fn e164(raw: Option<&str>, region: Option<country::Id>) -> Option<String> {
    let raw = raw?.trim();
    // Only digits and the usual separators: letters (vanity numbers, extensions such as
    // "ext. 12") would make the parser guess.
    if !raw.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) {
        return None;
    }
    let digits = raw.chars().filter(char::is_ascii_digit).count();
    if digits < 7 {
        return None; // PBX extensions ("100") are never phone numbers.
    }
    // Already E.164: nothing to derive (and no parsing, which is costly).
    if raw.starts_with('+')
        && (8..=16).contains(&raw.len())
        && raw[1..].bytes().all(|b| b.is_ascii_digit())
        && !raw[1..].starts_with('0')
    {
        return Some(raw.to_owned());
    }
    let region = if raw.starts_with('+') { None } else { Some(region?) };
    let number = phonenumber::parse(region, raw).ok()?;
    // What `number.format().mode(Mode::E164)` prints, without the national-format pattern
    // matching that formatter runs first (for every mode, and the costliest part).
    let e164 = format!("+{}{}", number.country().code(), number.national());
    // E.164 allows at most 15 digits, whatever the metadata says.
    let plausible = e164.len() <= 16 && e164.chars().skip(1).all(|c| c.is_ascii_digit());
    (phonenumber::is_valid(&number) && plausible).then_some(e164)
}

/// Transcript roles: OneInbox and vox `agent`/`user`, Salpre `ai`/`customer`.
pub fn role(raw: &str) -> Role {
    match raw.to_ascii_lowercase().as_str() {
        "agent" | "ai" | "assistant" | "bot" => Role::Agent,
        "user" | "customer" => Role::Customer,
        "system" => Role::System,
        "tool" | "tool_call" | "tool_call_invocation" | "tool_call_result" => Role::Tool,
        _ => Role::Unknown,
    }
}

/// Call direction words used by vox (`call_type`) and Salpre (`direction`).
pub fn direction(raw: &str) -> Direction {
    match raw.to_ascii_lowercase().as_str() {
        "inbound" | "incoming" => Direction::Inbound,
        "outbound" | "outgoing" => Direction::Outbound,
        "internal" => Direction::Internal,
        _ => Direction::Unknown,
    }
}

pub fn sentiment(raw: &str) -> Sentiment {
    match raw.to_ascii_lowercase().as_str() {
        "positive" => Sentiment::Positive,
        "neutral" => Sentiment::Neutral,
        "negative" => Sentiment::Negative,
        _ => Sentiment::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_utc_millis() {
        assert_eq!(from_epoch_ms(1775980200000).as_deref(), Some("2026-04-12T07:50:00.000Z"));
        assert_eq!(from_epoch_s(1760084505).as_deref(), Some("2025-10-10T08:21:45.000Z"));
        assert_eq!(from_iso("2026-06-01T10:00:00Z").as_deref(), Some("2026-06-01T10:00:00.000Z"));
        assert_eq!(from_iso("2026-06-01T15:00:00+05:00").as_deref(), Some("2026-06-01T10:00:00.000Z"));
        assert_eq!(from_local("2026-01-13 17:54:36", 5).as_deref(), Some("2026-01-13T12:54:36.000Z"));
        assert_eq!(from_iso("yesterday"), None);
        assert_eq!(from_epoch_s(1707000284555), None, "milliseconds where seconds belong");
        assert_eq!(from_epoch_ms(i64::MAX), None);
    }

    #[test]
    fn seconds_become_milliseconds() {
        assert_eq!(seconds_to_ms(&serde_json::json!(87)), Some(87_000));
        assert_eq!(seconds_to_ms(&serde_json::json!(1.5)), Some(1_500));
        assert_eq!(seconds_to_ms(&serde_json::json!("87")), None);
    }

    #[test]
    fn phone_numbers_normalise_only_when_derivable() {
        let kr = Some(country::Id::KR);
        assert_eq!(e164(Some("+821012345678"), None).as_deref(), Some("+821012345678"));
        assert_eq!(e164(Some("01012345678"), kr).as_deref(), Some("+821012345678"));
        assert_eq!(e164(Some("01012345678"), None), None);
        assert_eq!(e164(Some("100"), Some(country::Id::UZ)), None);
        assert_eq!(e164(Some("999995998"), Some(country::Id::UZ)).as_deref(), Some("+998999995998"));
        // Italian fixed lines keep their leading zero internationally (printed by hand, as
        // libphonenumber's E.164 formatter would).
        assert_eq!(e164(Some("06 6982 1234"), Some(country::Id::IT)).as_deref(), Some("+390669821234"));
        assert_eq!(e164(None, kr), None);
        assert_eq!(e164(Some("+82300GYKR2345677"), None), None, "letters are never guessed into digits");
    }
}
