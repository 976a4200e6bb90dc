//! The OpenAPI 3.1 document of the HTTP API, built from the route table
//! (`v1::ROUTES`), served at `/openapi.json` and kept in docs/openapi.json
//! (a test checks the two are equal).

use serde_json::{json, Map, Value};

use super::v1::{Kind, Route, ROUTES};

/// The HTTP statuses of a refused command, as `crate::http::status_for` maps them.
const ERRORS: [(&str, &str); 6] = [
    ("400", "ERR: syntax, arity or type"),
    ("401", "NOAUTH: no or wrong password"),
    ("409", "STALE: the fence is no longer current"),
    ("413", "LIMIT: a size or count over a limit"),
    ("422", "MISMATCH: same idempotency key, different fingerprint"),
    ("503", "BUSY (retry after Retry-After) or READONLY"),
];

/// Longest key, owner, name or scope in the document: the server's
/// default `key_bytes_max` (an operator may lower it).
const KEY_CHARS_MAX: usize = 512;

/// The document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = operation(r);
    }
    paths.insert(
        "/v1/inspect/{key}".into(),
        json!({ "get": {
            "operationId": "inspect",
            "summary": "What every primitive holds under a key (read-only)",
            "tags": ["inspect"],
            "parameters": [key_param("key")],
            "responses": responses(json!({ "$ref": "#/components/schemas/Inspection" })),
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idem HTTP API",
            "version": "1",
            "description": "One REST path per primitive command of docs/commands.md. Replies are `{status, reply}`: the status word (null for replies without one) and the whole reply as `/v1/command` writes it. Errors are application/problem+json. Strings are UTF-8; binary bytes need `POST /v1/command` with `{\"base64\": ...}` arguments.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "basic": { "type": "http", "scheme": "basic" },
            },
            "schemas": {
                "Reply": {
                    "type": "object",
                    "required": ["status", "reply"],
                    "properties": {
                        "status": { "type": ["string", "null"], "description": "The status word (started, done, held, ...)." },
                        "reply": { "description": "The whole reply: strings, integers, null, arrays, {\"base64\": ...} for non-UTF-8 bytes." },
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "code": { "type": "string", "enum": ["ERR", "LIMIT", "MISMATCH", "STALE", "NOPERM", "NOAUTH", "READONLY", "BUSY", "OOM", "UNKNOWN", "NOPROTO"] },
                    },
                },
                "Inspection": {
                    "type": "object",
                    "required": ["key", "idem", "lock", "claim", "counter", "value", "fsm"],
                    "properties": {
                        "key": { "type": "string" },
                        "idem": {
                            "type": "object",
                            "description": "The idempotency record: state (absent, running, done); fence, attempt, lease_left_ms, waiters and waiters_scope while running; result_bytes and keep_left_ms when done; attempt when absent. attempt and waiters are null, with unknown_reason, when the backend cannot read its record (see docs/observability.md).",
                            "properties": {
                                "state": { "type": "string" },
                                "fence": { "type": "integer", "minimum": 0 },
                                "attempt": { "type": ["integer", "null"], "minimum": 0 },
                                "lease_left_ms": { "type": "integer", "minimum": 0 },
                                "waiters": { "type": ["integer", "null"], "minimum": 0 },
                                "waiters_scope": { "type": "string", "enum": ["store", "this_server"] },
                                "result_bytes": { "type": "integer", "minimum": 0 },
                                "keep_left_ms": { "type": "integer", "minimum": 0 },
                                "unknown_reason": { "type": "string" },
                            },
                        },
                        "lock": { "type": "object" },
                        "claim": { "type": "object" },
                        "counter": { "type": "object" },
                        "value": { "type": "object" },
                        "fsm": { "type": "object" },
                    },
                },
            },
        },
        "security": [{ "bearer": [] }, { "basic": [] }],
    })
}

fn key_param(name: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "schema": { "type": "string", "minLength": 1, "maxLength": KEY_CHARS_MAX },
    })
}

fn responses(ok: Value) -> Value {
    let mut m = Map::new();
    m.insert(
        "200".into(),
        json!({ "description": "The command's reply", "content": { "application/json": { "schema": ok } } }),
    );
    for (status, why) in ERRORS {
        m.insert(
            status.into(),
            json!({ "description": why, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }),
        );
    }
    Value::Object(m)
}

fn operation(r: &Route) -> Value {
    let mut op = json!({
        "operationId": r.command.to_ascii_lowercase().replace('.', "_"),
        "summary": r.summary,
        "description": format!("Runs `{}` (docs/commands.md).", r.command),
        "tags": [r.path.split('/').nth(2).unwrap_or("v1")],
        "parameters": r.param.map_or_else(Vec::new, |p| vec![key_param(p)]),
        "responses": responses(json!({ "$ref": "#/components/schemas/Reply" })),
    });
    if !r.fields.is_empty() {
        let mut props = Map::new();
        for f in r.fields {
            let mut schema = match f.kind {
                Kind::Str => json!({ "type": "string", "maxLength": KEY_CHARS_MAX }),
                Kind::Ms { min, max } => json!({ "type": "integer", "minimum": min, "maximum": max }),
                Kind::Int => json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX }),
                Kind::Uint => json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
                Kind::List => json!({
                    "type": "array", "minItems": 1, "maxItems": 64,
                    "items": { "type": "string", "minLength": 1, "maxLength": KEY_CHARS_MAX },
                }),
            };
            schema["description"] = Value::String(f.doc.to_string());
            props.insert(f.name.to_string(), schema);
        }
        let required: Vec<&str> = r.fields.iter().filter(|f| f.required).map(|f| f.name).collect();
        op["requestBody"] = json!({
            "required": !required.is_empty(),
            "content": { "application/json": { "schema": {
                "type": "object", "additionalProperties": false, "required": required, "properties": props,
            }}},
        });
    }
    op
}
