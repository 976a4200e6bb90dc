//! Event loops: the threads that run RESP connections.
//!
//! Each loop is a single-threaded tokio runtime on its own thread (half the
//! cores by default), and every accepted connection is handed to the next
//! loop in turn and stays there. A connection's task therefore never moves
//! between threads, and when the backend asks for it ([`LoopHooks`]), a loop
//! that runs dry does the backend's durable work itself before it sleeps:
//! the embedded store writes and syncs the log there, like Redis's
//! `appendfsync always` does inside its event loop, while the other loops
//! keep serving.

use std::sync::Arc;
use std::thread::JoinHandle;

use idem_core::LoopHooks;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Most event loops a server may be configured with.
pub const EVENT_LOOPS_MAX: usize = 256;

/// The default number of event loops: half the cores the process may use,
/// at least one. A loop that syncs the log blocks in `fdatasync`, and the
/// other half of the cores is left for the kernel's share of that work and
/// for everything else on the machine (docs/benchmarks-log.md compares one loop
/// with two).
pub fn default_event_loops() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).clamp(1, EVENT_LOOPS_MAX)
}

/// Running event loops.
pub(crate) struct EventLoops {
    handles: Vec<Handle>,
    next: usize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl EventLoops {
    /// Starts `n` loops, each calling `hooks` (if any) on its thread.
    pub(crate) fn start(n: usize, hooks: Option<Arc<dyn LoopHooks>>) -> std::io::Result<EventLoops> {
        let mut loops = EventLoops { handles: Vec::new(), next: 0, stops: Vec::new(), threads: Vec::new() };
        for i in 0..n {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            // I/O and timers only: a loop runs no child processes and
            // handles no signals, and the process driver would otherwise
            // look for exited children at every park.
            builder.enable_io().enable_time();
            if let Some(h) = hooks.clone() {
                builder.on_thread_park(move || h.before_loop_park());
            }
            let runtime = builder.build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let handle = runtime.handle().clone();
            if let Some(h) = &hooks {
                // Polled first on the loop thread, so it is the loop's own.
                handle.spawn(h.loop_task());
            }
            let hooks = hooks.clone();
            let thread = std::thread::Builder::new().name(format!("idem-loop-{i}")).spawn(move || {
                if let Some(h) = &hooks {
                    h.on_loop_start();
                }
                // Runs the connections spawned onto this loop until told to stop.
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            });
            match thread {
                Ok(t) => {
                    loops.handles.push(handle);
                    loops.stops.push(stop_tx);
                    loops.threads.push(t);
                }
                Err(e) => {
                    loops.stop_now();
                    return Err(e);
                }
            }
        }
        Ok(loops)
    }

    /// The loop for the next connection (round robin).
    pub(crate) fn next(&mut self) -> &Handle {
        let i = self.next;
        self.next = (self.next + 1) % self.handles.len();
        &self.handles[i]
    }

    fn stop_now(&mut self) -> Vec<JoinHandle<()>> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        std::mem::take(&mut self.threads)
    }

    /// Stops every loop (their connections must be finished or aborted
    /// already) and waits for their threads to end.
    pub(crate) async fn stop(mut self) {
        let threads = self.stop_now();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        // Without `stop` (a panic in the accept loop), the threads end on their own.
        let _ = self.stop_now();
    }
}
