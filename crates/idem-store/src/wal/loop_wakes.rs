//! Wake-ups for an event loop's tasks that come from another thread,
//! handed over in one go.
//!
//! A task on a single-threaded loop that is woken from another thread is
//! queued for the loop, and the loop is woken through its driver (an
//! `eventfd` write) for every such task. With several loops, one loop's
//! sync covers the waiters of the others, so each sync would cost one
//! `eventfd` write per waiter of the other loops. Instead, a waiter filed on
//! a loop carries that loop's [`LoopWakes`]; a publish on another thread
//! puts the waiter's waker in it and wakes the loop once, through its
//! nudge task, which then wakes the waiters on the loop itself (a push on
//! the loop's own run queue, no system call).
//!
//! A leaf module: the registry of waiters ([`super::waiters`]) hands wakers
//! in, and the loop's nudge task ([`super::loop_sync`]) takes them out.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::Waker;

use parking_lot::Mutex;

thread_local! {
    /// The wake-ups of the loop this thread runs, once it is a loop.
    static OWN: RefCell<Option<Arc<LoopWakes>>> = const { RefCell::new(None) };
    /// Wakers taken out of [`OWN`], kept to reuse its capacity.
    static SPARE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// The wake-ups handed to one loop by other threads. It holds at most one
/// waker per waiter filed on the loop (a waiter leaves the registry when it
/// is handed over), so it is bounded as the loop's connections are.
#[derive(Debug, Default)]
pub(crate) struct LoopWakes {
    inbox: Mutex<Inbox>,
}

#[derive(Debug, Default)]
struct Inbox {
    /// Wakes the loop's nudge task; `None` until it first ran.
    nudge: Option<Waker>,
    /// Wakers to wake on the loop.
    pending: Vec<Waker>,
}

/// Makes the calling thread a loop with its own [`LoopWakes`] (idempotent).
pub(crate) fn enter() {
    OWN.with(|o| {
        o.borrow_mut().get_or_insert_with(Default::default);
    });
}

/// The calling thread's [`LoopWakes`], if it is a loop.
pub(crate) fn own() -> Option<Arc<LoopWakes>> {
    OWN.with(|o| o.borrow().clone())
}

/// Run by the loop's nudge task (on the loop): notes the task's waker, and
/// wakes every task handed over since the last run, on this thread.
pub(crate) fn run_own(nudge: &Waker) {
    let Some(own) = own() else { return };
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        debug_assert!(spare.is_empty(), "the spare list is emptied at every run");
        {
            let mut inbox = own.inbox.lock();
            match &mut inbox.nudge {
                Some(w) => w.clone_from(nudge),
                None => inbox.nudge = Some(nudge.clone()),
            }
            std::mem::swap(&mut inbox.pending, &mut *spare);
        }
        for waker in spare.drain(..) {
            waker.wake();
        }
    });
}

impl LoopWakes {
    /// Hands `waker` to this loop. Returns the waker to wake now: the
    /// loop's nudge task when the inbox was empty (a later hand-over finds
    /// the nudge already due), the given waker itself when the loop has no
    /// nudge task yet, or none.
    pub(crate) fn hand(&self, waker: Waker) -> Option<Waker> {
        let mut inbox = self.inbox.lock();
        let Some(nudge) = &inbox.nudge else {
            return Some(waker);
        };
        let first = inbox.pending.is_empty();
        let nudge = first.then(|| nudge.clone());
        inbox.pending.push(waker);
        nudge
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Handed-over wakers cost one nudge per batch, and all run on the loop.
    #[test]
    fn many_wakers_handed_over_cost_one_nudge() {
        enter();
        let wakes = own().expect("a loop after enter");
        enter();
        assert!(Arc::ptr_eq(&wakes, &own().unwrap()), "enter keeps the loop's wake-ups");
        let (nudged, nudge) = counter();
        let (woken, waker) = counter();
        // No nudge task yet: the caller wakes the task itself.
        assert!(wakes.hand(waker.clone()).is_some());
        run_own(&nudge);
        let first = wakes.hand(waker.clone()).expect("the first hand-over nudges");
        first.wake();
        for _ in 0..9 {
            assert!(wakes.hand(waker.clone()).is_none(), "the nudge is already due");
        }
        assert_eq!(nudged.0.load(Ordering::SeqCst), 1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0, "nothing woken before the loop runs");
        run_own(&nudge);
        assert_eq!(woken.0.load(Ordering::SeqCst), 10);
        assert!(wakes.hand(waker).is_some(), "an empty inbox nudges again");
        let other = std::thread::spawn(|| own().is_none()).join().unwrap();
        assert!(other, "a thread that did not enter is no loop");
    }
}
