//! A route's content filter: the six mandatory dialects of the CloudEvents Subscriptions API
//! (`exact`, `prefix`, `suffix`, `all`, `any`, `not`) over event attributes and dotted
//! `data` paths, read from TOML and checked at load against the canonical schema.
//!
//! Semantics (README, "Decisions"): `exact`/`prefix`/`suffix` compare case-sensitively; a
//! table with several attributes matches when every one does (as the Subscriptions API
//! says); names and values are non-empty strings; an attribute that is missing, null, an
//! object or an array does not match; numbers and booleans compare as their JSON text
//! (`342000`, `true`), as the CloudEvents type system writes them as strings.

use std::fmt;

use serde_json::Value;

use super::ConfigError;
use crate::canonical::paths::{self, Shape};

/// One filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every attribute equals its value.
    Exact(Vec<(String, String)>),
    /// Every attribute starts with its value.
    Prefix(Vec<(String, String)>),
    /// Every attribute ends with its value.
    Suffix(Vec<(String, String)>),
    /// Every nested expression matches (at least one).
    All(Vec<Filter>),
    /// At least one nested expression matches (at least one).
    Any(Vec<Filter>),
    /// The nested expression does not match.
    Not(Box<Filter>),
}

const DIALECTS: &str = "exact, prefix, suffix, all, any or not";

impl Filter {
    /// Whether the CloudEvent (as JSON) passes.
    pub fn matches(&self, event: &Value) -> bool {
        let compare = |pairs: &[(String, String)], test: fn(&str, &str) -> bool| {
            pairs.iter().all(|(path, want)| match paths::get(event, path) {
                Some(Value::String(s)) => test(s, want),
                Some(Value::Number(n)) => test(&n.to_string(), want),
                Some(Value::Bool(b)) => test(if *b { "true" } else { "false" }, want),
                _ => false,
            })
        };
        match self {
            Filter::Exact(pairs) => compare(pairs, |have, want| have == want),
            Filter::Prefix(pairs) => compare(pairs, |have, want| have.starts_with(want)),
            Filter::Suffix(pairs) => compare(pairs, |have, want| have.ends_with(want)),
            Filter::All(filters) => filters.iter().all(|f| f.matches(event)),
            Filter::Any(filters) => filters.iter().any(|f| f.matches(event)),
            Filter::Not(filter) => !filter.matches(event),
        }
    }

    /// Reads an expression written at `key` (`routes.crm.filter`), recording every problem
    /// with the full key of the expression it is in (`routes.crm.filter.all[1].prefix`).
    pub fn parse(value: &Value, key: &str, errors: &mut Vec<ConfigError>) -> Option<Filter> {
        let error = |errors: &mut Vec<ConfigError>, key: String, message: String| {
            errors.push(ConfigError { key, message });
            None
        };
        let Value::Object(table) = value else {
            return error(errors, key.into(), format!("must be a table with one dialect: {DIALECTS}"));
        };
        let mut dialects = table.iter();
        let (Some((dialect, body)), None) = (dialects.next(), dialects.next()) else {
            let found: Vec<&str> = table.keys().map(String::as_str).collect();
            let message = if found.is_empty() {
                format!("an expression needs a dialect: {DIALECTS}")
            } else {
                format!("one dialect per expression (found {}); combine them with `all`", found.join(", "))
            };
            return error(errors, key.into(), message);
        };
        let at = format!("{key}.{dialect}");
        match dialect.as_str() {
            "exact" => pairs(body, &at, errors).map(Filter::Exact),
            "prefix" => pairs(body, &at, errors).map(Filter::Prefix),
            "suffix" => pairs(body, &at, errors).map(Filter::Suffix),
            "all" | "any" => {
                let Value::Array(items) = body else {
                    return error(errors, at, "must be an array of filter expressions".into());
                };
                if items.is_empty() {
                    return error(errors, at, "needs at least one filter expression".into());
                }
                let before = errors.len();
                let filters: Vec<Filter> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| Filter::parse(item, &format!("{at}[{i}]"), errors))
                    .collect();
                if errors.len() != before {
                    return None;
                }
                Some(if dialect == "all" { Filter::All(filters) } else { Filter::Any(filters) })
            }
            "not" => Filter::parse(body, &at, errors).map(|f| Filter::Not(Box::new(f))),
            "sql" => error(errors, at, format!("the CloudEvents SQL dialect is not supported (use {DIALECTS})")),
            _ => error(errors, at, format!("unknown filter dialect (use {DIALECTS})")),
        }
    }
}

/// The attribute → value table of `exact`, `prefix` or `suffix`. TOML's dotted keys
/// (`{ data.direction = "inbound" }`, which TOML reads as nested tables) are the same as the
/// quoted `{ "data.direction" = "inbound" }`.
fn pairs(body: &Value, key: &str, errors: &mut Vec<ConfigError>) -> Option<Vec<(String, String)>> {
    let Value::Object(table) = body else {
        errors.push(ConfigError { key: key.into(), message: "must be a table of attribute = \"value\"".into() });
        return None;
    };
    let mut flat = Vec::new();
    flatten(table, "", &mut flat);
    if flat.is_empty() {
        errors.push(ConfigError { key: key.into(), message: "needs at least one attribute = \"value\"".into() });
        return None;
    }
    let before = errors.len();
    let mut pairs = Vec::new();
    for (path, value) in flat {
        let mut problem = |message: String| errors.push(ConfigError { key: key.into(), message });
        let shown = crate::http::cut(&path, 80);
        match paths::shape(&path) {
            Ok(Shape::Value | Shape::Inside) => {}
            Ok(Shape::Object) => problem(format!("`{shown}` is an object: filter on a value inside it")),
            Ok(Shape::Array) => problem(format!("`{shown}` is an array: it cannot be compared with a string")),
            Err(message) => problem(message),
        }
        match value {
            Value::String(s) if s.is_empty() => problem(format!("`{shown}`: the value must not be empty")),
            Value::String(s) => pairs.push((path, s.clone())),
            Value::Bool(_) | Value::Number(_) => {
                problem(format!("`{shown}`: values are strings (write \"{value}\"; it matches {value} in the event)"))
            }
            _ => problem(format!("`{shown}`: values are strings")),
        }
    }
    (errors.len() == before).then_some(pairs)
}

/// Joins nested tables into dotted paths; a leaf is anything that is not a non-empty table.
fn flatten<'a>(table: &'a serde_json::Map<String, Value>, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    for (name, value) in table {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(inner, &path, out),
            _ => out.push((path, value)),
        }
    }
}

/// The expression in one line, as `callgate check` prints it:
/// `all(exact(data.direction = "inbound"), not(suffix(type = ".partial")))`.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, pairs) = match self {
            Filter::Exact(p) => ("exact", p),
            Filter::Prefix(p) => ("prefix", p),
            Filter::Suffix(p) => ("suffix", p),
            Filter::All(filters) | Filter::Any(filters) => {
                f.write_str(if matches!(self, Filter::All(_)) { "all(" } else { "any(" })?;
                for (i, filter) in filters.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{filter}")?;
                }
                return f.write_str(")");
            }
            Filter::Not(filter) => return write!(f, "not({filter})"),
        };
        write!(f, "{name}(")?;
        for (i, (path, value)) in pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{path} = {value:?}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Filter {
        let mut errors = Vec::new();
        let filter = Filter::parse(&value, "routes.r.filter", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        filter.unwrap()
    }

    fn event() -> Value {
        json!({
            "specversion": "1.0", "id": "ce_1", "type": "call.ended", "subject": "vox:c1",
            "data": {
                "direction": "inbound", "test": false, "duration_ms": 342000, "from": null,
                "metadata": {"campaign": "spring_sale", "score": 1.5, "tags": ["a"]},
                "end": {"reason": "agent_hangup"}
            }
        })
    }

    #[test]
    fn each_dialect_matches_as_the_subscriptions_api_says() {
        let e = event();
        let yes = |v: Value| assert!(parse(v.clone()).matches(&e), "{v} should match");
        let no = |v: Value| assert!(!parse(v.clone()).matches(&e), "{v} should not match");
        yes(json!({"exact": {"data.direction": "inbound"}}));
        no(json!({"exact": {"data.direction": "Inbound"}}));
        yes(json!({"exact": {"type": "call.ended", "data.direction": "inbound"}}));
        no(json!({"exact": {"type": "call.ended", "data.direction": "outbound"}}));
        yes(json!({"prefix": {"data.metadata.campaign": "spring_"}}));
        no(json!({"prefix": {"data.metadata.campaign": "summer_"}}));
        yes(json!({"suffix": {"type": ".ended"}}));
        no(json!({"suffix": {"type": ".started"}}));
        yes(json!({"all": [{"exact": {"data.direction": "inbound"}}, {"prefix": {"subject": "vox:"}}]}));
        no(json!({"all": [{"exact": {"data.direction": "inbound"}}, {"prefix": {"subject": "utel:"}}]}));
        yes(json!({"any": [{"exact": {"data.direction": "outbound"}}, {"prefix": {"subject": "vox:"}}]}));
        no(json!({"any": [{"exact": {"data.direction": "outbound"}}, {"prefix": {"subject": "utel:"}}]}));
        yes(json!({"not": {"exact": {"data.direction": "outbound"}}}));
        no(json!({"not": {"exact": {"data.direction": "inbound"}}}));
        // TOML dotted keys arrive as nested tables and mean the same.
        yes(json!({"exact": {"data": {"end": {"reason": "agent_hangup"}}}}));
    }

    #[test]
    fn missing_null_and_structured_values_never_match_and_scalars_compare_as_text() {
        let e = event();
        let matches = |v: Value| parse(v).matches(&e);
        assert!(!matches(json!({"exact": {"data.metadata.nothing": "x"}})), "missing");
        assert!(!matches(json!({"prefix": {"data.from": "+"}})), "null");
        assert!(!matches(json!({"exact": {"data.metadata.tags": "a"}})), "an array inside a free object");
        assert!(matches(json!({"not": {"exact": {"data.metadata.nothing": "x"}}})), "not of missing is true");
        assert!(matches(json!({"exact": {"data.duration_ms": "342000"}})));
        assert!(matches(json!({"prefix": {"data.duration_ms": "342"}})));
        assert!(matches(json!({"exact": {"data.test": "false"}})));
        assert!(matches(json!({"exact": {"data.metadata.score": "1.5"}})));
    }

    #[test]
    fn filters_print_on_one_line() {
        let filter = parse(json!({"all": [
            {"exact": {"data.direction": "inbound"}},
            {"not": {"any": [{"suffix": {"type": ".partial"}}, {"prefix": {"data.metadata.campaign": "x\"y"}}]}}
        ]}));
        assert_eq!(
            filter.to_string(),
            r#"all(exact(data.direction = "inbound"), not(any(suffix(type = ".partial"), prefix(data.metadata.campaign = "x\"y"))))"#
        );
    }
}
