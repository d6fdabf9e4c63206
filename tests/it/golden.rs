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
    let breakages: [(&str, Value); 5] = [
        ("/type", Value::from("call.exploded")),
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

/// Principle 3: every scalar the vendor sent reappears in the canonical event — mapped (as
/// is, or converted), or in `vendor_extra`.
#[test]
fn nothing_a_vendor_sent_is_lost() {
    fn scalars(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.values().for_each(|v| scalars(v, out)),
            Value::Array(a) => a.iter().for_each(|v| scalars(v, out)),
            Value::Null | Value::Bool(_) => {}
            Value::String(s) => out.push(s.clone()),
            other => out.push(other.to_string()),
        }
    }
    // Values that are represented by a normalised field rather than copied: call-history
    // labels (`type.name`, `status.name`), and vox `call_status`.
    const REPRESENTED: &[&str] =
        &["Outgoing", "Incoming", "Internal", "Answered", "Not answered", "ended", "not_connected"];
    let mut missing = Vec::new();
    for (vendor, path) in fixtures() {
        let input: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let output = serde_json::to_string(&normalize_fixture(vendor, &path)).unwrap();
        let mut values = Vec::new();
        scalars(&input, &mut values);
        for value in values {
            let copied =
                output.contains(&serde_json::to_string(&value).unwrap()) || output.contains(&format!(":{value}"));
            // Discriminators reappear inside `vendor_event` ("mid_call.call_message").
            let in_vendor_event =
                output.contains(&format!("\"vendor_event\":\"{value}.")) || output.contains(&format!(".{value}\""));
            // A time must reappear converted (epoch ms or s, ISO, or Utel's local time).
            let converted: Vec<Option<String>> = match value.parse::<i64>() {
                Ok(n) if n > 1_000_000_000 => vec![convert::from_epoch_ms(n), convert::from_epoch_s(n)],
                Ok(_) => vec![],
                Err(_) => vec![convert::from_iso(&value), convert::from_local(&value, 5)],
            };
            let is_time = converted.iter().flatten().any(|t| output.contains(&format!("\"{t}\"")));
            let seconds = value.parse::<i64>().is_ok_and(|n| output.contains(&format!(":{}", n * 1000)));
            if !(copied || in_vendor_event || is_time || seconds || REPRESENTED.contains(&value.as_str())) {
                missing.push(format!("{}: {value}", path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "values missing from the canonical output:\n{}", missing.join("\n"));
}
