//! Ingress authentication per source (`gateway.md` §4). Secrets are compared in constant
//! time, and a failure says only that authentication failed.
//!
//! Every scheme but the signatures (`hmac`, `retell`) is decided from the request head alone,
//! so ingress answers 401 before it reads (or reserves room for) a body: see [`before_body`].
//! A signature that is missing, malformed or (`retell`) stale fails on the head too.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{Auth, HmacEncoding, Secret};

/// What the request head alone says about a request's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    /// Authenticated (`query`, `header`, `bearer`, `basic` with the right secret).
    Pass,
    /// Not authenticated: answer 401 without reading the body.
    Fail,
    /// Anyone may send a body that is read before the sender is known to be genuine: `none`
    /// (no authentication at all), `hmac` and `retell` (the signature covers the body,
    /// checked by [`check`] once it is read).
    Unverified,
}

/// Decides what can be decided before the body is read. An `hmac` request without a
/// decodable signature header, or a `retell` one without a well-formed, fresh signature,
/// fails here already.
pub fn before_body(auth: &Auth, headers: &HeaderMap, query: Option<&str>) -> Precheck {
    match auth {
        Auth::None => Precheck::Unverified,
        Auth::Retell { .. } => match retell_signature(headers, now_ms()) {
            Some(_) => Precheck::Unverified,
            None => Precheck::Fail,
        },
        Auth::Hmac { header: name, encoding, .. } => {
            if signature(headers, name, *encoding).is_some() {
                Precheck::Unverified
            } else {
                Precheck::Fail
            }
        }
        other => {
            if check(other, headers, query, &[]) {
                Precheck::Pass
            } else {
                Precheck::Fail
            }
        }
    }
}

/// The decoded signature an `hmac` source's header carries, if any.
fn signature(headers: &HeaderMap, name: &str, encoding: HmacEncoding) -> Option<Vec<u8>> {
    let given = header(headers, name)?.trim_ascii();
    // Accept a `sha256=` prefix, as GitHub-style senders add one.
    let given = given.strip_prefix(b"sha256=").unwrap_or(given);
    match encoding {
        HmacEncoding::Hex => hex::decode(given).ok(),
        HmacEncoding::Base64 => STANDARD.decode(given).ok(),
    }
}

/// Whether a request satisfies a source's authentication (`body` matters only to `hmac`).
pub fn check(auth: &Auth, headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> bool {
    match auth {
        Auth::None => true,
        Auth::Query { name, value } => {
            query_param(query, name).is_some_and(|given| eq(given.as_bytes(), value.expose().as_bytes()))
        }
        Auth::Header { name, value } => header(headers, name).is_some_and(|given| eq(given, value.expose().as_bytes())),
        Auth::Bearer { token } => bearer_matches(headers, token),
        Auth::Basic { username, password } => header(headers, AUTHORIZATION.as_str())
            .and_then(|v| strip_scheme(v, b"basic "))
            .and_then(|b64| STANDARD.decode(b64.trim_ascii()).ok())
            .is_some_and(|decoded| {
                let expected = format!("{username}:{}", password.expose());
                eq(&decoded, expected.as_bytes())
            }),
        Auth::Hmac { header: name, secret, encoding } => {
            let Some(decoded) = signature(headers, name, *encoding) else { return false };
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
            mac.update(body);
            mac.verify_slice(&decoded).is_ok()
        }
        Auth::Retell { api_key } => retell_verifies(api_key, headers, body, now_ms()),
    }
}

/// Retell's signature header.
pub const RETELL_HEADER: &str = "x-retell-signature";
/// How far a Retell signature's time may be from ours, either way, in milliseconds: the
/// window of Retell's own SDKs (`webhook_auth`), so a replay older than this fails.
const RETELL_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// A parsed `x-retell-signature`.
struct RetellSignature {
    /// `v`: when Retell signed, Unix milliseconds.
    signed_at_ms: i64,
    /// `d`: the HMAC-SHA256.
    digest: Vec<u8>,
}

/// The `v=<unix ms>,d=<64 hex digits>` signature a request carries, if it is well formed and
/// signed within [`RETELL_TOLERANCE_MS`] of `now_ms` (either way, as Retell's SDKs check).
fn retell_signature(headers: &HeaderMap, now_ms: i64) -> Option<RetellSignature> {
    let value = std::str::from_utf8(header(headers, RETELL_HEADER)?).ok()?.trim_ascii();
    let (v, d) = value.strip_prefix("v=")?.split_once(",d=")?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || d.len() != 64 {
        return None;
    }
    let signed_at_ms: i64 = v.parse().ok()?;
    let digest = hex::decode(d).ok()?;
    (now_ms.abs_diff(signed_at_ms) <= RETELL_TOLERANCE_MS.unsigned_abs())
        .then_some(RetellSignature { signed_at_ms, digest })
}

/// Whether a Retell request is genuine: a fresh signature over the raw body followed by the
/// signing time in decimal, keyed with the API key.
fn retell_verifies(api_key: &Secret, headers: &HeaderMap, body: &[u8], now_ms: i64) -> bool {
    let Some(signature) = retell_signature(headers, now_ms) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.update(signature.signed_at_ms.to_string().as_bytes());
    mac.verify_slice(&signature.digest).is_ok()
}

/// The wall clock in Unix milliseconds (Retell signatures carry one).
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether `Authorization: Bearer <token>` carries `token` (also the admin API's check).
pub fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    header(headers, AUTHORIZATION.as_str())
        .and_then(|v| strip_scheme(v, b"bearer "))
        .is_some_and(|given| eq(given.trim_ascii(), token.expose().as_bytes()))
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret-dependent in a way an attacker can exploit beyond what a constant
    // time compare of equal-length inputs hides; unequal lengths fail.
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme)).then(|| &value[scheme.len()..])
}

/// The decoded value of a query parameter.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_auth_type_accepts_the_right_secret_only() {
        let body = b"{\"event\":\"x\"}";
        let query = Auth::Query { name: "secret".into(), value: Secret::new("s3cr3t") };
        assert!(check(&query, &HeaderMap::new(), Some("a=1&secret=s3cr3t"), body));
        assert!(!check(&query, &HeaderMap::new(), Some("secret=wrong"), body));
        assert!(!check(&query, &HeaderMap::new(), None, body));

        let header_auth = Auth::Header { name: "X-Salpre-Key".into(), value: Secret::new("k") };
        assert!(check(&header_auth, &headers(&[("x-salpre-key", "k")]), None, body));
        assert!(!check(&header_auth, &headers(&[("x-salpre-key", "kk")]), None, body));

        let bearer = Auth::Bearer { token: Secret::new("tok") };
        assert!(check(&bearer, &headers(&[("authorization", "Bearer tok")]), None, body));
        assert!(!check(&bearer, &headers(&[("authorization", "Bearer tok2")]), None, body));
        assert!(!check(&bearer, &headers(&[("authorization", "Basic tok")]), None, body));

        let basic = Auth::Basic { username: "u".into(), password: Secret::new("p") };
        let good = format!("Basic {}", STANDARD.encode("u:p"));
        assert!(check(&basic, &headers(&[("authorization", &good)]), None, body));
        let bad = format!("Basic {}", STANDARD.encode("u:q"));
        assert!(!check(&basic, &headers(&[("authorization", &bad)]), None, body));

        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(body);
        let sig = mac.finalize().into_bytes();
        let hex_auth =
            Auth::Hmac { header: "X-Signature".into(), secret: Secret::new("key"), encoding: HmacEncoding::Hex };
        assert!(check(&hex_auth, &headers(&[("x-signature", &hex::encode(sig))]), None, body));
        assert!(!check(&hex_auth, &headers(&[("x-signature", &hex::encode(sig))]), None, b"{\"event\":\"y\"}"));
        let b64_auth =
            Auth::Hmac { header: "X-Signature".into(), secret: Secret::new("key"), encoding: HmacEncoding::Base64 };
        assert!(check(&b64_auth, &headers(&[("x-signature", &STANDARD.encode(sig))]), None, body));
        assert!(!check(&b64_auth, &HeaderMap::new(), None, body));
    }

    /// The vector from Retell's own SDK tests (retell-python-sdk `tests/test_webhook_auth.py`):
    /// body, key and time give this exact digest; a changed body or key fails, and so does a
    /// time one millisecond outside five minutes, either way.
    #[test]
    fn retell_signatures_verify_as_retells_sdk_does() {
        const BODY: &[u8] = br#"{"event":"call_ended"}"#;
        const SIGNED_AT: i64 = 1_700_000_000_000;
        const DIGEST: &str = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";
        const TOLERANCE: i64 = 5 * 60 * 1000;
        let key = Secret::new("test-api-key");
        let signed = headers(&[(RETELL_HEADER, &format!("v={SIGNED_AT},d={DIGEST}"))]);
        assert!(retell_verifies(&key, &signed, BODY, SIGNED_AT));
        assert!(retell_verifies(&key, &signed, BODY, SIGNED_AT + TOLERANCE));
        assert!(retell_verifies(&key, &signed, BODY, SIGNED_AT - TOLERANCE));
        assert!(!retell_verifies(&key, &signed, BODY, SIGNED_AT + TOLERANCE + 1));
        assert!(!retell_verifies(&key, &signed, BODY, SIGNED_AT - TOLERANCE - 1));
        assert!(!retell_verifies(&key, &signed, br#"{"event":"call_ended"} "#, SIGNED_AT));
        assert!(!retell_verifies(&Secret::new("wrong-api-key"), &signed, BODY, SIGNED_AT));
        let upper = headers(&[(RETELL_HEADER, &format!("v={SIGNED_AT},d={}", DIGEST.to_uppercase()))]);
        // As Retell's TypeScript SDK 5.60 (`/^v=(\d+),d=([0-9a-f]+)$/i`); its Python SDK 5.60
        // takes lowercase only. Retell signs in lowercase, so either way genuine requests pass.
        assert!(retell_verifies(&key, &upper, BODY, SIGNED_AT), "hex is hex in either case");
        // The malformed signatures Retell's SDKs (5.60) reject.
        for malformed in [
            String::new(),
            format!("v={SIGNED_AT}"),
            format!("d={DIGEST},v={SIGNED_AT}"),
            format!("prefix-v={SIGNED_AT},d={DIGEST}"),
            format!("v={SIGNED_AT},d={DIGEST}-suffix"),
            format!("v={SIGNED_AT},d=not-hex"),
            format!("v={SIGNED_AT},d={}", &DIGEST[2..]),
            format!("v=-{SIGNED_AT},d={DIGEST}"),
            format!("v={SIGNED_AT},d={DIGEST},extra=value"),
            format!("v=99999999999999999999999,d={DIGEST}"),
        ] {
            let h = headers(&[(RETELL_HEADER, &malformed)]);
            assert!(!retell_verifies(&key, &h, BODY, SIGNED_AT), "{malformed:?} accepted");
            assert!(retell_signature(&h, SIGNED_AT).is_none(), "{malformed:?} parsed");
        }
        assert!(!retell_verifies(&key, &HeaderMap::new(), BODY, SIGNED_AT));
    }

    #[test]
    fn only_the_body_schemes_wait_for_the_body() {
        let none = HeaderMap::new();
        assert_eq!(before_body(&Auth::None, &none, None), Precheck::Unverified);
        let bearer = Auth::Bearer { token: Secret::new("tok") };
        assert_eq!(before_body(&bearer, &headers(&[("authorization", "Bearer tok")]), None), Precheck::Pass);
        assert_eq!(before_body(&bearer, &none, None), Precheck::Fail);
        let query = Auth::Query { name: "s".into(), value: Secret::new("v") };
        assert_eq!(before_body(&query, &none, Some("s=v")), Precheck::Pass);
        assert_eq!(before_body(&query, &none, Some("s=w")), Precheck::Fail);
        let hmac = Auth::Hmac { header: "X-Signature".into(), secret: Secret::new("key"), encoding: HmacEncoding::Hex };
        assert_eq!(before_body(&hmac, &headers(&[("x-signature", "00ff")]), None), Precheck::Unverified);
        assert_eq!(before_body(&hmac, &headers(&[("x-signature", "not hex")]), None), Precheck::Fail);
        assert_eq!(before_body(&hmac, &none, None), Precheck::Fail);
        let retell = Auth::Retell { api_key: Secret::new("key") };
        let fresh = format!("v={},d={}", now_ms(), "0".repeat(64));
        assert_eq!(before_body(&retell, &headers(&[(RETELL_HEADER, &fresh)]), None), Precheck::Unverified);
        let stale = format!("v={},d={}", now_ms() - 10 * 60 * 1000, "0".repeat(64));
        assert_eq!(before_body(&retell, &headers(&[(RETELL_HEADER, &stale)]), None), Precheck::Fail);
        assert_eq!(before_body(&retell, &headers(&[(RETELL_HEADER, "v=1,d=zz")]), None), Precheck::Fail);
        assert_eq!(before_body(&retell, &none, None), Precheck::Fail);
    }
}
