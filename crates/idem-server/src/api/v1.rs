//! HTTP API v1: one REST path per primitive command, JSON bodies in and
//! out, errors as `application/problem+json`. Every route is a row of
//! [`ROUTES`]; the router and the OpenAPI document (`openapi`) are both
//! built from it, so they cannot disagree. A route builds the command's
//! arguments and runs them through the same parser as RESP and
//! `/v1/command`: one semantics, one place.

use std::sync::Arc;

use axum::extract::{RawPathParams, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use idem_core::{Command, Reply};
use serde_json::{Map, Value};

use super::{problem, Principal};
use crate::state::ServerState;

/// The JSON type of a body field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string (UTF-8; binary bytes need `/v1/command`).
    Str,
    /// A duration in milliseconds, at least `min`.
    Ms { min: u64, max: u64 },
    /// A signed integer.
    Int,
    /// An unsigned integer (fences, versions, slot numbers).
    Uint,
    /// A non-empty list of strings.
    List,
}

/// One body field: sent positionally after the path parameter when it has
/// no keyword, else as `KEYWORD value`.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    pub(crate) keyword: Option<&'static str>,
    pub(crate) doc: &'static str,
}

/// One route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) command: &'static str,
    /// The path parameter, sent as the command's first argument.
    pub(crate) param: Option<&'static str>,
    pub(crate) fields: &'static [Field],
    pub(crate) summary: &'static str,
}

const DAY_MS: u64 = 86_400_000;
/// LEASE, TTL and KEEP: 1 ms to 30 days (docs/commands.md).
const LEASE: Kind = Kind::Ms { min: 1, max: 30 * DAY_MS };
/// WAIT: 0 to 5 minutes.
const WAIT: Kind = Kind::Ms { min: 0, max: 300_000 };

const fn req(name: &'static str, kind: Kind, doc: &'static str) -> Field {
    Field { name, kind, required: true, keyword: None, doc }
}
const fn opt(name: &'static str, kind: Kind, keyword: &'static str, doc: &'static str) -> Field {
    Field { name, kind, required: false, keyword: Some(keyword), doc }
}
const fn kw(name: &'static str, kind: Kind, keyword: &'static str, doc: &'static str) -> Field {
    Field { name, kind, required: true, keyword: Some(keyword), doc }
}

/// Every route of API v1.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/idem/{key}/begin",
        command: "IDEM.BEGIN",
        param: Some("key"),
        summary: "Start an operation once, or replay its result",
        fields: &[
            opt(
                "fp",
                Kind::Str,
                "FP",
                "Fingerprint of the request; a different one on the same key is MISMATCH (422).",
            ),
            opt("lease_ms", LEASE, "LEASE", "How long the attempt holds the key."),
            opt("wait_ms", WAIT, "WAIT", "Park while another attempt runs."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/idem/{key}/commit",
        command: "IDEM.COMMIT",
        param: Some("key"),
        summary: "Store the result of the attempt holding `fence`",
        fields: &[
            req("fence", Kind::Uint, "The fence BEGIN granted."),
            req("result", Kind::Str, "The result later BEGINs replay."),
            opt("keep_ms", LEASE, "KEEP", "How long the result is replayed."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/idem/{key}/renew",
        command: "IDEM.RENEW",
        param: Some("key"),
        summary: "Extend the lease of the attempt holding `fence`",
        fields: &[
            req("fence", Kind::Uint, "The fence BEGIN granted."),
            kw("lease_ms", LEASE, "LEASE", "The new lease from now."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/idem/{key}/abort",
        command: "IDEM.ABORT",
        param: Some("key"),
        summary: "Give the key up after a retryable failure",
        fields: &[req("fence", Kind::Uint, "The fence BEGIN granted.")],
    },
    Route {
        method: "get",
        path: "/v1/idem/{key}",
        command: "IDEM.GET",
        param: Some("key"),
        summary: "Read an idempotency record",
        fields: &[],
    },
    Route {
        method: "delete",
        path: "/v1/idem/{key}",
        command: "IDEM.DEL",
        param: Some("key"),
        summary: "Delete an idempotency record",
        fields: &[],
    },
    Route {
        method: "post",
        path: "/v1/claims/{key}",
        command: "CLAIM",
        param: Some("key"),
        summary: "Claim a unique key",
        fields: &[
            req("owner", Kind::Str, "Who claims it."),
            opt("ttl_ms", LEASE, "TTL", "Expire the claim after this long."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/claims",
        command: "CLAIM.ALL",
        param: None,
        summary: "Claim several keys, all or none",
        fields: &[req("owner", Kind::Str, "Who claims them."), req("keys", Kind::List, "The keys (at most 1,024).")],
    },
    Route {
        method: "post",
        path: "/v1/claims/{key}/release",
        command: "RELEASE",
        param: Some("key"),
        summary: "Release a claim",
        fields: &[req("owner", Kind::Str, "The owner releasing it.")],
    },
    Route {
        method: "get",
        path: "/v1/claims/{key}",
        command: "OWNER",
        param: Some("key"),
        summary: "Who owns a key",
        fields: &[],
    },
    Route {
        method: "post",
        path: "/v1/locks/{name}",
        command: "LOCK",
        param: Some("name"),
        summary: "Acquire a fenced lock",
        fields: &[
            req("owner", Kind::Str, "Who takes it."),
            kw("lease_ms", LEASE, "LEASE", "How long the lease lasts."),
            opt("wait_ms", WAIT, "WAIT", "Park while someone else holds it."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/locks/{name}/renew",
        command: "RENEW",
        param: Some("name"),
        summary: "Extend a held lock",
        fields: &[req("owner", Kind::Str, "The holder."), kw("lease_ms", LEASE, "LEASE", "The new lease from now.")],
    },
    Route {
        method: "post",
        path: "/v1/locks/{name}/unlock",
        command: "UNLOCK",
        param: Some("name"),
        summary: "Release a lock",
        fields: &[req("owner", Kind::Str, "The holder.")],
    },
    Route {
        method: "get",
        path: "/v1/locks/{name}",
        command: "LOCK.INFO",
        param: Some("name"),
        summary: "Who holds a lock",
        fields: &[],
    },
    Route {
        method: "post",
        path: "/v1/tokens/{scope}",
        command: "TOKEN.NEW",
        param: Some("scope"),
        summary: "Issue a one-time token",
        fields: &[kw("ttl_ms", LEASE, "TTL", "How long the token is valid.")],
    },
    Route {
        method: "post",
        path: "/v1/tokens/{scope}/use",
        command: "TOKEN.USE",
        param: Some("scope"),
        summary: "Spend a one-time token",
        fields: &[req("token", Kind::Str, "The token TOKEN.NEW returned.")],
    },
    Route {
        method: "post",
        path: "/v1/counters/{key}/add",
        command: "COUNTER.ADD",
        param: Some("key"),
        summary: "Add to a bounded counter",
        fields: &[
            req("delta", Kind::Int, "What to add (negative to take)."),
            opt("min", Kind::Int, "MIN", "Refuse to go below."),
            opt("max", Kind::Int, "MAX", "Refuse to go above."),
            opt("op", Kind::Str, "OP", "Op id: applied at most once."),
            opt("keep_ms", LEASE, "KEEP", "How long the op id is remembered (needs op)."),
        ],
    },
    Route {
        method: "get",
        path: "/v1/counters/{key}",
        command: "COUNTER.GET",
        param: Some("key"),
        summary: "Read a counter",
        fields: &[],
    },
    Route {
        method: "get",
        path: "/v1/values/{key}",
        command: "VALUE.GET",
        param: Some("key"),
        summary: "Read a versioned value",
        fields: &[],
    },
    Route {
        method: "put",
        path: "/v1/values/{key}",
        command: "VALUE.SET",
        param: Some("key"),
        summary: "Write a versioned value",
        fields: &[
            req("value", Kind::Str, "The new value."),
            opt("if_version", Kind::Uint, "IFVERSION", "Only if the current version is this (0: only if absent)."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/fsm/{key}/move",
        command: "FSM.MOVE",
        param: Some("key"),
        summary: "Move a state machine",
        fields: &[
            req("to", Kind::Str, "The target state."),
            kw("from", Kind::List, "FROM", "States the move may start from (`none`: absent)."),
        ],
    },
    Route {
        method: "get",
        path: "/v1/fsm/{key}",
        command: "FSM.GET",
        param: Some("key"),
        summary: "Read a state machine",
        fields: &[],
    },
    Route {
        method: "post",
        path: "/v1/slots/{resource}/reserve",
        command: "SLOTS.RESERVE",
        param: Some("resource"),
        summary: "Reserve a range of slots, all or none",
        fields: &[
            req("first", Kind::Uint, "First slot."),
            req("last", Kind::Uint, "Last slot (inclusive)."),
            req("holder", Kind::Str, "Who reserves."),
            opt("size", Kind::Uint, "SIZE", "Slots of a new resource."),
        ],
    },
    Route {
        method: "post",
        path: "/v1/slots/{resource}/release",
        command: "SLOTS.RELEASE",
        param: Some("resource"),
        summary: "Release a holder's slots",
        fields: &[
            req("first", Kind::Uint, "First slot."),
            req("last", Kind::Uint, "Last slot (inclusive)."),
            req("holder", Kind::Str, "Whose slots."),
        ],
    },
    Route {
        method: "get",
        path: "/v1/slots/{resource}",
        command: "SLOTS.GET",
        param: Some("resource"),
        summary: "Read a resource's slots",
        fields: &[],
    },
];

/// The router of every route in [`ROUTES`].
pub(crate) fn routes() -> Router<Arc<ServerState>> {
    let mut router = Router::new();
    for route in ROUTES {
        let filter = match route.method {
            "get" => MethodFilter::GET,
            "put" => MethodFilter::PUT,
            "delete" => MethodFilter::DELETE,
            _ => MethodFilter::POST,
        };
        router = router.route(
            route.path,
            on(
                filter,
                move |state: State<Arc<ServerState>>,
                      principal: Option<Extension<Principal>>,
                      params: RawPathParams,
                      body: Bytes| { handle(route, state, principal, params, body) },
            ),
        );
    }
    router
}

async fn handle(
    route: &'static Route,
    State(state): State<Arc<ServerState>>,
    principal: Option<Extension<Principal>>,
    params: RawPathParams,
    body: Bytes,
) -> Response {
    let param = route.param.and_then(|name| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v));
    let args = match args(route, param, &body) {
        Ok(a) => a,
        Err(why) => return problem::bad_request(why),
    };
    let command = match Command::parse(&args, &state.config().limits) {
        Ok(c) => c,
        Err(e) => return problem::from_error(&e),
    };
    if let Some(Extension(Principal(user))) = &principal {
        let id = crate::metrics::CommandLabel::primitive(&command).index();
        if let Err(e) = user.check_primitive(id, &command) {
            return problem::from_error(&e);
        }
    }
    let probe = state.observe().probe(std::slice::from_ref(&command));
    let result = state.backend().execute(command).await;
    state.observe().finish(probe, std::slice::from_ref(&result));
    match result {
        Ok(reply) => Json(reply_body(&reply)).into_response(),
        Err(e) => problem::from_error(&e),
    }
}

/// The command's arguments from the path parameter's value and the JSON body.
pub(crate) fn args(route: &Route, param: Option<&str>, body: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut out = vec![Bytes::from_static(route.command.as_bytes())];
    if route.param.is_some() {
        let value = param.ok_or("missing path parameter")?;
        out.push(Bytes::copy_from_slice(value.as_bytes()));
    }
    let blank = body.iter().all(|b| b.is_ascii_whitespace());
    let object: Map<String, Value> = if blank {
        Map::new()
    } else if route.fields.is_empty() {
        return Err(format!("{} takes no body", route.path));
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("the body must be a JSON object".into()),
            Err(e) => return Err(format!("the body is not JSON: {e}")),
        }
    };
    if let Some(unknown) = object.keys().find(|k| !route.fields.iter().any(|f| f.name == k.as_str())) {
        return Err(format!("unknown field {unknown:?}"));
    }
    for f in route.fields {
        let Some(v) = object.get(f.name).filter(|v| !v.is_null()) else {
            if f.required {
                return Err(format!("missing field {:?}", f.name));
            }
            continue;
        };
        if let Some(k) = f.keyword {
            out.push(Bytes::from_static(k.as_bytes()));
        }
        match (f.kind, v) {
            (Kind::Str, Value::String(s)) => out.push(Bytes::copy_from_slice(s.as_bytes())),
            (Kind::Int, Value::Number(n)) if n.is_i64() => out.push(Bytes::from(n.to_string())),
            (Kind::Uint | Kind::Ms { .. }, Value::Number(n)) if n.is_u64() => out.push(Bytes::from(n.to_string())),
            (Kind::List, Value::Array(items)) if !items.is_empty() => {
                for item in items {
                    let s = item.as_str().ok_or_else(|| format!("{:?} must hold strings", f.name))?;
                    out.push(Bytes::copy_from_slice(s.as_bytes()));
                }
            }
            _ => return Err(format!("{:?} must be {}", f.name, kind_name(f.kind))),
        }
    }
    Ok(out)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "a string",
        Kind::Int => "an integer",
        Kind::Uint | Kind::Ms { .. } => "a non-negative integer",
        Kind::List => "a non-empty array of strings",
    }
}

/// A reply as a JSON object: `status` (the status word, when the reply has
/// one) and `reply` (the whole reply, as `/v1/command` writes it).
fn reply_body(reply: &Reply) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), reply.word().map_or(Value::Null, |w| Value::String(w.into())));
    m.insert("reply".into(), crate::http::reply_json(reply));
    Value::Object(m)
}
