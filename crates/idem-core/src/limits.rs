//! Bounds on everything a request can make the engine hold. Each has a
//! documented default; operators may lower them (and raise some).

/// How long an external engine (PostgreSQL, MySQL, Redis) keeps an
/// idempotency record whose lease ran out without a commit, counted from the
/// lease end: a later IDEM.BEGIN still sees its attempt number and
/// fingerprint. The default KEEP, so a running record is remembered as long
/// as a done one.
pub const RUNNING_RETAIN_MS: u64 = crate::command::KEEP_MS_DEFAULT;

/// The constants the engines' SQL routines and Lua scripts use, as
/// (placeholder, value): the routine and script texts name each one by its
/// placeholder, and [`with_engine_constants`] writes in the value from here,
/// so a rule is written once, in Rust.
pub const ENGINE_CONSTANTS: &[(&str, u64)] = &[
    ("@RUNNING_RETAIN_MS@", RUNNING_RETAIN_MS),
    // The widest key, owner, name or state a column must hold (MySQL's VARBINARY columns).
    ("@KEY_BYTES_MAX@", Limits::KEY_BYTES_CONTRACT_MAX as u64),
];

/// `text` (SQL routines or a Lua script) with every placeholder of
/// [`ENGINE_CONSTANTS`] replaced by its value. The engine crates test that
/// no `@` is left in what they install.
pub fn with_engine_constants(text: &str) -> String {
    let mut out = text.to_string();
    for (name, value) in ENGINE_CONSTANTS {
        out = out.replace(name, &value.to_string());
    }
    out
}

/// Limits enforced while parsing and applying commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, owner, scope, lock name, op id, state or holder, in bytes (1..=512 by contract).
    pub key_bytes_max: usize,
    /// Longest result or value, in bytes (1 MiB by default).
    pub value_bytes_max: usize,
    /// Longest duration accepted for LEASE, TTL, KEEP and WAIT, in milliseconds (30 days).
    pub duration_ms_max: u64,
    /// Longest WAIT, in milliseconds (5 minutes).
    pub wait_ms_max: u64,
    /// Most keys in one CLAIM.ALL.
    pub claim_all_keys_max: usize,
    /// Most states after FROM in one FSM.MOVE.
    pub fsm_from_max: usize,
    /// Largest SIZE of a slot resource.
    pub slots_size_max: u32,
    /// Most parked waiters on one key or lock name; the next WAIT gets `BUSY`.
    pub waiters_per_key_max: usize,
}

impl Limits {
    /// Contract maximum for keys and owners: no configuration may raise `key_bytes_max` above it.
    pub const KEY_BYTES_CONTRACT_MAX: usize = 512;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 512,
            value_bytes_max: 1024 * 1024,
            duration_ms_max: 30 * 24 * 3600 * 1000,
            wait_ms_max: 5 * 60 * 1000,
            claim_all_keys_max: 1024,
            fsm_from_max: 64,
            slots_size_max: 65_536,
            waiters_per_key_max: 10_000,
        }
    }
}
