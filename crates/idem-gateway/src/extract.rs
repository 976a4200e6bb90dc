//! From a buffered request to the stored key and the fingerprint.
//!
//! The stored key is `prefix` + hex SHA-256 over the route's identity, the
//! hashed client scope and every key part, each length-prefixed: it has a
//! fixed length whatever the sources hold, and two routes, two scopes or two
//! part splits (`ab`+`c` against `a`+`bc`) never share a record.
//!
//! The default fingerprint is SHA-256 over the method, the path, the raw
//! query and the body; a JSON body (a `Content-Type` naming json) that
//! parses is hashed in canonical form ([`crate::canonical`]).

use http::{HeaderMap, Method};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::write_canonical;
use crate::key_header::{check_len, parse_idempotency_key, KeyError};
use crate::route::{FingerprintSpec, Route, Source};

/// Why no key could be taken from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// A key source is absent from the request.
    #[error("the request has no {0}")]
    Missing(String),
    /// A key source is present but refused.
    #[error("{source_name}: {reason}")]
    Invalid {
        /// The source, as written in the route.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// The parts of a request that keys and fingerprints read.
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path (no query).
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
    /// The route's path parameters.
    pub params: &'a [(String, String)],
}

/// A request's stored key and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The key under which the record is stored.
    pub key: Vec<u8>,
    /// The fingerprint (hex SHA-256), if the route checks one.
    pub fingerprint: Option<Vec<u8>>,
}

/// Reads a request's key parts, scope and fingerprint.
pub struct Extractor<'a> {
    view: RequestView<'a>,
    json: Option<Option<Value>>,
    part_bytes_max: usize,
}

/// The sentinel hashed in place of an absent fingerprint field.
const ABSENT: &[u8] = b"\xff";

impl<'a> Extractor<'a> {
    /// An extractor over one request; `part_bytes_max` bounds each key part.
    pub fn new(view: RequestView<'a>, part_bytes_max: usize) -> Self {
        Extractor { view, json: None, part_bytes_max }
    }

    fn json(&mut self) -> Option<&Value> {
        let body = self.view.body;
        self.json.get_or_insert_with(|| serde_json::from_slice(body).ok()).as_ref()
    }

    fn is_json(&self) -> bool {
        self.view
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"))
    }

    /// The value of one source, `None` when the request does not carry it.
    pub fn value(&mut self, src: &Source) -> Result<Option<Vec<u8>>, ExtractError> {
        let invalid = |reason: String| ExtractError::Invalid { source_name: src.to_string(), reason };
        match src {
            Source::Header(name) => {
                let mut values = self.view.headers.get_all(name).iter();
                let Some(first) = values.next() else { return Ok(None) };
                if name == "idempotency-key" {
                    if values.next().is_some() {
                        return Err(invalid(KeyError::Repeated.to_string()));
                    }
                    return parse_idempotency_key(first.as_bytes(), self.part_bytes_max)
                        .map(Some)
                        .map_err(|e| invalid(e.to_string()));
                }
                Ok(Some(first.as_bytes().to_vec()))
            }
            Source::Query(name) => Ok(self.view.query.and_then(|q| query_param(q, name))),
            Source::Path(name) => {
                Ok(self.view.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_bytes().to_vec()))
            }
            Source::Json(path) => {
                let Some(mut v) = self.json() else {
                    return if self.view.body.is_empty() {
                        Ok(None)
                    } else {
                        Err(invalid("the body is not JSON".to_string()))
                    };
                };
                for field in path {
                    match v.get(field.as_str()) {
                        Some(next) => v = next,
                        None => return Ok(None),
                    }
                }
                Ok(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.as_bytes().to_vec()),
                    other => {
                        let mut out = Vec::new();
                        write_canonical(other, &mut out);
                        Some(out)
                    }
                })
            }
        }
    }

    /// The stored key, or why there is none. `Ok(None)`: the request
    /// carries none of its key sources (the caller decides with `require`).
    pub fn identity(&mut self, route: &Route, prefix: &[u8]) -> Result<Option<Identity>, ExtractError> {
        let mut h = Sha256::new();
        put(&mut h, route.id().as_bytes());
        let scope = match route.scope() {
            Some(src) => self.value(src)?,
            None => None,
        };
        // The scope value itself is hashed: a credential never reaches the store.
        match &scope {
            Some(s) => put(&mut h, &Sha256::digest(s)),
            None => put(&mut h, b""),
        }
        let mut missing = Vec::new();
        for src in route.key() {
            match self.value(src)? {
                Some(v) => {
                    check_len(&v, self.part_bytes_max)
                        .map_err(|e| ExtractError::Invalid { source_name: src.to_string(), reason: e.to_string() })?;
                    put(&mut h, &v);
                }
                None => missing.push(src.to_string()),
            }
        }
        if missing.len() == route.key().len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(ExtractError::Missing(missing.join(", ")));
        }
        let mut key = prefix.to_vec();
        key.extend_from_slice(hex(&h.finalize()).as_bytes());
        let fingerprint = self.fingerprint(route.fingerprint())?;
        Ok(Some(Identity { key, fingerprint }))
    }

    fn fingerprint(&mut self, spec: &FingerprintSpec) -> Result<Option<Vec<u8>>, ExtractError> {
        let mut h = Sha256::new();
        match spec {
            FingerprintSpec::Off => return Ok(None),
            FingerprintSpec::Request => {
                put(&mut h, self.view.method.as_str().as_bytes());
                put(&mut h, self.view.path.as_bytes());
                put(&mut h, self.view.query.unwrap_or("").as_bytes());
                let canonical = if self.is_json() { self.json().map(crate::canonical::canonical) } else { None };
                put(&mut h, canonical.as_deref().unwrap_or(self.view.body));
            }
            FingerprintSpec::Fields(fields) => {
                for src in fields {
                    match self.value(src)? {
                        Some(v) => put(&mut h, &v),
                        None => put(&mut h, ABSENT),
                    }
                }
            }
        }
        Ok(Some(hex(&h.finalize()).into_bytes()))
    }
}

/// Hashes a length-prefixed field, so that adjacent fields cannot shift bytes between them.
fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The first value of a query parameter, percent-decoded (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name.as_bytes()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteDefaults;
    use http::HeaderValue;

    struct Req {
        method: Method,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    fn req(path_and_query: &str, headers: &[(&'static str, &str)], body: &str) -> Req {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_and_query.to_string(), None),
        };
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        Req { method: Method::POST, path, query, headers: h, body: body.as_bytes().to_vec() }
    }

    fn identity(route: &str, r: &Req) -> Result<Option<Identity>, ExtractError> {
        let route = Route::parse(route, &RouteDefaults::default()).unwrap();
        let params = route.matches(&r.method, &r.path).expect("route matches");
        let view = RequestView {
            method: &r.method,
            path: &r.path,
            query: r.query.as_deref(),
            headers: &r.headers,
            body: &r.body,
            params: &params,
        };
        Extractor::new(view, 255).identity(&route, b"gw:")
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn json_dotted_paths_and_combined_keys() {
        let route = "POST /events key=json:source+json:seq";
        let a = identity(route, &req("/events", &[JSON], r#"{"source":"s1","seq":7}"#)).unwrap().unwrap();
        let b = identity(route, &req("/events", &[JSON], r#"{"seq":7, "source":"s1"}"#)).unwrap().unwrap();
        let c = identity(route, &req("/events", &[JSON], r#"{"source":"s1","seq":8}"#)).unwrap().unwrap();
        assert_eq!(a, b, "key order and whitespace change neither key nor fingerprint");
        assert_ne!(a.key, c.key);
        assert!(a.key.starts_with(b"gw:") && a.key.len() == 3 + 64);
        let nested = "POST /register key=json:user.openid";
        let n = identity(nested, &req("/register", &[JSON], r#"{"user":{"openid":"o1"}}"#)).unwrap();
        assert!(n.is_some());
        let e = identity(route, &req("/events", &[JSON], r#"{"source":"s1"}"#)).unwrap_err();
        assert_eq!(e, ExtractError::Missing("json:seq".into()));
    }

    #[test]
    fn part_boundaries_are_kept() {
        let route = "POST /e key=query:a+query:b";
        let x = identity(route, &req("/e?a=ab&b=c", &[], "")).unwrap().unwrap();
        let y = identity(route, &req("/e?a=a&b=bc", &[], "")).unwrap().unwrap();
        assert_ne!(x.key, y.key);
    }

    #[test]
    fn header_query_and_path_sources() {
        let h = identity("POST /a key=header:X-Request-Id", &req("/a", &[("x-request-id", "r1")], "")).unwrap();
        assert!(h.is_some());
        let q1 = identity("POST /a key=query:rid", &req("/a?x=1&rid=a%20b", &[], "")).unwrap().unwrap();
        let q2 = identity("POST /a key=query:rid", &req("/a?rid=a+b&x=1", &[], "")).unwrap().unwrap();
        assert_eq!(q1.key, q2.key, "percent-decoding makes both spellings one key");
        let p1 = identity("POST /o/{id}/pay key=path:id", &req("/o/1/pay", &[], "")).unwrap().unwrap();
        let p2 = identity("POST /o/{id}/pay key=path:id", &req("/o/2/pay", &[], "")).unwrap().unwrap();
        assert_ne!(p1.key, p2.key);
        assert_eq!(identity("POST /a key=query:rid", &req("/a?x=1", &[], "")).unwrap(), None);
    }

    #[test]
    fn scope_separates_clients() {
        let route = "POST /a key=header:Idempotency-Key scope=header:Authorization";
        let a = identity(route, &req("/a", &[("idempotency-key", "k"), ("authorization", "Bearer A")], ""));
        let b = identity(route, &req("/a", &[("idempotency-key", "k"), ("authorization", "Bearer B")], ""));
        assert_ne!(a.unwrap().unwrap().key, b.unwrap().unwrap().key);
    }

    #[test]
    fn fingerprint_covers_method_path_query_and_canonical_body() {
        let route = "POST /a/{id} key=header:K";
        let base = identity(route, &req("/a/1?q=1", &[("k", "x"), JSON], r#"{"a":1,"b":2}"#)).unwrap().unwrap();
        let same = identity(route, &req("/a/1?q=1", &[("k", "x"), JSON], "{ \"b\":2,\n\"a\":1 }")).unwrap().unwrap();
        assert_eq!(base, same);
        for other in [
            req("/a/1?q=2", &[("k", "x"), JSON], r#"{"a":1,"b":2}"#),
            req("/a/1?q=1", &[("k", "x"), JSON], r#"{"a":1,"b":3}"#),
        ] {
            let o = identity(route, &other).unwrap().unwrap();
            assert_eq!(o.key, base.key);
            assert_ne!(o.fingerprint, base.fingerprint);
        }
        // Without a JSON content type the body is hashed as sent.
        let raw1 = identity(route, &req("/a/1", &[("k", "x")], r#"{"a":1}"#)).unwrap().unwrap();
        let raw2 = identity(route, &req("/a/1", &[("k", "x")], r#"{ "a":1}"#)).unwrap().unwrap();
        assert_ne!(raw1.fingerprint, raw2.fingerprint);
    }

    #[test]
    fn field_fingerprints_ignore_other_fields() {
        let route = "POST /pay key=header:K fingerprint=json:amount+json:currency";
        let a = identity(route, &req("/pay", &[("k", "x"), JSON], r#"{"amount":5,"currency":"EUR","note":"a"}"#));
        let b = identity(route, &req("/pay", &[("k", "x"), JSON], r#"{"amount":5,"currency":"EUR","note":"b"}"#));
        let c = identity(route, &req("/pay", &[("k", "x"), JSON], r#"{"amount":6,"currency":"EUR"}"#));
        let (a, b, c) = (a.unwrap().unwrap(), b.unwrap().unwrap(), c.unwrap().unwrap());
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        let off = identity("POST /pay key=header:K fingerprint=none", &req("/pay", &[("k", "x")], "")).unwrap();
        assert_eq!(off.unwrap().fingerprint, None);
    }

    #[test]
    fn bad_keys_are_refused() {
        let route = "POST /a key=header:Idempotency-Key";
        let long = "k".repeat(256);
        assert!(matches!(
            identity(route, &req("/a", &[("idempotency-key", &long)], "")),
            Err(ExtractError::Invalid { .. })
        ));
        let twice = req("/a", &[("idempotency-key", "a"), ("idempotency-key", "b")], "");
        assert!(matches!(identity(route, &twice), Err(ExtractError::Invalid { .. })));
        let not_json = identity("POST /a key=json:x", &req("/a", &[JSON], "nope"));
        assert!(matches!(not_json, Err(ExtractError::Invalid { .. })));
        let long_query = format!("/a?k={}", "q".repeat(256));
        assert!(matches!(
            identity("POST /a key=query:k", &req(&long_query, &[], "")),
            Err(ExtractError::Invalid { .. })
        ));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), b"a/b%zz%4".to_vec());
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
