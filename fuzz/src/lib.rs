//! The property every fuzz target checks, shared with the regression test in `tests/it`:
//! for any bytes, validate-and-map returns (never panics), and whatever it accepts becomes
//! canonical events that serialise, carry distinct ids, and satisfy the canonical schema.

use std::sync::OnceLock;

use callgate::{
    canonical::Vendor,
    vendors::{self, Origin},
};

static CANONICAL: OnceLock<jsonschema::Validator> = OnceLock::new();

pub fn check(vendor: Vendor, data: &[u8]) {
    let region = match vendor {
        Vendor::Vox => "KR".parse().ok(),
        Vendor::Utel => "UZ".parse().ok(),
        _ => None,
    };
    let origin = Origin { source: "fuzz", vendor, phone_region: region };
    let received_at = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
    let Ok(vendors::Normalized { events, .. }) = vendors::normalize(&origin, data, received_at) else { return };
    assert!(!events.is_empty(), "an accepted payload makes at least one event");
    let validator = CANONICAL.get_or_init(|| {
        vendors::compile(include_str!("../../schemas/canonical/event.json")).expect("canonical schema")
    });
    let mut ids = std::collections::HashSet::new();
    for event in &events {
        let json = serde_json::to_value(event).expect("canonical events serialise");
        if let Some(error) = validator.iter_errors(&json).next() {
            panic!("{vendor} event violates the canonical schema: {error} at {}\n{json}", error.instance_path());
        }
        assert!(ids.insert(event.id.clone()), "duplicate id {}", event.id);
    }
}
