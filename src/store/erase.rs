//! Erasure: everything stored of one call, or of every call of one phone number
//! ([`Store::erase`](super::Store::erase)), the part both backends share.
//!
//! A call is its subject. A number is matched as sent and in E.164 ([`Number::parse`]): an event
//! carries it when one of its number fields (`canonical::paths::NUMBER_FIELDS`) holds either
//! form, and its calls are the subjects of those events, found by a scan of the events (rare
//! enough not to be worth an index: each backend first keeps the rows whose JSON contains a
//! form as text, then [`carries`] reads their number fields). What each backend then deletes
//! for those subjects, in one transaction: their outbox rows (cancelled: no dead letter, no
//! attempt), dead letters, delivery-log rows (test sends hold sample data and stay), events,
//! call summaries, the payloads those events came from (a payload that also produced events
//! of another call keeps its row, so the other call's events and the redelivery key stay, but
//! its body is emptied), payloads and quarantined bodies that contain one of the [`needles`]
//! (a form of the number — also the other notation its events hold beside a form, [`notations`]
//! — or a call id in the bodies of the call's source).
//! The drift report holds no number in its paths (digits folded into `#`) nor in the examples
//! of new fields (shapes only); only the raw word of an unknown value (an enumerated field a
//! vendor filled with something else) could, so a number erasure deletes the drift rows whose
//! value or example holds a form of the number.

use std::collections::BTreeSet;

use phonenumber::country;
use serde_json::Value;

use crate::canonical::{convert, paths::NUMBER_FIELDS};

/// What to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// One call, by its subject (`{source}:{call_id}`).
    Call(String),
    /// Every call whose events carry this number.
    Number(Number),
}

impl Erasure {
    /// `call` or `number`, for the log (which never holds the number).
    pub fn kind(&self) -> &'static str {
        match self {
            Erasure::Call(_) => "call",
            Erasure::Number(_) => "number",
        }
    }
}

/// A phone number in each form a stored event may hold it in: as the operator sent it
/// (trimmed) and in E.164 (international, or national with a source's region).
#[derive(Clone, PartialEq, Eq)]
pub struct Number {
    forms: Vec<String>,
}

impl std::fmt::Debug for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Number({} forms)", self.forms.len()) // never the number itself
    }
}

/// Why a value is no phone number to erase by (never repeating it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("`number` is empty")]
    Empty,
    #[error("`number` is longer than {MAX_NUMBER} characters")]
    TooLong,
    #[error("`number` may not hold control characters")]
    Control,
    #[error("`number` must hold at least {MIN_DIGITS} digits")]
    TooFewDigits,
}

/// Longest number taken (E.164 has 15 digits; a number as sent has some punctuation).
pub const MAX_NUMBER: usize = 64;
/// Fewest digits: a PBX extension or a word (`anonymous`) would match unrelated calls.
pub const MIN_DIGITS: usize = 7;

impl Number {
    /// The forms of `raw`: as sent, E.164 when it is international, and E.164 with each of
    /// `regions` (the configured sources') when it is national.
    pub fn parse(raw: &str, regions: impl IntoIterator<Item = country::Id>) -> Result<Number, NumberError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(NumberError::Empty);
        }
        if raw.chars().count() > MAX_NUMBER {
            return Err(NumberError::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(NumberError::Control);
        }
        if raw.chars().filter(char::is_ascii_digit).count() < MIN_DIGITS {
            return Err(NumberError::TooFewDigits);
        }
        let mut forms = vec![raw.to_owned()];
        let e164 = std::iter::once(convert::e164(Some(raw), None))
            .chain(regions.into_iter().map(|region| convert::e164(Some(raw), Some(region))));
        for form in e164.flatten() {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        Ok(Number { forms })
    }

    /// Every form, the one as sent first.
    pub fn forms(&self) -> &[String] {
        &self.forms
    }

    /// This number with more forms (the [`notations`] its events hold), each once.
    pub fn with_forms(&self, more: impl IntoIterator<Item = String>) -> Number {
        let mut forms = self.forms.clone();
        for form in more {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        Number { forms }
    }
}

/// What a number erasure's scan of the events found: the calls whose events carry the number
/// (each event's JSON parsed once), and the other notations those events hold beside it.
pub struct Found<'a> {
    number: &'a Number,
    pub subjects: BTreeSet<String>,
    notations: Vec<String>,
}

impl<'a> Found<'a> {
    pub fn new(number: &'a Number) -> Found<'a> {
        Found { number, subjects: BTreeSet::new(), notations: Vec::new() }
    }

    /// One event the scan read (its JSON holds a form of the number as text somewhere).
    pub fn consider(&mut self, subject: String, json: &str) {
        let Ok(event) = serde_json::from_str::<Value>(json) else { return };
        if carried(&event, self.number.forms()) {
            for other in notations_in(&event, self.number.forms()) {
                if !self.notations.contains(&other) {
                    self.notations.push(other);
                }
            }
            self.subjects.insert(subject);
        }
    }

    /// The calls, and the erasure widened by the notations found (`None`: the number as given).
    pub fn finish(self) -> (BTreeSet<String>, Option<Erasure>) {
        let widened = (!self.notations.is_empty()).then(|| Erasure::Number(self.number.with_forms(self.notations)));
        (self.subjects, widened)
    }
}

/// Whether a stored event's JSON holds one of `forms` in a number field.
pub fn carries(json: &str, forms: &[String]) -> bool {
    serde_json::from_str::<Value>(json).is_ok_and(|event| carried(&event, forms))
}

fn carried(event: &Value, forms: &[String]) -> bool {
    NUMBER_FIELDS.iter().any(|path| {
        let found = path.split('.').try_fold(event, |at, key| at.get(key));
        matches!(found, Some(Value::String(s)) if forms.iter().any(|f| f == s))
    })
}

/// The number fields that hold one number in two notations: as the vendor sent it, and in
/// E.164.
const NOTATIONS: [(&str, &str); 2] = [("data.from", "data.from_e164"), ("data.to", "data.to_e164")];

/// The other notation of each of `forms` that a stored event's JSON holds beside it (its
/// `from` as the vendor wrote it for a matching `from_e164`, and the reverse): the payloads and
/// quarantined bodies a vendor sent hold that one.
pub fn notations(json: &str, forms: &[String]) -> Vec<String> {
    serde_json::from_str::<Value>(json).map_or_else(|_| Vec::new(), |event| notations_in(&event, forms))
}

fn notations_in(event: &Value, forms: &[String]) -> Vec<String> {
    let at = |path: &str| match path.split('.').try_fold(event, |at, key| at.get(key)) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for (sent, e164) in NOTATIONS {
        let (a, b) = (at(sent), at(e164));
        for (this, other) in [(&a, &b), (&b, &a)] {
            if let (Some(this), Some(other)) = (this, other)
                && forms.contains(this)
                && !forms.contains(other)
                && !out.contains(other)
                && other.chars().filter(char::is_ascii_digit).count() >= MIN_DIGITS
            {
                out.push(other.clone());
            }
        }
    }
    out
}

/// The call id of a subject (`{source}:{call_id}`) with its source.
pub fn split_subject(subject: &str) -> Option<(&str, &str)> {
    subject.split_once(':').filter(|(source, id)| !source.is_empty() && !id.is_empty())
}

/// What a payload or quarantined body is searched for: each form of the number (in any
/// source's bodies), and each erased call's id as a JSON token (in its own source's bodies
/// only): the string `"id"`, and for a numeric id the number after a key (`:id,`, `:id}`, with
/// or without a space), so a short id does not match every body that holds its characters.
pub fn needles<'a>(erasure: &Erasure, subjects: impl IntoIterator<Item = &'a String>) -> Vec<Needle> {
    let mut out: BTreeSet<Needle> = BTreeSet::new();
    if let Erasure::Number(number) = erasure {
        for form in number.forms() {
            out.insert(Needle { source: None, bytes: form.as_bytes().to_vec() });
        }
    }
    for subject in subjects {
        let Some((source, id)) = split_subject(subject) else { continue };
        let mut tokens = vec![format!("\"{id}\"")];
        if id.bytes().all(|b| b.is_ascii_digit()) {
            tokens.extend([format!(":{id},"), format!(":{id}}}"), format!(": {id},"), format!(": {id}}}")]);
        }
        for token in tokens {
            out.insert(Needle { source: Some(source.to_owned()), bytes: token.into_bytes() });
        }
    }
    out.into_iter().collect()
}

/// Bytes to find in a body, in the bodies of one source or (`None`) of every source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Needle {
    pub source: Option<String>,
    pub bytes: Vec<u8>,
}

/// What an erasure removed, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Calls (subjects) whose events were erased.
    pub calls: usize,
    /// Canonical events.
    pub events: usize,
    /// Accepted payloads deleted, or emptied where they also produced another call's events.
    pub payloads: usize,
    /// Pending deliveries cancelled (left the outbox without being sent again).
    pub outbox_cancelled: usize,
    pub dead_letters: usize,
    /// Delivery-log rows (attempts).
    pub log_rows: usize,
    /// Quarantined payloads whose body held the number or a call id.
    pub quarantined: usize,
    /// Drift report rows whose unknown value held the number (a number erasure only).
    pub drift_rows: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_matched_as_sent_and_in_e164() {
        let n = Number::parse(" +1 (415) 555-0123 ", []).unwrap();
        assert_eq!(n.forms(), ["+1 (415) 555-0123", "+14155550123"]);
        let e164 = Number::parse("+14155550123", []).unwrap();
        assert_eq!(e164.forms(), ["+14155550123"], "no form twice");
        let national = Number::parse("010-1234-5678", [country::Id::KR, country::Id::KR]).unwrap();
        assert_eq!(national.forms(), ["010-1234-5678", "+821012345678"], "with each source's region");
        assert_eq!(Number::parse("010-1234-5678", []).unwrap().forms(), ["010-1234-5678"], "no region: as sent only");
        assert_eq!(format!("{national:?}"), "Number(2 forms)", "Debug never shows it");
    }

    #[test]
    fn what_is_no_number_is_refused_without_repeating_it() {
        assert_eq!(Number::parse("  ", []), Err(NumberError::Empty));
        assert_eq!(Number::parse("anonymous", []), Err(NumberError::TooFewDigits));
        assert_eq!(Number::parse("100", []), Err(NumberError::TooFewDigits));
        assert_eq!(Number::parse(&"1".repeat(65), []), Err(NumberError::TooLong));
        assert_eq!(Number::parse("+1415\0 5550123", []), Err(NumberError::Control));
        for e in [NumberError::Empty, NumberError::TooLong, NumberError::Control, NumberError::TooFewDigits] {
            assert!(e.to_string().starts_with("`number`"), "{e}");
        }
    }

    #[test]
    fn an_event_carries_a_number_only_in_its_number_fields() {
        let forms = vec!["+14155550123".to_owned(), "(415) 555-0123".to_owned()];
        let event = |data: Value| serde_json::json!({ "id": "e", "data": data }).to_string();
        assert!(carries(&event(serde_json::json!({ "from": "(415) 555-0123" })), &forms));
        assert!(carries(&event(serde_json::json!({ "to_e164": "+14155550123" })), &forms));
        assert!(carries(&event(serde_json::json!({ "sms": { "to": "+14155550123" } })), &forms));
        assert!(carries(&event(serde_json::json!({ "transfer": { "target": "+14155550123" } })), &forms));
        assert!(!carries(&event(serde_json::json!({ "from": "+14155550124" })), &forms));
        assert!(!carries(&event(serde_json::json!({ "summary": "call +14155550123" })), &forms), "not a number field");
        assert!(!carries(&event(serde_json::json!({ "from": 14155550123u64 })), &forms));
        assert!(!carries("not json", &forms));
    }

    #[test]
    fn an_event_gives_the_other_notation_of_a_number_it_carries() {
        let forms = vec!["+14155550123".to_owned()];
        let event = |data: Value| serde_json::json!({ "id": "e", "data": data }).to_string();
        let both = event(serde_json::json!({
            "from": "(415) 555-0123", "from_e164": "+14155550123", "to": "1001", "to_e164": null,
        }));
        assert_eq!(notations(&both, &forms), ["(415) 555-0123"]);
        let reverse = event(serde_json::json!({ "to": "+14155550123", "to_e164": "14155550123" }));
        assert_eq!(notations(&reverse, &forms), ["14155550123"]);
        let other = event(serde_json::json!({ "from": "(415) 555-0199", "from_e164": "+14155550199" }));
        assert!(notations(&other, &forms).is_empty(), "another number's notations are not taken");
        let short = event(serde_json::json!({ "from": "555-01", "from_e164": "+14155550123" }));
        assert!(notations(&short, &forms).is_empty(), "too few digits to search bodies for");
        let number = Number::parse("+14155550123", []).unwrap().with_forms(notations(&both, &forms));
        assert_eq!(number.forms(), ["+14155550123", "(415) 555-0123"]);
    }

    #[test]
    fn needles_are_the_numbers_anywhere_and_call_ids_in_their_source() {
        let number = Erasure::Number(Number::parse("+14155550123", []).unwrap());
        let subjects = ["vox:c-1".to_owned(), "no-colon".to_owned(), "utel:c-2".to_owned()];
        let found = needles(&number, &subjects);
        let shown: Vec<(Option<&str>, &[u8])> =
            found.iter().map(|n| (n.source.as_deref(), n.bytes.as_slice())).collect();
        assert_eq!(
            shown,
            [(None, &b"+14155550123"[..]), (Some("utel"), &br#""c-2""#[..]), (Some("vox"), &br#""c-1""#[..])]
        );
        let call = Erasure::Call("salpre:42".into());
        let numeric: Vec<Vec<u8>> = needles(&call, &["salpre:42".to_owned()]).into_iter().map(|n| n.bytes).collect();
        let expected: [&[u8]; 5] = [br#""42""#, b": 42,", b": 42}", b":42,", b":42}"];
        assert_eq!(numeric, expected.map(<[u8]>::to_vec), "a numeric id as a string or a number");
        assert_eq!((call.kind(), number.kind()), ("call", "number"));
        assert_eq!(split_subject("vox:a:b"), Some(("vox", "a:b")));
        assert_eq!(split_subject(":a"), None);
    }
}
