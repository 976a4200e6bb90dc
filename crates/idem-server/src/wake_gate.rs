//! A future that is polled again only after it woke its task.
//!
//! A connection waits for its next request together with two futures that
//! almost never complete: the start of shutdown and its own eviction. Each
//! is a `Notify` wait, and polling one takes that `Notify`'s lock, even when
//! nothing happened. `select!` polls every branch each time the task runs,
//! that is once per request. [`Gated`] gives its inner future a waker of its
//! own and polls it only after that waker fired, so the per-request cost is
//! a flag load and a waker comparison.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Wraps `F`; see the module docs.
pub(crate) struct Gated<F> {
    inner: F,
    signal: Arc<Signal>,
    /// `signal` as a waker, handed to `inner`.
    own: Waker,
    /// The task's waker as last registered in `signal`, kept to compare a
    /// new poll's waker without touching `signal`.
    outer: Option<Waker>,
}

/// What the inner future's wake-ups go to.
struct Signal {
    /// Set by a wake-up of the inner future, cleared before it is polled.
    woken: AtomicBool,
    /// The task to wake in turn.
    outer: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The flag first: the task this wakes must find it set.
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl<F: Future + Unpin> Gated<F> {
    /// Gates `inner`. Its first poll always reaches `inner`, which then
    /// registers the gate's waker wherever it waits.
    pub(crate) fn new(inner: F) -> Gated<F> {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), outer: AtomicWaker::new() });
        let own = Waker::from(signal.clone());
        Gated { inner, signal, own, outer: None }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        loop {
            if this.signal.woken.load(Ordering::Acquire) {
                this.signal.woken.store(false, Ordering::Release);
                // A wake-up takes the waker out of `signal`: register again
                // before polling, so that a wake-up from now on reaches the task.
                this.signal.outer.register(cx.waker());
                if !this.outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.outer = Some(cx.waker().clone());
                }
                return Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.own));
            }
            if this.outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            // Polled from another task (or the first time without a flag):
            // wake-ups go there from now on; one that went to the old waker
            // before this left the flag set, which the loop checks again.
            this.signal.outer.register(cx.waker());
            this.outer = Some(cx.waker().clone());
            if !this.signal.woken.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Completes on its first poll after `go` turned true; counts its polls.
    struct Door {
        go: Arc<AtomicBool>,
        polls: Arc<AtomicUsize>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Door {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.go.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A gated [`Door`], with its switch, its poll count and the waker it
    /// registered.
    #[allow(clippy::type_complexity)]
    fn gated_door() -> (Gated<Door>, Arc<AtomicBool>, Arc<AtomicUsize>, Arc<std::sync::Mutex<Option<Waker>>>) {
        let go = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(std::sync::Mutex::new(None));
        let gated = Gated::new(Door { go: go.clone(), polls: polls.clone(), waker: slot.clone() });
        (gated, go, polls, slot)
    }

    /// The inner future is polled once, then not again until it wakes the
    /// gate; its wake-up reaches the task, and the next poll completes.
    #[test]
    fn polls_the_inner_future_only_after_its_wake_up() {
        let (mut gated, go, polls, slot) = gated_door();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled again without a wake-up");
        go.store(true, Ordering::SeqCst);
        slot.lock().unwrap().take().expect("the inner future registered a waker").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the wake-up reached the task");
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    /// A poll from another task moves the wake-ups there.
    #[test]
    fn a_new_task_waker_gets_the_wake_ups() {
        let (mut gated, go, _, slot) = gated_door();
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let w1 = Waker::from(first.clone());
        let w2 = Waker::from(second.clone());
        assert!(Pin::new(&mut gated).poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(Pin::new(&mut gated).poll(&mut Context::from_waker(&w2)).is_pending());
        slot.lock().unwrap().take().expect("registered").wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        go.store(true, Ordering::SeqCst);
        assert!(Pin::new(&mut gated).poll(&mut Context::from_waker(&w2)).is_ready());
    }
}
