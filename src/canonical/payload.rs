//! A read-only view of a validated vendor payload that remembers what the mapper consumed.
//!
//! Principle 3 of `canonical.md` — nothing a vendor sent is lost — is enforced here rather than
//! in each adapter: every field an adapter reads through [`Payload`] is marked as mapped, and
//! [`Payload::residual`] returns everything else, with its original names and nesting, for
//! `data.vendor_extra`. An adapter that cannot represent a value faithfully simply does not
//! consume it, and the raw value travels in `vendor_extra` instead.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::{Direction, Role, Utterance, convert};
use crate::vendors::{Degraded, UnknownValue, Violation};

pub struct Payload<'a> {
    root: &'a Value,
    /// Addresses of the consumed values inside `root` (a consumed value is consumed with all
    /// it contains). `root` is borrowed, unchanged, for the view's whole life, so an address
    /// names one value; that makes marking a value one push, with no path string to build.
    used: RefCell<Vec<*const Value>>,
    /// Descriptive fields the adapter could not read (their values stay in `vendor_extra`).
    degraded: RefCell<Vec<Degraded>>,
    /// Enum-like values the adapter's tables do not know, normalised to `unknown`.
    unknown: RefCell<Vec<UnknownValue>>,
}

impl<'a> Payload<'a> {
    pub fn new(root: &'a Value) -> Self {
        Payload { root, used: RefCell::default(), degraded: RefCell::default(), unknown: RefCell::default() }
    }

    /// Reports an enum-like value (an end reason, a status, a role, a sentiment) that the
    /// adapter's table does not know: the event says `unknown` and keeps `raw` beside it.
    pub fn unknown_value(&self, field: &'static str, pointer: &str, raw: &str) {
        self.unknown.borrow_mut().push(UnknownValue::new(field, pointer, raw));
    }

    /// The unknown values reported so far.
    pub fn unknown_values(&self) -> Vec<UnknownValue> {
        self.unknown.borrow().clone()
    }

    /// Reports a descriptive field whose shape the adapter does not know: the event goes out
    /// without that fact, and the value (not consumed) stays in `vendor_extra` as sent.
    pub fn degrade(&self, field: &'static str, pointer: &str, problem: impl Into<String>) {
        self.degraded.borrow_mut().push(Degraded::new(field, pointer, problem));
    }

    /// The degradations reported so far.
    pub fn degradations(&self) -> Vec<Degraded> {
        self.degraded.borrow().clone()
    }

    /// A descriptive value at `pointer`, converted by `convert` ([`Payload::take_with`]); a
    /// value that does not convert is reported as degraded `field`, expected to be `expected`.
    pub fn describe<T>(
        &self,
        field: &'static str,
        pointer: &str,
        expected: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.peek(pointer)?;
        let converted = self.take_with(pointer, convert);
        if converted.is_none() && !value.is_null() {
            self.degrade(field, pointer, format!("expected {expected}, got {}", kind_of(value)));
        }
        converted
    }

    /// A descriptive string ([`Payload::describe`]).
    pub fn describe_str(&self, field: &'static str, pointer: &str) -> Option<String> {
        self.describe(field, pointer, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// A descriptive object copied whole (vox `metadata`, `dynamic_variables`); absent, null or
    /// degraded is `{}`.
    pub fn describe_object(&self, field: &'static str, pointer: &str) -> Map<String, Value> {
        self.describe(field, pointer, "an object", |v| v.as_object().cloned()).unwrap_or_default()
    }

    /// A descriptive id (an agent's, a related call's): a string or an integer
    /// ([`Payload::describe`]).
    pub fn describe_id(&self, field: &'static str, pointer: &str) -> Option<String> {
        self.describe(field, pointer, "a string or an integer", convert::id_string)
    }

    /// A descriptive duration in seconds, as milliseconds ([`Payload::describe`]); a negative
    /// one is degraded too (a duration cannot be).
    pub fn describe_seconds(&self, field: &'static str, pointer: &str) -> Option<i64> {
        self.describe(field, pointer, "a non-negative number of seconds", |v| {
            convert::seconds_to_ms(v).filter(|ms| *ms >= 0)
        })
    }

    /// A descriptive direction word ([`Payload::direction`]); a value that is not a string at
    /// all is reported as degraded `direction` (an unknown word is a known shape: it only
    /// stays in `vendor_extra`).
    pub fn describe_direction(&self, pointer: &str) -> Direction {
        if let Some(value) = self.peek(pointer).filter(|v| !v.is_string() && !v.is_null()) {
            self.degrade("direction", pointer, format!("expected a string, got {}", kind_of(value)));
        }
        self.direction(pointer)
    }

    /// A descriptive transcript at `at`: an array of items with a string `role_key` and
    /// `text_key` (other item keys stay in `vendor_extra`). Absent or null is `None`; any other
    /// shape, or one item of another shape, is reported as degraded `field` and the whole
    /// value stays in `vendor_extra` (half a transcript would misstate the conversation).
    pub fn describe_utterances(
        &self,
        field: &'static str,
        at: &str,
        role_key: &str,
        text_key: &str,
    ) -> Option<Vec<Utterance>> {
        let value = self.peek(at)?;
        let readable =
            |item: &Value| [role_key, text_key].iter().all(|key| item.get(key).is_some_and(Value::is_string));
        match value {
            Value::Null => {
                self.mark(value);
                None
            }
            Value::Array(items) if items.iter().all(readable) => {
                if items.is_empty() {
                    self.mark(value);
                }
                (0..items.len()).map(|i| self.utterance(&format!("{at}/{i}"), role_key, text_key, None).ok()).collect()
            }
            Value::Array(_) => {
                self.degrade(field, at, format!("expected items with a string {role_key} and {text_key}"));
                None
            }
            other => {
                self.degrade(field, at, format!("expected an array, got {}", kind_of(other)));
                None
            }
        }
    }

    /// The pointers of every consumed value, in document order (for tracing and tests).
    pub fn consumed(&self) -> Vec<String> {
        let mut used = self.used.borrow().clone();
        used.sort_unstable();
        used.dedup();
        let mut out = Vec::new();
        consumed_under(self.root, &mut String::new(), &used, &mut out);
        out
    }

    /// Looks a value up without consuming it.
    pub fn peek(&self, pointer: &str) -> Option<&'a Value> {
        lookup(self.root, pointer)
    }

    /// Marks the value at a pointer as mapped (nothing to do when it does not exist).
    pub fn consume(&self, pointer: &str) {
        if let Some(value) = self.peek(pointer) {
            self.mark(value);
        }
    }

    /// Marks a value found through [`Payload::items`] (or `peek`) as mapped.
    pub fn mark(&self, value: &'a Value) {
        self.used.borrow_mut().push(value);
    }

    /// The items of an array (none when absent or not an array), without consuming them.
    pub fn items(&self, pointer: &str) -> &'a [Value] {
        self.peek(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// The value at `pointer` converted by `convert`, consumed only when it converted (or is
    /// `null`, which says "none" as leaving the canonical field out does): a value the adapter
    /// cannot represent stays in `vendor_extra`.
    pub fn take_with<T>(&self, pointer: &str, convert: impl FnOnce(&'a Value) -> Option<T>) -> Option<T> {
        let value = self.peek(pointer)?;
        let converted = convert(value);
        if converted.is_some() || value.is_null() {
            self.mark(value);
        }
        converted
    }

    /// The call id at `pointer` (a string or an integer): it decides the event, so without
    /// one the payload is rejected.
    pub fn required_id(&self, pointer: &str) -> Result<String, Violation> {
        self.id(pointer).ok_or_else(|| Violation::new(pointer, "call id is missing"))
    }

    pub fn str(&self, pointer: &str) -> Option<String> {
        self.str_at(self.peek(pointer)?)
    }

    fn str_at(&self, value: &'a Value) -> Option<String> {
        match value {
            Value::String(s) => {
                self.mark(value);
                Some(s.clone())
            }
            Value::Null => {
                self.mark(value);
                None
            }
            _ => None,
        }
    }

    /// A string or integer id, as a string.
    pub fn id(&self, pointer: &str) -> Option<String> {
        self.take_with(pointer, convert::id_string)
    }

    pub fn i64(&self, pointer: &str) -> Option<i64> {
        self.take_with(pointer, Value::as_i64)
    }

    pub fn bool(&self, pointer: &str) -> Option<bool> {
        self.take_with(pointer, Value::as_bool)
    }

    /// An object copied whole (vox `metadata`, `dynamic_variables`); absent or null is `{}`.
    pub fn object(&self, pointer: &str) -> Map<String, Value> {
        match self.peek(pointer) {
            Some(value @ Value::Object(map)) => {
                self.mark(value);
                map.clone()
            }
            Some(value @ Value::Null) => {
                self.mark(value);
                Map::new()
            }
            _ => Map::new(),
        }
    }

    /// Whether `pointer` holds an object; an explicit `null` there is consumed (it says
    /// "none", which leaving the canonical field out says too).
    pub fn has_object(&self, pointer: &str) -> bool {
        match self.peek(pointer) {
            Some(Value::Object(_)) => true,
            Some(value @ Value::Null) => {
                self.mark(value);
                false
            }
            _ => false,
        }
    }

    /// A direction word (`inbound`, `outgoing`…); consumed only when it maps to a known
    /// direction, so an unknown word stays in `vendor_extra`.
    pub fn direction(&self, pointer: &str) -> Direction {
        let Some(value) = self.peek(pointer) else { return Direction::Unknown };
        let direction = value.as_str().map_or(Direction::Unknown, convert::direction);
        if direction != Direction::Unknown {
            self.mark(value);
        }
        direction
    }

    /// One transcript item at `at`: its speaker under `role_key`, its text under `text_key`.
    pub fn utterance(
        &self,
        at: &str,
        role_key: &str,
        text_key: &str,
        time: Option<String>,
    ) -> Result<Utterance, Violation> {
        let item = self.peek(at);
        let field = |key: &str| {
            item.and_then(|item| item.get(key))
                .and_then(|value| self.str_at(value))
                .ok_or_else(|| Violation::new(format!("{at}/{key}"), format!("{key} is missing")))
        };
        let role_raw = field(role_key)?;
        let text = field(text_key)?;
        let role = convert::role(&role_raw);
        if role == Role::Unknown {
            self.unknown_value("role", &format!("{at}/{role_key}"), &role_raw);
        }
        Ok(Utterance { role, role_raw, text, at: time })
    }

    /// Length of an array (0 when absent or not an array), without consuming it.
    pub fn len(&self, pointer: &str) -> usize {
        self.items(pointer).len()
    }

    /// Everything not consumed, with original names and nesting; empty containers that were
    /// partly consumed are left out.
    pub fn residual(&self) -> Map<String, Value> {
        let mut used = self.used.borrow().clone();
        used.sort_unstable();
        used.dedup();
        match rest(self.root, &used) {
            Rest::Whole => self.root.as_object().cloned().unwrap_or_default(),
            Rest::Part(Value::Object(map)) => map,
            Rest::Part(_) | Rest::Gone => Map::new(),
        }
    }
}

/// The JSON type of a value, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn consumed_under(value: &Value, at: &mut String, used: &[*const Value], out: &mut Vec<String>) {
    if used.binary_search(&(value as *const Value)).is_ok() {
        out.push(at.clone());
        return;
    }
    let len = at.len();
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                consumed_under(child, at, used, out);
                at.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push('/');
                at.push_str(&i.to_string());
                consumed_under(child, at, used, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// What is left of a value once the consumed ones are taken out.
enum Rest {
    /// Nothing in it was consumed: it is kept as it is (cloned only by the caller that keeps it).
    Whole,
    /// It was consumed, or nothing is left of it.
    Gone,
    /// Some of it was consumed: what is left.
    Part(Value),
}

/// `used` is sorted, for binary search. Containers are only rebuilt from the first child that
/// is not whole on; most are untouched and cost one walk, no allocation.
fn rest(value: &Value, used: &[*const Value]) -> Rest {
    if used.binary_search(&(value as *const Value)).is_ok() {
        return Rest::Gone;
    }
    match value {
        Value::Object(map) => {
            let mut children = map.iter();
            let mut whole = 0;
            let (key, child, first) = loop {
                let Some((key, child)) = children.next() else { return Rest::Whole };
                match rest(child, used) {
                    Rest::Whole => whole += 1,
                    other => break (key, child, other),
                }
            };
            let mut out: Map<String, Value> = map.iter().take(whole).map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut keep = |key: &String, child: &Value, part: Rest| match part {
                Rest::Whole => {
                    out.insert(key.clone(), child.clone());
                }
                Rest::Part(left) => {
                    out.insert(key.clone(), left);
                }
                Rest::Gone => {}
            };
            keep(key, child, first);
            for (key, child) in children {
                keep(key, child, rest(child, used));
            }
            if out.is_empty() { Rest::Gone } else { Rest::Part(Value::Object(out)) }
        }
        Value::Array(items) => {
            let mut children = items.iter();
            let mut whole = 0;
            let (item, first) = loop {
                let Some(item) = children.next() else { return Rest::Whole };
                match rest(item, used) {
                    Rest::Whole => whole += 1,
                    other => break (item, other),
                }
            };
            // Positions matter in an array, so a partly consumed array keeps its length and
            // shows consumed items as null; an array with nothing left disappears.
            let left_of = |item: &Value, part: Rest| match part {
                Rest::Whole => item.clone(),
                Rest::Part(left) => left,
                Rest::Gone => Value::Null,
            };
            let mut left: Vec<Value> = Vec::with_capacity(items.len());
            left.extend(items[..whole].iter().cloned());
            left.push(left_of(item, first));
            left.extend(children.map(|item| left_of(item, rest(item, used))));
            if left.iter().all(Value::is_null) { Rest::Gone } else { Rest::Part(Value::Array(left)) }
        }
        _ => Rest::Whole,
    }
}

/// `Value::pointer` without its two allocations per token (it unescapes every token, even
/// those with nothing to unescape): this runs for every field every adapter reads.
fn lookup<'v>(root: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() {
        return Some(root);
    }
    let rest = pointer.strip_prefix('/')?;
    let escaped = rest.contains('~');
    rest.split('/').try_fold(root, |value, token| {
        let token: std::borrow::Cow<'_, str> =
            if escaped { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() };
        match value {
            Value::Object(map) => map.get(token.as_ref()),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn residual_keeps_everything_not_consumed() {
        let body = json!({
            "event": "x",
            "call": {"call_id": "c1", "extra": 1, "transcript": [{"role": "a", "content": "b", "tone": "calm"}, {"role": "c", "content": "d"}]},
            "top": [1, 2],
            "a/b": true
        });
        let p = Payload::new(&body);
        assert_eq!(p.str("/event").as_deref(), Some("x"));
        assert_eq!(p.id("/call/call_id").as_deref(), Some("c1"));
        for i in 0..2 {
            p.str(&format!("/call/transcript/{i}/role"));
            p.str(&format!("/call/transcript/{i}/content"));
        }
        assert_eq!(
            Value::Object(p.residual()),
            json!({"call": {"extra": 1, "transcript": [{"tone": "calm"}, null]}, "top": [1, 2], "a/b": true})
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_consumed() {
        let body = json!({"n": "12", "s": 5, "z": null});
        let p = Payload::new(&body);
        assert_eq!(p.i64("/n"), None);
        assert_eq!(p.str("/s"), None);
        assert_eq!(p.str("/z"), None);
        assert_eq!(Value::Object(p.residual()), json!({"n": "12", "s": 5}));
    }
}
