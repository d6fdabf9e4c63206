//! A read-only view of a validated vendor payload that remembers what the mapper consumed.
//!
//! Principle 3 of `canonical.md` — nothing a vendor sent is lost — is enforced here rather than
//! in each adapter: every field an adapter reads through [`Payload`] is marked as mapped, and
//! [`Payload::residual`] returns everything else, with its original names and nesting, for
//! `data.vendor_extra`. An adapter that cannot represent a value faithfully simply does not
//! consume it, and the raw value travels in `vendor_extra` instead.

use std::{cell::RefCell, collections::BTreeSet, fmt::Write as _};

use serde_json::{Map, Value};

use super::{Direction, Utterance, convert};
use crate::vendors::Violation;

pub struct Payload<'a> {
    root: &'a Value,
    /// JSON pointers of consumed values (a consumed value is consumed with all it contains).
    /// Ordered, so that "is anything below this container consumed?" is one range lookup.
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Payload<'a> {
    pub fn new(root: &'a Value) -> Self {
        Payload { root, used: RefCell::default() }
    }

    /// Looks a value up without consuming it.
    pub fn peek(&self, pointer: &str) -> Option<&'a Value> {
        lookup(self.root, pointer)
    }

    /// Marks a pointer as mapped, whether or not it exists.
    pub fn consume(&self, pointer: &str) {
        let mut used = self.used.borrow_mut();
        if !used.contains(pointer) {
            used.insert(pointer.to_owned());
        }
    }

    pub fn str(&self, pointer: &str) -> Option<String> {
        match self.peek(pointer)? {
            Value::String(s) => {
                self.consume(pointer);
                Some(s.clone())
            }
            Value::Null => {
                self.consume(pointer);
                None
            }
            _ => None,
        }
    }

    /// A string or integer id, as a string.
    pub fn id(&self, pointer: &str) -> Option<String> {
        let value = self.peek(pointer)?;
        let id = convert::id_string(value);
        if id.is_some() || value.is_null() {
            self.consume(pointer);
        }
        id
    }

    pub fn i64(&self, pointer: &str) -> Option<i64> {
        let value = self.peek(pointer)?;
        match value.as_i64() {
            Some(n) => {
                self.consume(pointer);
                Some(n)
            }
            None => {
                if value.is_null() {
                    self.consume(pointer);
                }
                None
            }
        }
    }

    pub fn bool(&self, pointer: &str) -> Option<bool> {
        let b = self.peek(pointer)?.as_bool()?;
        self.consume(pointer);
        Some(b)
    }

    /// An object copied whole (vox `metadata`, `dynamic_variables`); absent or null is `{}`.
    pub fn object(&self, pointer: &str) -> Map<String, Value> {
        match self.peek(pointer) {
            Some(Value::Object(map)) => {
                self.consume(pointer);
                map.clone()
            }
            Some(Value::Null) => {
                self.consume(pointer);
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
            Some(Value::Null) => {
                self.consume(pointer);
                false
            }
            _ => false,
        }
    }

    /// A direction word (`inbound`, `outgoing`…); consumed only when it maps to a known
    /// direction, so an unknown word stays in `vendor_extra`.
    pub fn direction(&self, pointer: &str) -> Direction {
        let direction = self.peek(pointer).and_then(Value::as_str).map_or(Direction::Unknown, convert::direction);
        if direction != Direction::Unknown {
            self.consume(pointer);
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
        let field = |key: &str| {
            let pointer = format!("{at}/{key}");
            self.str(&pointer).ok_or_else(|| Violation::new(pointer, format!("{key} is missing")))
        };
        let role_raw = field(role_key)?;
        let text = field(text_key)?;
        Ok(Utterance { role: convert::role(&role_raw), role_raw, text, at: time })
    }

    /// Length of an array (0 when absent or not an array), without consuming it.
    pub fn len(&self, pointer: &str) -> usize {
        self.peek(pointer).and_then(Value::as_array).map_or(0, Vec::len)
    }

    /// Everything not consumed, with original names and nesting; empty containers that were
    /// partly consumed are left out.
    pub fn residual(&self) -> Map<String, Value> {
        let used = self.used.borrow();
        let mut pointer = String::new();
        match residual(self.root, &mut pointer, &used) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// What is left of `value` (at `pointer`) once the consumed pointers are taken out.
/// `pointer` is a reused buffer: each level appends its token and truncates it again.
fn residual(value: &Value, pointer: &mut String, used: &BTreeSet<String>) -> Option<Value> {
    if !pointer.is_empty() {
        if used.contains(pointer.as_str()) {
            return None;
        }
        // Is anything below this value consumed? The first used pointer after "{pointer}/"
        // in order starts with that prefix exactly when one is.
        pointer.push('/');
        let after = (std::ops::Bound::Included(pointer.as_str()), std::ops::Bound::Unbounded);
        let partly = used.range::<str, _>(after).next().is_some_and(|p| p.starts_with(pointer.as_str()));
        pointer.pop();
        if !partly {
            return Some(value.clone());
        }
    }
    let len = pointer.len();
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, child) in map {
                pointer.push('/');
                pointer.push_str(&escape(key));
                if let Some(rest) = residual(child, pointer, used) {
                    out.insert(key.clone(), rest);
                }
                pointer.truncate(len);
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut rest = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                pointer.push('/');
                let _ = write!(pointer, "{i}");
                rest.push(residual(item, pointer, used).unwrap_or(Value::Null));
                pointer.truncate(len);
            }
            // Positions matter in an array, so a partly consumed array keeps its length and
            // shows consumed items as null; an array with nothing left disappears.
            rest.iter().any(|v| !v.is_null()).then_some(Value::Array(rest))
        }
        other => Some(other.clone()),
    }
}

/// `Value::pointer` without its two allocations per token (it unescapes every token, even
/// those with nothing to unescape): this runs for every field every adapter reads.
fn lookup<'v>(root: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() {
        return Some(root);
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').try_fold(root, |value, token| {
        let token: std::borrow::Cow<'_, str> =
            if token.contains('~') { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() };
        match value {
            Value::Object(map) => map.get(token.as_ref()),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    })
}

/// RFC 6901 escaping of one reference token.
pub fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) { key.replace('~', "~0").replace('/', "~1").into() } else { key.into() }
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
