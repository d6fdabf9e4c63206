//! Data minimisation per route: `omit` (dotted paths removed from what the route receives)
//! and `mask_numbers` (every phone number field of canonical data masked). Applied at send
//! time to the stored canonical event (which stays whole), before headers are rendered and
//! the body is signed, so neither the body, nor a `{{path}}` header, nor the signature's
//! input carries what the route must not hold.

use std::fmt;

use serde_json::Value;

use super::ConfigError;
use crate::canonical::paths;

/// What a route leaves out of each event it receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minimise {
    /// Dotted paths removed from the CloudEvent (`data.transcript`, `data.vendor_extra`).
    pub omit: Vec<String>,
    /// Mask the phone numbers of [`paths::NUMBER_FIELDS`] ([`paths::mask_number`]).
    pub mask_numbers: bool,
}

impl Minimise {
    /// Checks `omit` (at `key`.omit) against the canonical schema.
    pub fn new(omit: Vec<String>, mask_numbers: bool, key: &str, errors: &mut Vec<ConfigError>) -> Minimise {
        let key = format!("{key}.omit");
        for path in &omit {
            let shown = crate::http::cut(path, 80);
            if paths::REQUIRED_ATTRIBUTES.contains(&path.as_str()) {
                errors.push(ConfigError {
                    key: key.clone(),
                    message: format!("`{shown}` is required by CloudEvents and cannot be omitted"),
                });
                continue;
            }
            // Any shape may go: a value, an object (`data.vendor_extra`), an array
            // (`data.transcript`), or something inside a free object.
            if let Err(message) = paths::shape(path) {
                errors.push(ConfigError { key: key.clone(), message });
            }
        }
        let mut omit = omit;
        omit.sort();
        omit.dedup();
        Minimise { omit, mask_numbers }
    }

    /// Whether events go out exactly as stored (the fast path: no re-parse).
    pub fn is_empty(&self) -> bool {
        self.omit.is_empty() && !self.mask_numbers
    }

    /// Removes and masks, in place.
    pub fn apply(&self, event: &mut Value) {
        for path in &self.omit {
            paths::remove(event, path);
        }
        if self.mask_numbers {
            for field in paths::NUMBER_FIELDS {
                let value = field.split('.').try_fold(&mut *event, |value, key| value.get_mut(key));
                if let Some(Value::String(number)) = value {
                    *number = paths::mask_number(number);
                }
            }
        }
    }
}

/// `omit [data.transcript, data.vendor_extra], mask_numbers yes`, as `callgate check` prints it.
impl fmt::Display for Minimise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "omit [{}], mask_numbers {}", self.omit.join(", "), if self.mask_numbers { "yes" } else { "no" })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn omitted_paths_go_and_every_number_field_is_masked() {
        let mut errors = Vec::new();
        let minimise = Minimise::new(
            vec!["data.transcript".into(), "data.vendor_extra".into(), "data.metadata.secret".into()],
            true,
            "routes.r",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mut event = json!({
            "id": "ce_1", "type": "sms.received",
            "data": {
                "from": "+821012345678", "to": "1001", "from_e164": "+821012345678", "to_e164": null,
                "transcript": [{"text": "hello"}], "vendor_extra": {"x": 1},
                "metadata": {"secret": "s", "campaign": "c"},
                "sms": {"from": "+82 10-1234-5678", "to": "sip:bob@pbx", "text": "hi"},
                "transfer": {"target": "+14155550123"}
            }
        });
        minimise.apply(&mut event);
        assert_eq!(
            event,
            json!({
                "id": "ce_1", "type": "sms.received",
                "data": {
                    "from": "+********5678", "to": "***", "from_e164": "+********5678", "to_e164": null,
                    "metadata": {"campaign": "c"},
                    "sms": {"from": "+** **-****-5678", "to": "***", "text": "hi"},
                    "transfer": {"target": "+*******0123"}
                }
            })
        );
        assert_eq!(
            minimise.to_string(),
            "omit [data.metadata.secret, data.transcript, data.vendor_extra], mask_numbers yes"
        );
    }
}
