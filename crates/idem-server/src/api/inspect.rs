//! `GET /v1/inspect/{key}`: what every primitive holds under one key.
//! The idempotency record comes from [`idem_core::Backend::inspect_idem`]
//! (fence, attempt, lease left and waiters: every store idem ships does
//! this), else from IDEM.GET, with `attempt` and `waiters` null and
//! `unknown_reason` saying why; the other primitives from their read
//! commands, so inspection works on every backend and changes nothing.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use idem_core::machine::IdemView;
use idem_core::{CmdResult, Command, Reply};
use serde_json::{json, Value};

use super::{problem, Principal};
use crate::state::ServerState;

/// The read commands run, each on the key.
const READS: [&str; 6] = ["IDEM.GET", "LOCK.INFO", "OWNER", "COUNTER.GET", "VALUE.GET", "FSM.GET"];

pub(crate) async fn inspect(
    State(state): State<Arc<ServerState>>,
    principal: Option<Extension<Principal>>,
    Path(key): Path<String>,
) -> Response {
    let key = Bytes::from(key);
    if let Some(Extension(Principal(user))) = &principal {
        for name in READS {
            if let Err(e) = user.check_read(name, &key) {
                return problem::from_error(&e);
            }
        }
    }
    let mut cmds = Vec::with_capacity(READS.len());
    for name in READS {
        let args = [Bytes::from_static(name.as_bytes()), key.clone()];
        match Command::parse(&args, &state.config().limits) {
            Ok(c) => cmds.push(c),
            Err(e) => return problem::from_error(&e),
        }
    }
    let results = state.backend().execute_batch(cmds).await;
    let [idem, lock, owner, counter, value, fsm] = match <[CmdResult; READS.len()]>::try_from(results) {
        Ok(r) => r,
        Err(_) => return problem::from_error(&idem_core::CmdError::busy("backend answered a partial batch")),
    };
    let idem = match state.backend().inspect_idem(&key).await {
        Ok(Some(view)) => idem_view(&view),
        Ok(None) => unknown(from_get(idem), "this backend keeps no attempt or waiter count to read"),
        Err(e) => unknown(from_get(idem), &format!("the backend's record could not be read: {e}")),
    };
    let body = json!({
        "key": String::from_utf8_lossy(&key),
        "idem": idem,
        "lock": lock_info(lock),
        "claim": { "owner": plain(owner) },
        "counter": { "value": plain(counter) },
        "value": versioned(value),
        "fsm": { "state": plain(fsm) },
    });
    Json(body).into_response()
}

fn idem_view(v: &IdemView) -> Value {
    match v {
        IdemView::Absent { attempt } => json!({ "state": "absent", "attempt": attempt }),
        IdemView::Running { fence, attempt, lease_left_ms, waiters, waiters_scope } => json!({
            "state": "running", "fence": fence, "attempt": attempt,
            "lease_left_ms": lease_left_ms, "waiters": waiters, "waiters_scope": waiters_scope.as_str(),
        }),
        IdemView::Done { result_bytes, keep_left_ms } => {
            json!({ "state": "done", "result_bytes": result_bytes, "keep_left_ms": keep_left_ms })
        }
    }
}

/// `view` (from IDEM.GET) with the figures IDEM.GET does not carry as
/// null, and why.
fn unknown(mut view: Value, reason: &str) -> Value {
    if let Value::Object(m) = &mut view {
        if m.get("state").and_then(Value::as_str) == Some("running") {
            m.insert("waiters".into(), Value::Null);
        }
        if m.contains_key("state") {
            m.insert("attempt".into(), Value::Null);
            m.insert("unknown_reason".into(), Value::String(reason.to_string()));
        }
    }
    view
}

/// The IDEM.GET reply as the inspector shows it (no attempt nor waiters).
fn from_get(r: CmdResult) -> Value {
    match r {
        Ok(Reply::Array(items)) => match (items.first().and_then(|w| w.word()), &items[1..]) {
            (Some("running"), [fence, left]) => {
                json!({ "state": "running", "fence": plain(Ok(fence.clone())), "lease_left_ms": plain(Ok(left.clone())) })
            }
            (Some("done"), [result]) => json!({ "state": "done", "result": plain(Ok(result.clone())) }),
            (Some(w), _) => json!({ "state": w }),
            _ => json!({ "error": "unexpected reply" }),
        },
        other => json!({ "error": plain(other) }),
    }
}

fn lock_info(r: CmdResult) -> Value {
    match r {
        Ok(Reply::Array(items)) => match (items.first().and_then(|w| w.word()), &items[1..]) {
            (Some("held"), [owner, fence, left, waiters]) => json!({
                "state": "held", "owner": plain(Ok(owner.clone())), "fence": plain(Ok(fence.clone())),
                "lease_left_ms": plain(Ok(left.clone())), "waiters": plain(Ok(waiters.clone())),
            }),
            (Some(w), _) => json!({ "state": w }),
            _ => json!({ "error": "unexpected reply" }),
        },
        other => json!({ "error": plain(other) }),
    }
}

fn versioned(r: CmdResult) -> Value {
    match r {
        Ok(Reply::Array(items)) if items.len() == 2 => {
            json!({ "value": plain(Ok(items[0].clone())), "version": plain(Ok(items[1].clone())) })
        }
        other => json!({ "value": plain(other) }),
    }
}

/// A reply (or error) as plain JSON.
fn plain(r: CmdResult) -> Value {
    match r {
        Ok(reply) => crate::http::reply_json(&reply),
        Err(e) => Value::String(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_the_backend_cannot_read_shows_null_with_a_reason() {
        let get = Ok(Reply::status_with("running", [Reply::Int(7), Reply::Int(900)]));
        let v = unknown(from_get(get), "why");
        assert_eq!(
            v,
            json!({ "state": "running", "fence": 7, "lease_left_ms": 900, "attempt": null, "waiters": null, "unknown_reason": "why" })
        );
        let v = unknown(from_get(Ok(Reply::status("absent"))), "why");
        assert_eq!(v, json!({ "state": "absent", "attempt": null, "unknown_reason": "why" }));
    }

    #[test]
    fn a_running_view_names_its_waiters_scope() {
        let view = IdemView::Running {
            fence: 3,
            attempt: 2,
            lease_left_ms: 10,
            waiters: 1,
            waiters_scope: idem_core::machine::WaitersScope::ThisProcess,
        };
        assert_eq!(
            idem_view(&view),
            json!({ "state": "running", "fence": 3, "attempt": 2, "lease_left_ms": 10, "waiters": 1, "waiters_scope": "this_server" })
        );
    }
}
