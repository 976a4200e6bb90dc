//! What a primitive's reply means for the metrics: its outcome label, and
//! whether it is a duplicate that idem absorbed.

use idem_core::{CmdResult, ErrorCode, Reply};

/// Outcome labels, a fixed set: the status words of docs/commands.md,
/// then the shapes of replies without a word, then errors.
pub(crate) const OUTCOMES: [&str; 27] = [
    "started",
    "running",
    "done",
    "absent",
    "ok",
    "claimed",
    "held",
    "acquired",
    "busy",
    "renewed",
    "lost",
    "free",
    "refused",
    "replayed",
    "conflict",
    "moved",
    "already",
    "reserved",
    // Replies without a status word: integers (DEL, RELEASE, UNLOCK,
    // TOKEN.USE, COUNTER.GET, SLOTS.RELEASE), bytes, nil, word-less arrays.
    "zero",
    "positive",
    "value",
    "nil",
    // Errors: the two the contract uses to stop a caller, overload, and the rest.
    "mismatch",
    "stale",
    "overloaded",
    "readonly",
    "error",
];

/// Where the word outcomes end in [`OUTCOMES`].
const WORDS: usize = 18;

/// The index in [`OUTCOMES`] of a command's result.
pub(crate) fn outcome_index(result: &CmdResult) -> usize {
    match result {
        Ok(reply) => match reply {
            Reply::Array(items) => match items.first() {
                Some(Reply::Word(w)) => word_index(w),
                _ => 20,
            },
            Reply::Word(w) => word_index(w),
            Reply::Int(0) => 18,
            Reply::Int(_) => 19,
            Reply::Bulk(_) => 20,
            Reply::Nil => 21,
        },
        Err(e) => match e.code {
            ErrorCode::Mismatch => 22,
            ErrorCode::Stale => 23,
            ErrorCode::Busy => 24,
            ErrorCode::ReadOnly => 25,
            _ => 26,
        },
    }
}

fn word_index(w: &str) -> usize {
    // A word outside the set would be a new status word in the contract;
    // it is counted as a value rather than dropped.
    OUTCOMES[..WORDS].iter().position(|o| *o == w).unwrap_or(20)
}

/// The primitives, the `primitive` label of the duplicate counter.
pub(crate) const PRIMITIVES: [&str; 8] = ["idem", "claim", "lock", "token", "counter", "value", "fsm", "slots"];

/// The primitive a command (by its name in `COMMAND_TABLE`) belongs to.
pub(crate) fn primitive_of(command: &str) -> usize {
    let family = command.split('.').next().unwrap_or_default();
    match family {
        "IDEM" => 0,
        "CLAIM" | "RELEASE" | "OWNER" => 1,
        "LOCK" | "RENEW" | "UNLOCK" => 2,
        "TOKEN" => 3,
        "COUNTER" => 4,
        "VALUE" => 5,
        "FSM" => 6,
        _ => 7,
    }
}

/// Whether `outcome` of `command` is a duplicate idem absorbed: a second
/// attempt at an effect that already happened, or is happening, which idem
/// stopped from happening again. The definition is written out in
/// docs/observability.md; keep the two in step.
pub(crate) fn is_absorbed_duplicate(command: &str, outcome: usize) -> bool {
    matches!(
        (command, OUTCOMES[outcome]),
        ("IDEM.BEGIN", "done" | "running")
            | ("CLAIM" | "CLAIM.ALL", "held")
            | ("LOCK", "busy")
            | ("TOKEN.USE", "zero")
            | ("COUNTER.ADD", "replayed")
            | ("VALUE.SET", "conflict")
            | ("FSM.MOVE", "already")
            | ("SLOTS.RESERVE", "conflict")
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use idem_core::CmdError;

    use super::*;

    #[test]
    fn results_map_to_their_label() {
        let label = |r: CmdResult| OUTCOMES[outcome_index(&r)];
        assert_eq!(label(Ok(Reply::status_with("started", [Reply::Int(3), Reply::Int(1)]))), "started");
        assert_eq!(label(Ok(Reply::status("claimed"))), "claimed");
        assert_eq!(label(Ok(Reply::status_with("replayed", [Reply::Int(3)]))), "replayed");
        assert_eq!(label(Ok(Reply::Int(0))), "zero");
        assert_eq!(label(Ok(Reply::Int(1))), "positive");
        assert_eq!(label(Ok(Reply::Bulk(Bytes::from_static(b"x")))), "value");
        assert_eq!(label(Ok(Reply::Array(vec![Reply::Bulk(Bytes::new()), Reply::Int(1)]))), "value");
        assert_eq!(label(Ok(Reply::Nil)), "nil");
        assert_eq!(label(Err(CmdError::new(ErrorCode::Mismatch, "x"))), "mismatch");
        assert_eq!(label(Err(CmdError::new(ErrorCode::Stale, "x"))), "stale");
        assert_eq!(label(Err(CmdError::busy("x"))), "overloaded");
        assert_eq!(label(Err(CmdError::syntax("x"))), "error");
        assert_eq!(OUTCOMES[WORDS], "zero");
    }

    #[test]
    fn duplicates_are_the_documented_pairs() {
        let at = |w: &str| OUTCOMES.iter().position(|o| *o == w).unwrap();
        assert!(is_absorbed_duplicate("IDEM.BEGIN", at("done")));
        assert!(is_absorbed_duplicate("IDEM.BEGIN", at("running")));
        assert!(!is_absorbed_duplicate("IDEM.BEGIN", at("started")));
        assert!(!is_absorbed_duplicate("IDEM.GET", at("done")));
        assert!(is_absorbed_duplicate("TOKEN.USE", at("zero")));
        assert!(!is_absorbed_duplicate("COUNTER.ADD", at("refused")));
        assert_eq!(PRIMITIVES[primitive_of("CLAIM.ALL")], "claim");
        assert_eq!(PRIMITIVES[primitive_of("RENEW")], "lock");
        assert_eq!(PRIMITIVES[primitive_of("SLOTS.GET")], "slots");
    }
}
