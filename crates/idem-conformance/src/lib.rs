//! # idem-conformance
//!
//! One suite of contract tests (docs/commands.md) that every backend must pass:
//! the embedded store, PostgreSQL, MySQL/MariaDB, Redis and Redis Cluster.
//!
//! - [`cases`]: the test cases, each an `async fn(&dyn Backend, &Ctx)` that
//!   panics on a violation. Commands are written as the contract spells them
//!   (`["IDEM.BEGIN", &k, "LEASE", "200"]`) and parsed by
//!   [`idem_core::Command::parse`], so a case reads like docs/commands.md.
//! - [`conformance_tests!`]: expands to one `#[tokio::test]` per case, so a
//!   failure is reported under the case's name.
//! - [`run_all`]: runs every case against one backend and returns a
//!   [`Report`] (for fixtures that are expensive to start, e.g. a cluster).
//! - [`servers`]: races through two idem servers that share one external
//!   store ([`servers::run_two_server_races`]).
//! - [`Ctx`]: a random key prefix per case run, so runs are independent and
//!   can share one engine with other runs in parallel.
//!
//! Cases never assert a wall-clock duration: leases are short (100–300 ms)
//! and cases sleep well past them before checking expiry.
#![warn(missing_docs)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use idem_core::Backend;
use idem_core::{BoxFuture, CmdError, CmdResult, Command, ErrorCode, Limits, Reply};

pub mod cases;
pub mod diff;
pub mod servers;

/// How long one case may run before it counts as failed (hung WAIT, lost wakeup).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many cases [`run_all`] runs at once.
pub const RUN_ALL_PARALLEL_MAX: usize = 8;

/// The context of one case run: its key prefix.
#[derive(Clone, Debug)]
pub struct Ctx {
    prefix: String,
}

impl Ctx {
    /// A context with a fresh random prefix: process id, time and a counter,
    /// so two runs (two processes, or two cases in one process) never share a key.
    pub fn new() -> Ctx {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        // Mix the inputs so prefixes of consecutive runs do not share long
        // common heads (keeps engine indexes and debug output readable).
        let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq;
        Ctx { prefix: format!("t{mixed:016x}{seq:x}") }
    }

    /// The prefix every key of this run starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key private to this run: `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// A key private to this run that carries the run's Redis hash tag,
    /// `{<prefix>}:<name>`. Keys that one command touches together (CLAIM.ALL)
    /// use it, so that the case also runs on Redis Cluster, where such keys
    /// must share a hash slot.
    pub fn tagged(&self, name: &str) -> String {
        format!("{{{}}}:{}", self.prefix, name)
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}

/// Parses a command written as the contract spells it; panics (failing the
/// case) when the suite itself wrote an invalid command.
pub fn parse(args: &[&str]) -> Command {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    match Command::parse(&args, &Limits::default()) {
        Ok(c) => c,
        Err(e) => panic!("suite bug: {:?} does not parse: {e}", show_args(&args)),
    }
}

/// Converts string arguments to binary ones.
pub fn to_bytes(args: &[&str]) -> Vec<Bytes> {
    args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
}

/// Parses binary arguments; returns the parser's error as is.
pub fn parse_bytes(args: &[Bytes]) -> Result<Command, CmdError> {
    Command::parse(args, &Limits::default())
}

/// Runs one command, written as strings.
pub async fn exec(b: &dyn Backend, args: &[&str]) -> CmdResult {
    b.execute(parse(args)).await
}

/// Runs one command with binary arguments (parse errors are returned, not panics).
pub async fn exec_bytes(b: &dyn Backend, args: &[Bytes]) -> CmdResult {
    match parse_bytes(args) {
        Ok(c) => b.execute(c).await,
        Err(e) => Err(e),
    }
}

/// Runs one command that must succeed; returns its reply.
pub async fn ok(b: &dyn Backend, args: &[&str]) -> Reply {
    match exec(b, args).await {
        Ok(r) => r,
        Err(e) => panic!("{args:?}: expected a reply, got error '{e}'"),
    }
}

/// Runs one command that must fail; returns its error.
pub async fn err(b: &dyn Backend, args: &[&str]) -> CmdError {
    match exec(b, args).await {
        Ok(r) => panic!("{args:?}: expected an error, got {}", show(&r)),
        Err(e) => e,
    }
}

/// Runs one command that must fail with `code`.
pub async fn err_code(b: &dyn Backend, args: &[&str], code: ErrorCode) -> CmdError {
    let e = err(b, args).await;
    assert_eq!(e.code, code, "{args:?}: expected {}, got '{e}'", code.as_str());
    e
}

/// Runs one command and checks its status word; returns the reply.
pub async fn expect(b: &dyn Backend, args: &[&str], word: &str) -> Reply {
    let r = ok(b, args).await;
    assert_eq!(status(&r), word, "{args:?}: expected status '{word}', got {}", show(&r));
    r
}

/// A reply in a compact readable form for failure messages:
/// `[started 17 1]`, `"bytes"`, `nil`.
pub fn show(r: &Reply) -> String {
    match r {
        Reply::Word(w) => (*w).to_string(),
        Reply::Bulk(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Reply::Int(i) => i.to_string(),
        Reply::Nil => "nil".into(),
        Reply::Array(v) => format!("[{}]", v.iter().map(show).collect::<Vec<_>>().join(" ")),
    }
}

fn show_args(args: &[Bytes]) -> Vec<String> {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// The elements of an array reply; panics on any other shape.
pub fn items(r: &Reply) -> &[Reply] {
    match r {
        Reply::Array(v) => v,
        other => panic!("expected an array reply, got {}", show(other)),
    }
}

/// The status word of a primitive's reply (its first element). A status word
/// may arrive as [`Reply::Word`] or as a bulk string: both are the same bulk
/// string on the wire.
pub fn status(r: &Reply) -> String {
    match items(r).first() {
        Some(Reply::Word(w)) => (*w).to_string(),
        Some(Reply::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => panic!("expected a reply that starts with a status word, got {}", show(r)),
    }
}

/// Element `i` of an array reply as an integer; panics if it is not one.
pub fn int_at(r: &Reply, i: usize) -> i64 {
    match items(r).get(i) {
        Some(Reply::Int(v)) => *v,
        _ => panic!("expected an integer at position {i} of {}", show(r)),
    }
}

/// Element `i` of an array reply as bytes (bulk or word); panics otherwise.
pub fn bulk_at(r: &Reply, i: usize) -> Bytes {
    match items(r).get(i) {
        Some(Reply::Bulk(b)) => b.clone(),
        Some(Reply::Word(w)) => Bytes::from_static(w.as_bytes()),
        _ => panic!("expected a bulk string at position {i} of {}", show(r)),
    }
}

/// Element `i` of an array reply as text (lossy UTF-8).
pub fn text_at(r: &Reply, i: usize) -> String {
    String::from_utf8_lossy(&bulk_at(r, i)).into_owned()
}

/// An integer reply; panics on any other shape.
pub fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(v) => *v,
        other => panic!("expected an integer reply, got {}", show(other)),
    }
}

/// A bulk reply as text (a word is accepted too); `None` for nil; panics otherwise.
pub fn text_or_nil(r: &Reply) -> Option<String> {
    match r {
        Reply::Nil => None,
        Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Reply::Word(w) => Some((*w).to_string()),
        other => panic!("expected a bulk string or nil, got {}", show(other)),
    }
}

/// Sleeps on the tokio clock (real time in these tests: engines run their own clocks).
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A conformance case: runs against a backend inside a fresh [`Ctx`], panics on a violation.
pub type CaseFn = for<'a> fn(&'a dyn Backend, &'a Ctx) -> BoxFuture<'a, ()>;

/// A named case.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (its function name in [`cases`]).
    pub name: &'static str,
    /// The case.
    pub run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Lists every case once; the runner table and the per-case test macro are
/// both generated from this one list, so they cannot drift apart.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($mode:ident $($arg:tt)*) => {
        $crate::__expand_cases! { $mode ($($arg)*) [
            idem_begin_commit_replay,
            idem_fingerprint_mismatch,
            idem_stale_fence,
            idem_abort_frees_key,
            idem_lease_expiry_takeover,
            idem_del,
            idem_keep_expires,
            idem_binary_and_empty_result,
            idem_wait_commit_wakes_done,
            idem_wait_abort_hands_over,
            idem_wait_lease_expiry_takes_over,
            idem_wait_times_out,
            idem_wait_fifo,
            idem_wait_cancelled,
            idem_wait_answers_at_once,
            idem_renew_keeps_the_attempt,
            idem_renew_refused,
            idem_renew_bad_arguments,
            claim_basic,
            claim_ttl_expires,
            claim_all_all_or_nothing,
            claim_all_idempotent,
            lock_basic,
            lock_expiry,
            lock_wait_fifo_unlock,
            lock_wait_lease_expiry,
            lock_wait_times_out,
            lock_wait_cancelled,
            lock_wait_fifo_expiry,
            token_single_use,
            token_expiry,
            counter_basic,
            counter_bounds,
            counter_op_replay,
            counter_op_keep_expires,
            counter_overflow,
            value_basic,
            value_ifversion_zero,
            value_binary,
            fsm_basic,
            fsm_none_case_insensitive,
            slots_basic,
            slots_size_default,
            slots_outside_size,
            slots_release_by_other,
            slots_forgotten_when_empty,
            errors_limits,
            batch_in_order,
            race_idem_begin,
            race_counter_min,
            race_slots_reserve,
            race_claim,
            race_claim_all,
            race_lock,
            race_value_ifversion,
            race_fsm,
            race_token_use,
            race_fence_after_delete,
        ] }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_cases {
    (table () [$($name:ident),* $(,)?]) => {
        &[$($crate::Case { name: stringify!($name), run: |b, c| ::std::boxed::Box::pin($crate::cases::$name(b, c)) }),*]
    };
    (tests ($make:expr) [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend: ::std::sync::Arc<dyn $crate::Backend> = ($make).await;
                $crate::run_case(stringify!($name), backend).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per conformance case, named after the
/// case. `$make` is an expression of a future that yields an
/// `Arc<dyn Backend>`; it is evaluated once per test (each test has its own
/// runtime, and connections belong to the runtime that opened them).
///
/// ```ignore
/// async fn backend() -> Arc<dyn Backend> { Arc::new(MyBackend::connect(URL).await.unwrap()) }
/// idem_conformance::conformance_tests!(backend());
/// ```
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__for_each_case!(tests $make);
    };
}

/// Every case, in the order of the contract's sections.
pub const CASES: &[Case] = __for_each_case!(table);

/// Looks a case up by name.
pub fn case(name: &str) -> Option<Case> {
    CASES.iter().copied().find(|c| c.name == name)
}

/// The outcome of running cases against one backend.
#[derive(Debug, Default)]
pub struct Report {
    /// The backend's name.
    pub backend: String,
    /// Names of the cases that passed.
    pub passed: Vec<&'static str>,
    /// Cases that failed, with their panic message (or "timed out").
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Whether every case passed.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Panics with every failure listed, if any case failed.
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "conformance on {}: {} passed, {} failed", self.backend, self.passed.len(), self.failed.len())?;
        for (name, why) in &self.failed {
            writeln!(f, "  FAILED {name}: {why}")?;
        }
        Ok(())
    }
}

/// Runs one case in its own task with a fresh [`Ctx`] and [`CASE_TIMEOUT`];
/// returns the failure message, if any.
pub async fn try_case(case: Case, backend: Arc<dyn Backend>) -> Result<(), String> {
    let ctx = Ctx::new();
    let task = tokio::spawn(async move {
        let run = case.run;
        run(&*backend, &ctx).await;
    });
    let abort = task.abort_handle();
    match tokio::time::timeout(CASE_TIMEOUT, task).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_panic() => Err(panic_message(e.into_panic())),
        Ok(Err(e)) => Err(format!("task failed: {e}")),
        Err(_) => {
            abort.abort();
            Err(format!("timed out after {CASE_TIMEOUT:?}"))
        }
    }
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

/// Runs the case named `name`; panics (failing the calling test) if it fails
/// or does not exist. Used by [`conformance_tests!`].
pub async fn run_case(name: &str, backend: Arc<dyn Backend>) {
    let case = case(name).unwrap_or_else(|| panic!("no conformance case named {name}"));
    let backend_name = backend.name();
    if let Err(why) = try_case(case, backend).await {
        panic!("conformance case {name} failed on {backend_name}: {why}");
    }
}

/// Runs `cases` against `backend`, [`RUN_ALL_PARALLEL_MAX`] at a time.
pub async fn run_cases(backend: Arc<dyn Backend>, cases: &[Case]) -> Report {
    use futures::StreamExt;
    let mut report = Report { backend: backend.name().to_string(), ..Report::default() };
    let results: Vec<(Case, Result<(), String>)> = futures::stream::iter(cases.iter().copied())
        .map(|c| {
            let b = backend.clone();
            async move { (c, try_case(c, b).await) }
        })
        .buffered(RUN_ALL_PARALLEL_MAX)
        .collect()
        .await;
    for (c, r) in results {
        match r {
            Ok(()) => report.passed.push(c.name),
            Err(why) => report.failed.push((c.name, why)),
        }
    }
    report
}

/// Runs every case against `backend`, several at once (each under its own
/// key prefix), and reports which passed.
pub async fn run_all(backend: Arc<dyn Backend>) -> Report {
    run_cases(backend, CASES).await
}

/// Runs `n` copies of a future-producing closure concurrently and collects
/// their outputs in order. Used by race cases: every request is in flight at
/// once, against one backend.
pub async fn race<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    futures::future::join_all((0..n).map(f)).await
}
