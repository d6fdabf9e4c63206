//! Ingress authentication per source (`gateway.md` §4). Secrets are compared in constant
//! time, and a failure says only that authentication failed.
//!
//! Every scheme but `hmac` is decided from the request head alone, so ingress answers 401
//! before it reads (or reserves room for) a body: see [`before_body`].

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
    /// (no authentication at all) and `hmac` (the signature covers the body, checked by
    /// [`check`] once it is read).
    Unverified,
}

/// Decides what can be decided before the body is read. An `hmac` request without a
/// decodable signature header fails here already.
pub fn before_body(auth: &Auth, headers: &HeaderMap, query: Option<&str>) -> Precheck {
    match auth {
        Auth::None => Precheck::Unverified,
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
    }
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
    }
}
