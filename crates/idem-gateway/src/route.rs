//! Routes: which requests are idempotent, where their key comes from, and
//! their failure policy. One syntax, used by `--route`, by the config file
//! (a `[[route]]` table holds the same options as fields) and by other
//! implementations of the gateway's semantics:
//!
//! ```text
//! METHOD PATH key=SOURCE[+SOURCE...] [fingerprint=request|none|SOURCE[+SOURCE...]]
//!             [concurrent=wait|conflict] [wait=DURATION] [keep=DURATION]
//!             [require=true|false] [scope=SOURCE] [on_5xx=abort|store]
//!             [on_timeout=keep|abort]
//! SOURCE   = header:NAME | json:FIELD[.FIELD...] | query:NAME | path:NAME
//! DURATION = integer with unit ms, s, m, h or d (a bare integer is ms)
//! ```

use std::fmt;
use std::str::FromStr;

use http::header::HeaderName;
use http::Method;
use serde::{Deserialize, Serialize};

/// Why a route (or a part of one) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route '{spec}': {reason}")]
pub struct RouteError {
    spec: String,
    reason: String,
}

impl RouteError {
    fn new(spec: &str, reason: impl Into<String>) -> Self {
        RouteError { spec: spec.to_string(), reason: reason.into() }
    }
}

/// Where one part of a key (or a scope, or a fingerprint field) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header.
    Header(HeaderName),
    /// A field of a JSON body, as a path of object keys.
    Json(Vec<String>),
    /// A query-string parameter.
    Query(String),
    /// A parameter of the route's path template.
    Path(String),
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = s.split_once(':').ok_or_else(|| format!("'{s}' is not KIND:NAME"))?;
        if name.is_empty() {
            return Err(format!("'{s}' names nothing after '{kind}:'"));
        }
        match kind {
            "header" => {
                HeaderName::from_str(name).map(Source::Header).map_err(|_| format!("'{name}' is not a header name"))
            }
            "json" => {
                let path: Vec<String> = name.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!("'{name}' has an empty field in its dotted path"));
                }
                Ok(Source::Json(path))
            }
            "query" => Ok(Source::Query(name.to_string())),
            "path" => Ok(Source::Path(name.to_string())),
            _ => Err(format!("'{kind}' is not a source (header, json, query or path)")),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Header(h) => write!(f, "header:{h}"),
            Source::Json(p) => write!(f, "json:{}", p.join(".")),
            Source::Query(q) => write!(f, "query:{q}"),
            Source::Path(p) => write!(f, "path:{p}"),
        }
    }
}

fn parse_sources(s: &str) -> Result<Vec<Source>, String> {
    s.split('+').map(Source::from_str).collect()
}

/// What the fingerprint of a request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FingerprintSpec {
    /// Method, path, query and the canonical body (the default).
    Request,
    /// Only the named fields.
    Fields(Vec<Source>),
    /// No fingerprint: a reused key is never refused.
    Off,
}

/// What a duplicate gets while the first request is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrent {
    /// Wait (up to the route's `wait`) for the first request's outcome, then replay it.
    Wait,
    /// Answer 409 with `Retry-After` at once.
    Conflict,
}

/// What a 5xx from the upstream does to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On5xx {
    /// Remove the record: a retry runs again (the default).
    Abort,
    /// Store the 5xx and replay it, as Stripe does.
    Store,
}

/// What an unknown outcome (an upstream timeout, a connection lost after
/// the request was sent) does to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Leave the record in flight until its lease ends (the default): the
    /// request may have run, so no second execution before then.
    Keep,
    /// Remove the record: a retry runs at once (the operation may then run twice).
    Abort,
}

/// Per-route values that fall back to gateway-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDefaults {
    /// How long a duplicate waits for the first request's outcome, ms.
    pub wait_ms: u64,
    /// How long a stored response is replayed, ms.
    pub keep_ms: u64,
    /// What a concurrent duplicate gets.
    pub concurrent: Concurrent,
    /// Client scope, hashed into the key (e.g. `header:Authorization`).
    pub scope: Option<Source>,
    /// 5xx policy.
    pub on_5xx: On5xx,
    /// Unknown-outcome policy.
    pub on_timeout: OnTimeout,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        RouteDefaults {
            wait_ms: WAIT_MS_DEFAULT,
            keep_ms: KEEP_MS_DEFAULT,
            concurrent: Concurrent::Wait,
            scope: None,
            on_5xx: On5xx::Abort,
            on_timeout: OnTimeout::Keep,
        }
    }
}

/// Default wait of a concurrent duplicate, ms.
pub const WAIT_MS_DEFAULT: u64 = 10_000;
/// Default retention of a stored response, ms (24 hours).
pub const KEEP_MS_DEFAULT: u64 = 86_400_000;
/// Longest wait the store accepts, ms (the contract's WAIT bound).
pub const WAIT_MS_MAX: u64 = 5 * 60 * 1000;
/// Longest retention the store accepts, ms (the contract's KEEP bound).
pub const KEEP_MS_MAX: u64 = 30 * 24 * 3600 * 1000;

/// A route as written in a config file: the same options as the string form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path template, e.g. `/orders/{id}/pay`.
    pub path: String,
    /// Key sources, `+`-separated.
    pub key: String,
    /// `request` (default), `none`, or field sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `wait` or `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<String>,
    /// Wait bound for concurrent duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Retention of the stored response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    /// Whether a request without its key is refused (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<bool>,
    /// Client scope source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `abort` or `store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_5xx: Option<String>,
    /// `keep` or `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

impl FromStr for RouteTable {
    type Err = RouteError;
    /// Parses the one-line form `METHOD PATH key=... [option=value]...`.
    fn from_str(spec: &str) -> Result<Self, RouteError> {
        let mut words = spec.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            return Err(RouteError::new(spec, "expected 'METHOD PATH key=SOURCE [option=value]...'"));
        };
        let mut t = RouteTable { method: method.to_string(), path: path.to_string(), ..Default::default() };
        let mut key = None;
        for word in words {
            let (name, value) =
                word.split_once('=').ok_or_else(|| RouteError::new(spec, format!("'{word}' is not option=value")))?;
            let slot = match name {
                "key" => &mut key,
                "fingerprint" => &mut t.fingerprint,
                "concurrent" => &mut t.concurrent,
                "wait" => &mut t.wait,
                "keep" => &mut t.keep,
                "scope" => &mut t.scope,
                "on_5xx" => &mut t.on_5xx,
                "on_timeout" => &mut t.on_timeout,
                "require" => {
                    if t.require.is_some() {
                        return Err(RouteError::new(spec, "option 'require' is given twice"));
                    }
                    t.require = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(RouteError::new(spec, "require must be true or false")),
                    });
                    continue;
                }
                _ => return Err(RouteError::new(spec, format!("unknown option '{name}'"))),
            };
            if slot.is_some() {
                return Err(RouteError::new(spec, format!("option '{name}' is given twice")));
            }
            *slot = Some(value.to_string());
        }
        t.key = key.ok_or_else(|| RouteError::new(spec, "key=SOURCE is required"))?;
        Ok(t)
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} key={}", self.method, self.path, self.key)?;
        let opts = [
            ("fingerprint", &self.fingerprint),
            ("concurrent", &self.concurrent),
            ("wait", &self.wait),
            ("keep", &self.keep),
            ("scope", &self.scope),
            ("on_5xx", &self.on_5xx),
            ("on_timeout", &self.on_timeout),
        ];
        for (name, v) in opts {
            if let Some(v) = v {
                write!(f, " {name}={v}")?;
            }
        }
        if let Some(r) = self.require {
            write!(f, " require={r}")?;
        }
        Ok(())
    }
}

/// Parses a duration: an integer with unit `ms`, `s`, `m`, `h` or `d`; a bare integer is milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 30s, 24h)"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}' has an unknown unit (ms, s, m, h or d)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("'{s}' is too long"))
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A path with `{name}` parameters, each a whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    /// `None` matches every path (the IETF mode's implicit route).
    segments: Option<Vec<Segment>>,
}

impl PathTemplate {
    /// Parses `/a/{b}/c`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path '{text}' must start with '/'"));
        }
        let mut segments = Vec::new();
        for seg in text[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(format!("path '{text}' has a malformed parameter '{seg}'"));
                }
                if segments.iter().any(|s| matches!(s, Segment::Param(n) if n == name)) {
                    return Err(format!("path '{text}' names parameter '{name}' twice"));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(format!("path '{text}': a parameter must be a whole segment, as in /a/{{id}}/b"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathTemplate { text: text.to_string(), segments: Some(segments) })
    }

    /// The template that matches every path.
    pub fn any() -> Self {
        PathTemplate { text: "*".to_string(), segments: None }
    }

    /// The parameters of `path` if it matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let Some(segments) = &self.segments else { return Some(Vec::new()) };
        let rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let mut parts = rest.split('/');
        for seg in segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) if !part.is_empty() => params.push((name.clone(), part.to_string())),
                Segment::Param(_) => return None,
            }
        }
        parts.next().is_none().then_some(params)
    }

    fn has_param(&self, name: &str) -> bool {
        self.segments.iter().flatten().any(|s| matches!(s, Segment::Param(n) if n == name))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One idempotent route, resolved against the defaults.
#[derive(Debug, Clone)]
pub struct Route {
    methods: Vec<Method>,
    path: PathTemplate,
    key: Vec<Source>,
    fingerprint: FingerprintSpec,
    concurrent: Concurrent,
    wait_ms: u64,
    keep_ms: u64,
    require: bool,
    scope: Option<Source>,
    on_5xx: On5xx,
    on_timeout: OnTimeout,
    /// Part of every stored key: two routes never share records.
    id: String,
}

impl Route {
    /// Resolves a route table against the defaults, checking every option.
    pub fn new(t: &RouteTable, d: &RouteDefaults) -> Result<Route, RouteError> {
        let spec = t.to_string();
        let err = |reason: String| RouteError::new(&spec, reason);
        let method =
            Method::from_bytes(t.method.as_bytes()).map_err(|_| err(format!("'{}' is not a method", t.method)))?;
        let path = PathTemplate::parse(&t.path).map_err(err)?;
        let key = parse_sources(&t.key).map_err(err)?;
        let fingerprint = match t.fingerprint.as_deref() {
            None | Some("request") => FingerprintSpec::Request,
            Some("none") => FingerprintSpec::Off,
            Some(fields) => FingerprintSpec::Fields(parse_sources(fields).map_err(err)?),
        };
        let concurrent = match t.concurrent.as_deref() {
            None => d.concurrent,
            Some("wait") => Concurrent::Wait,
            Some("conflict") => Concurrent::Conflict,
            Some(o) => return Err(err(format!("concurrent must be wait or conflict, got '{o}'"))),
        };
        let on_5xx = match t.on_5xx.as_deref() {
            None => d.on_5xx,
            Some("abort") => On5xx::Abort,
            Some("store") => On5xx::Store,
            Some(o) => return Err(err(format!("on_5xx must be abort or store, got '{o}'"))),
        };
        let on_timeout = match t.on_timeout.as_deref() {
            None => d.on_timeout,
            Some("keep") => OnTimeout::Keep,
            Some("abort") => OnTimeout::Abort,
            Some(o) => return Err(err(format!("on_timeout must be keep or abort, got '{o}'"))),
        };
        let wait_ms = t.wait.as_deref().map(parse_duration_ms).transpose().map_err(err)?.unwrap_or(d.wait_ms);
        let keep_ms = t.keep.as_deref().map(parse_duration_ms).transpose().map_err(err)?.unwrap_or(d.keep_ms);
        if wait_ms > WAIT_MS_MAX {
            return Err(err(format!("wait may be at most {WAIT_MS_MAX} ms")));
        }
        if keep_ms == 0 || keep_ms > KEEP_MS_MAX {
            return Err(err(format!("keep must be 1..={KEEP_MS_MAX} ms")));
        }
        let scope = match t.scope.as_deref() {
            None => d.scope.clone(),
            Some(s) => Some(s.parse().map_err(err)?),
        };
        let fields = match &fingerprint {
            FingerprintSpec::Fields(f) => f.as_slice(),
            _ => &[],
        };
        for src in key.iter().chain(fields).chain(scope.iter()) {
            if let Source::Path(name) = src {
                if !path.has_param(name) {
                    return Err(err(format!("path:{name} is not a parameter of {}", t.path)));
                }
            }
        }
        let id = format!("{method} {path}");
        Ok(Route {
            methods: vec![method],
            path,
            key,
            fingerprint,
            concurrent,
            wait_ms,
            keep_ms,
            require: t.require.unwrap_or(true),
            scope,
            on_5xx,
            on_timeout,
            id,
        })
    }

    /// Parses and resolves the one-line form.
    pub fn parse(spec: &str, d: &RouteDefaults) -> Result<Route, RouteError> {
        Route::new(&spec.parse()?, d)
    }

    /// The implicit route of IETF mode: POST and PATCH keyed by
    /// `Idempotency-Key`, on any path, optional (no header: not idempotent).
    pub fn ietf(d: &RouteDefaults) -> Route {
        Route {
            methods: vec![Method::POST, Method::PATCH],
            path: PathTemplate::any(),
            key: vec![Source::Header(HeaderName::from_static("idempotency-key"))],
            fingerprint: FingerprintSpec::Request,
            concurrent: d.concurrent,
            wait_ms: d.wait_ms,
            keep_ms: d.keep_ms,
            require: false,
            scope: d.scope.clone(),
            on_5xx: d.on_5xx,
            on_timeout: d.on_timeout,
            // One record space for every path: a key reused on another
            // endpoint then fails the fingerprint check (422), as Stripe
            // refuses a key used for a different endpoint.
            id: "ietf".to_string(),
        }
    }

    /// The path parameters if this route serves `method` on `path`.
    pub fn matches(&self, method: &Method, path: &str) -> Option<Vec<(String, String)>> {
        if !self.methods.contains(method) {
            return None;
        }
        self.path.matches(path)
    }

    /// The key sources, combined in order.
    pub fn key(&self) -> &[Source] {
        &self.key
    }
    /// What the fingerprint covers.
    pub fn fingerprint(&self) -> &FingerprintSpec {
        &self.fingerprint
    }
    /// What a concurrent duplicate gets.
    pub fn concurrent(&self) -> Concurrent {
        self.concurrent
    }
    /// How long a duplicate waits, ms (0 under `concurrent=conflict`).
    pub fn wait_ms(&self) -> u64 {
        match self.concurrent {
            Concurrent::Wait => self.wait_ms,
            Concurrent::Conflict => 0,
        }
    }
    /// How long the stored response is replayed, ms.
    pub fn keep_ms(&self) -> u64 {
        self.keep_ms
    }
    /// Whether a request without its key gets 400.
    pub fn require(&self) -> bool {
        self.require
    }
    /// The client scope source.
    pub fn scope(&self) -> Option<&Source> {
        self.scope.as_ref()
    }
    /// 5xx policy.
    pub fn on_5xx(&self) -> On5xx {
        self.on_5xx
    }
    /// Unknown-outcome policy.
    pub fn on_timeout(&self) -> OnTimeout {
        self.on_timeout
    }
    /// The route's identity inside stored keys.
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> RouteDefaults {
        RouteDefaults::default()
    }

    #[test]
    fn one_line_form_with_every_option() {
        let r = Route::parse(
            "POST /orders/{id}/pay key=path:id+header:X-Req fingerprint=json:amount concurrent=conflict \
             wait=2s keep=7d require=false scope=header:Authorization on_5xx=store on_timeout=abort",
            &d(),
        )
        .unwrap();
        assert_eq!(r.key(), &[Source::Path("id".into()), Source::Header(HeaderName::from_static("x-req"))]);
        assert_eq!(r.fingerprint(), &FingerprintSpec::Fields(vec![Source::Json(vec!["amount".into()])]));
        assert_eq!(r.concurrent(), Concurrent::Conflict);
        assert_eq!(r.wait_ms(), 0, "conflict never waits");
        assert_eq!(r.keep_ms(), 7 * 86_400_000);
        assert!(!r.require());
        assert_eq!(r.scope(), Some(&Source::Header(HeaderName::from_static("authorization"))));
        assert_eq!((r.on_5xx(), r.on_timeout()), (On5xx::Store, OnTimeout::Abort));
        assert_eq!(r.id(), "POST /orders/{id}/pay");
    }

    #[test]
    fn defaults_fill_what_a_route_leaves_out() {
        let r = Route::parse("POST /register key=json:user.openid", &d()).unwrap();
        assert_eq!(r.key(), &[Source::Json(vec!["user".into(), "openid".into()])]);
        assert_eq!(r.fingerprint(), &FingerprintSpec::Request);
        assert_eq!(r.concurrent(), Concurrent::Wait);
        assert_eq!(r.wait_ms(), WAIT_MS_DEFAULT);
        assert!(r.require());
    }

    #[test]
    fn string_and_table_forms_agree() {
        let line = "PATCH /a/{x} key=query:k+json:s.t keep=30s require=true";
        let t: RouteTable = line.parse().unwrap();
        assert_eq!(t.to_string().parse::<RouteTable>().unwrap(), t);
        assert_eq!(t.keep.as_deref(), Some("30s"));
    }

    #[test]
    fn bad_routes_say_why() {
        for (spec, why) in [
            ("POST", "expected"),
            ("POST /a", "key=SOURCE is required"),
            ("POST /a key=cookie:x", "not a source"),
            ("POST /a key=json:a..b", "empty field"),
            ("POST /a key=path:id", "not a parameter"),
            ("POST a key=query:k", "must start with '/'"),
            ("POST /a/x{id} key=query:k", "whole segment"),
            ("POST /a key=query:k concurrent=maybe", "wait or conflict"),
            ("POST /a key=query:k keep=3y", "unknown unit"),
            ("POST /a key=query:k keep=0", "keep must be"),
            ("POST /a key=query:k wait=10m", "wait may be at most"),
            ("POST /a key=query:k key=query:j", "twice"),
            ("POST /a key=query:k color=red", "unknown option"),
            ("POST /a key=query:k require=yes", "true or false"),
        ] {
            let e = Route::parse(spec, &d()).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn path_templates_match_whole_segments() {
        let p = PathTemplate::parse("/orders/{id}/pay").unwrap();
        assert_eq!(p.matches("/orders/42/pay"), Some(vec![("id".into(), "42".into())]));
        assert_eq!(p.matches("/orders//pay"), None);
        assert_eq!(p.matches("/orders/42/pay/x"), None);
        assert_eq!(p.matches("/orders/42"), None);
        assert_eq!(p.matches("/order/42/pay"), None);
        assert_eq!(PathTemplate::any().matches("/anything/at/all"), Some(vec![]));
    }

    #[test]
    fn ietf_route_takes_post_and_patch_only() {
        let r = Route::ietf(&d());
        assert!(r.matches(&Method::POST, "/x").is_some());
        assert!(r.matches(&Method::PATCH, "/x/y").is_some());
        for m in [Method::GET, Method::PUT, Method::DELETE] {
            assert!(r.matches(&m, "/x").is_none());
        }
        assert!(!r.require());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("3s"), Ok(3000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("-1s").is_err());
    }
}
