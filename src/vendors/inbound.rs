//! Vendors' inbound webhooks: requests that wait, just before a call starts, for variables to
//! put in the agent's prompt. Each vendor that has one reads its request into an
//! [`InboundCall`] and writes a [`LookupAnswer`] back in its own response shape. Pure, like
//! the adapters: the lookup itself is `ingress::inbound`'s.

use serde_json::Value;

use crate::{
    canonical::{
        Vendor,
        lookup::{InboundCall, LookupAnswer},
    },
    vendors::{Rejection, Violation},
};

/// Whether the vendor has an inbound webhook callgate can answer.
pub fn supported(vendor: Vendor) -> bool {
    vendor == Vendor::Vox
}

/// The call a vendor's inbound request announces.
pub fn request(vendor: Vendor, body: &[u8]) -> Result<InboundCall, Rejection> {
    match vendor {
        Vendor::Vox => super::vox::inbound::request(body),
        other => Err(Rejection::UnknownEvent {
            vendor: other,
            violation: Violation::new("", format!("{other} has no inbound webhook")),
        }),
    }
}

/// The vendor's response carrying `answer`. Only called for [`supported`] vendors; any other
/// gets the canonical shape.
pub fn response(vendor: Vendor, answer: &LookupAnswer) -> Value {
    match vendor {
        Vendor::Vox => super::vox::inbound::response(answer),
        _ => serde_json::to_value(answer).unwrap_or_default(),
    }
}
