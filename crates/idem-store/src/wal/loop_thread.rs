//! What a thread knows about itself as one of a log's event loops: whether
//! it syncs its own waits, and the highest LSN its tasks wait for.
//!
//! A leaf module: the log state (which must not wake the writer thread for a
//! loop's own records) and the loops' group commit ([`super::loop_sync`])
//! both read it, and it depends on neither.

use std::cell::Cell;

thread_local! {
    /// This thread is an event loop that syncs its own waits.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// The highest LSN a task of this loop waits to see durable.
    static LOOP_WANT: Cell<u64> = const { Cell::new(0) };
}

/// Marks the calling thread as an event loop that syncs its own waits.
pub(crate) fn enter() {
    IN_LOOP.with(|l| l.set(true));
}

/// Whether the calling thread is an event loop that syncs its own waits.
pub(crate) fn in_loop() -> bool {
    IN_LOOP.with(Cell::get)
}

/// Notes, on a loop thread, that a task waits for `lsn` to be durable.
pub(crate) fn note_wait(lsn: u64) {
    LOOP_WANT.with(|w| w.set(w.get().max(lsn)));
}

/// The highest LSN this loop's tasks wait for (0: none).
pub(crate) fn wanted() -> u64 {
    LOOP_WANT.with(Cell::get)
}

/// Takes the highest LSN this loop's tasks wait for, leaving none.
pub(crate) fn take_wanted() -> u64 {
    LOOP_WANT.with(|w| w.replace(0))
}
