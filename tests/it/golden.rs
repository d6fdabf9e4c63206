//! Golden fixtures: every payload under `tests/fixtures/<vendor>/` beside the exact canonical
//! events it must produce (`<name>.expected.json`), and every produced event validated
//! against the canonical JSON Schema in `schemas/canonical/event.json`.
//!
//! `BLESS=1 cargo test golden` rewrites the expected files; review the diff before committing.

use std::{fs, path::PathBuf};

use callgate::{
    canonical::{Vendor, convert},
    vendors::{self, Origin},
};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The `received_at` every fixture is normalised with.
const RECEIVED_AT: &str = "2026-11-21T12:00:00Z";

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Phone region per vendor in the fixtures, as an operator would configure it.
fn region(vendor: Vendor) -> Option<phonenumber::country::Id> {
    match vendor {
        Vendor::Vox => Some(phonenumber::country::Id::KR),
        Vendor::Utel => Some(phonenumber::country::Id::UZ),
        _ => None,
    }
}

/// Every fixture payload: (vendor, path).
pub fn fixtures() -> Vec<(Vendor, PathBuf)> {
    let mut all = Vec::new();
    for vendor in Vendor::ALL {
        let dir = fixtures_dir().join(vendor.as_str());
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.to_string_lossy().ends_with(".expected.json"))
            .collect();
        files.sort();
        all.extend(files.into_iter().map(|p| (vendor, p)));
    }
    all
}

pub fn normalize_fixture(vendor: Vendor, path: &PathBuf) -> Value {
    let body = fs::read(path).unwrap();
    let origin = Origin { source: vendor.as_str(), vendor, phone_region: region(vendor) };
    let received_at: DateTime<Utc> = RECEIVED_AT.parse().unwrap();
    let normalized = vendors::normalize(&origin, &body, received_at)
        .unwrap_or_else(|e| panic!("{} was rejected: {e}: {:?}", path.display(), e.violations()));
    serde_json::to_value(normalized.events).unwrap()
}

#[test]
fn every_fixture_produces_its_expected_canonical_events() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    let fixtures = fixtures();
    assert!(fixtures.len() >= 40, "only {} fixtures found", fixtures.len());
    for (vendor, path) in fixtures {
        let actual = normalize_fixture(vendor, &path);
        let expected_path = path.with_extension("expected.json");
        if bless {
            let mut text = serde_json::to_string_pretty(&actual).unwrap();
            text.push('\n');
            fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: Value = match fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => {
                failures.push(format!("{}: no {} (run with BLESS=1)", path.display(), expected_path.display()));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!(
                "{}: canonical output differs from {}\nactual:\n{}",
                path.display(),
                expected_path.display(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_event_from_every_fixture_validates_against_the_canonical_schema() {
    let schema = include_str!("../../schemas/canonical/event.json");
    let validator = vendors::compile(schema).expect("canonical schema compiles");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (vendor, path) in fixtures() {
        for event in normalize_fixture(vendor, &path).as_array().unwrap() {
            checked += 1;
            for error in validator.iter_errors(event) {
                problems.push(format!("{} {}: {} at {}", path.display(), event["type"], error, error.instance_path()));
            }
        }
    }
    assert!(checked > 50, "only {checked} events checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The schema is not vacuous: events that break the model are rejected.
#[test]
fn the_canonical_schema_rejects_broken_events() {
    let validator = vendors::compile(include_str!("../../schemas/canonical/event.json")).unwrap();
    let (vendor, path) = fixtures().into_iter().find(|(_, p)| p.ends_with("vox/doc-call_ended.json")).unwrap();
    let good = normalize_fixture(vendor, &path)[0].clone();
    assert!(validator.is_valid(&good));
    let breakages: [(&str, Value); 6] = [
        ("/type", Value::from("call.exploded")),
        ("/data/test", Value::from(true)), // only Salpre and callgate's test sends mark tests
        ("/id", Value::from("not-an-id")),
        ("/data/status", Value::from("no_answer")), // call.ended must be completed
        ("/data/direction", Value::from("sideways")),
        ("/data/received_at", Value::from("yesterday")),
    ];
    for (pointer, value) in breakages {
        let mut bad = good.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        assert!(!validator.is_valid(&bad), "{pointer} broken but still valid");
    }
    let mut extra = good.clone();
    extra["data"]["surprise"] = Value::from(1);
    assert!(!validator.is_valid(&extra), "unknown data field accepted");
}

/// The canonical schema's `vendor` enum is the generated vendor list, in order: a vendor added
/// to `vendors!` but not to the schema fails here rather than on its first event.
#[test]
fn the_canonical_schema_names_every_vendor() {
    let schema: Value = serde_json::from_str(include_str!("../../schemas/canonical/event.json")).unwrap();
    let names = schema.pointer("/properties/data/properties/vendor/enum").unwrap();
    let expected: Vec<&str> = Vendor::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(names, &serde_json::json!(expected));
}

/// The canonical schema's `type` enum is `EventType`, in order (`call.completed` included),
/// and `data.completion`'s pieces are every other type.
#[test]
fn the_canonical_schema_names_every_type() {
    let schema: Value = serde_json::from_str(include_str!("../../schemas/canonical/event.json")).unwrap();
    let types = schema.pointer("/properties/type/enum").unwrap();
    let expected: Vec<&str> = callgate::canonical::EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(types, &serde_json::json!(expected));
    let pieces: Vec<&str> = expected.iter().copied().filter(|t| *t != "call.completed").collect();
    for list in ["pieces", "missing"] {
        let path = format!("/properties/data/properties/completion/properties/{list}/items/enum");
        assert_eq!(schema.pointer(&path).unwrap(), &serde_json::json!(pieces), "{list}");
    }
}

/// Every leaf of `value` (scalars and empty containers) with its JSON pointer.
fn leaves<'v>(value: &'v Value, at: String, out: &mut Vec<(String, &'v Value)>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) if !map.is_empty() => {
            map.iter().for_each(|(key, child)| leaves(child, format!("{at}/{}", escape(key)), out))
        }
        Value::Array(items) if !items.is_empty() => {
            items.iter().enumerate().for_each(|(i, child)| leaves(child, format!("{at}/{i}"), out))
        }
        leaf => out.push((at, leaf)),
    }
}

/// Whether `pointer` is `consumed` or inside a consumed value.
fn is_consumed(pointer: &str, consumed: &[String]) -> bool {
    consumed.iter().any(|c| pointer == c || pointer.strip_prefix(c.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// Whether a consumed scalar reappears in the serialised `output`: copied, or converted (a
/// time, seconds to milliseconds, a transcript string split into utterances, a label that a
/// normalised field represents).
fn reappears(pointer: &str, value: &Value, output: &str) -> bool {
    // Values represented by a normalised field rather than copied: call-history labels
    // (`type.name`, `status.name`), and vox `call_status`.
    const REPRESENTED: &[&str] =
        &["Outgoing", "Incoming", "Internal", "Answered", "Not answered", "ended", "not_connected"];
    if let Value::Bool(b) = value {
        // Every event carries `"test":false`: a boolean must reappear elsewhere (Salpre's
        // `is_test` is the one that becomes `test`).
        let elsewhere = output.replace("\"test\":false", "").replace("\"test\":true", "");
        return elsewhere.contains(&format!(":{b}"))
            || (pointer == "/is_test" && output.contains(&format!("\"test\":{b}")));
    }
    let text = match value {
        // Null and empty containers say "none", as the missing canonical field does.
        Value::Null => return true,
        Value::Array(items) if items.is_empty() => return true,
        Value::Object(map) if map.is_empty() => return true,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let json = serde_json::to_string(value).unwrap();
    if output.contains(&json) || output.contains(&format!(":{text}")) || REPRESENTED.contains(&text.as_str()) {
        return true;
    }
    // Discriminators reappear inside `vendor_event` ("mid_call.call_message").
    if output.contains(&format!("\"vendor_event\":\"{text}.")) || output.contains(&format!(".{text}\"")) {
        return true;
    }
    // A time reappears converted (epoch ms or s, ISO, or Utel's local time).
    let converted: Vec<Option<String>> = match text.parse::<i64>() {
        Ok(n) if n > 1_000_000_000 => vec![convert::from_epoch_ms(n), convert::from_epoch_s(n)],
        Ok(_) => vec![],
        Err(_) => vec![convert::from_iso(&text), convert::from_local(&text, 5)],
    };
    if converted.iter().flatten().any(|t| output.contains(&format!("\"{t}\""))) {
        return true;
    }
    if text.parse::<i64>().is_ok_and(|n| output.contains(&format!(":{}", n * 1000))) {
        return true;
    }
    // A transcript string: every line's words are in some utterance.
    value.is_string()
        && text.lines().filter(|l| !l.trim().is_empty()).all(|line| {
            let said = line.split_once(':').map_or(line, |(_, rest)| rest.strip_prefix(' ').unwrap_or(rest));
            let escaped = serde_json::to_string(said).unwrap();
            output.contains(escaped.trim_matches('"'))
        })
}

/// Principle 3, exactly: every leaf of every fixture (booleans and nulls included) is either
/// consumed by the mapper or in `vendor_extra` at the same pointer with the same value, and
/// `vendor_extra` holds nothing else (consumed ∪ vendor_extra = the input). Every consumed
/// scalar reappears in the output, so consuming and dropping is caught too.
#[test]
fn nothing_a_vendor_sent_is_lost() {
    let mut problems = Vec::new();
    let received_at: DateTime<Utc> = RECEIVED_AT.parse().unwrap();
    for (vendor, path) in fixtures() {
        let body = fs::read(&path).unwrap();
        let input: Value = serde_json::from_slice(&body).unwrap();
        let origin = Origin { source: vendor.as_str(), vendor, phone_region: region(vendor) };
        let trace = vendors::trace(&origin, &body, received_at).unwrap();
        let events = &trace.normalized.events;
        let extra = Value::Object((*events[0].data.vendor_extra).clone());
        let output = serde_json::to_string(events).unwrap();
        let name = path.display();
        let mut input_leaves = Vec::new();
        leaves(&input, String::new(), &mut input_leaves);
        for (pointer, leaf) in input_leaves {
            if is_consumed(&pointer, &trace.consumed) {
                if !reappears(&pointer, leaf, &output) {
                    problems.push(format!("{name}: {pointer} = {leaf} consumed but not in the output"));
                }
            } else if extra.pointer(&pointer) != Some(leaf) {
                problems.push(format!("{name}: {pointer} = {leaf} neither consumed nor in vendor_extra"));
            }
        }
        let mut extra_leaves = Vec::new();
        leaves(&extra, String::new(), &mut extra_leaves);
        for (pointer, leaf) in extra_leaves.into_iter().filter(|(pointer, _)| !pointer.is_empty()) {
            // A consumed array item is left as null so that later items keep their index.
            let placeholder = leaf.is_null()
                && input.pointer(&pointer).is_some_and(|item| {
                    let mut inside = Vec::new();
                    leaves(item, pointer.clone(), &mut inside);
                    inside.iter().all(|(p, _)| is_consumed(p, &trace.consumed))
                });
            if input.pointer(&pointer) != Some(leaf) && !placeholder {
                problems.push(format!("{name}: vendor_extra{pointer} = {leaf} is not what the vendor sent"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The drift a fixture shows, as `kind path[=value]` lines.
fn drift_of(vendor: Vendor, path: &PathBuf) -> Vec<String> {
    let body = fs::read(path).unwrap();
    let origin = Origin { source: vendor.as_str(), vendor, phone_region: region(vendor) };
    let normalized = vendors::normalize(&origin, &body, RECEIVED_AT.parse().unwrap()).unwrap();
    normalized
        .drift
        .iter()
        .map(|d| match d.value.as_str() {
            "" => format!("{} {}", d.kind.as_str(), d.path),
            value => format!("{} {}={value}", d.kind.as_str(), d.path),
        })
        .collect()
}

/// The rule for "new" (README, "Vendor drift"): a documented payload (`doc-*` verbatim from
/// the vendor's pages, vox `v2-*`, Utel's `synthetic-*`) has no field its schema does not
/// declare, so the drift report shows only what changed; a fixture with added fields shows
/// them, and one with a new enum value shows that value.
#[test]
fn documented_payloads_show_no_drift_and_changed_ones_do() {
    let mut failures = Vec::new();
    for (vendor, path) in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let drift = drift_of(vendor, &path);
        let documented = ["doc-", "v2-", "synthetic-"].iter().any(|p| name.starts_with(p));
        if documented && !drift.is_empty() {
            failures.push(format!("{vendor}/{name} is documented but shows drift: {drift:?}"));
        }
        if name.contains("extra_fields") && !drift.iter().any(|d| d.starts_with("unknown_field ")) {
            failures.push(format!("{vendor}/{name} has added fields but shows none: {drift:?}"));
        }
        if name.contains("unknown_reason") && !drift.iter().any(|d| d.starts_with("unknown_value ")) {
            failures.push(format!("{vendor}/{name} has a new reason but shows none: {drift:?}"));
        }
        if name.contains("degraded") && !drift.iter().any(|d| d.starts_with("degraded ")) {
            failures.push(format!("{vendor}/{name} is degraded but shows no degraded field: {drift:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
