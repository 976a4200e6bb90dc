//! The Wing–Gong search with Lowe's memoisation, over one key's ops.
//!
//! The ops' invocations and returns form one list in time order (an op
//! whose outcome is unknown returns at infinity). The search repeatedly
//! linearises a call whose return has not been passed yet, applies the
//! model, and backtracks when it meets a return whose call it could not
//! linearise. A cache of (linearised set, state) pairs prunes revisits. The
//! history is linearisable once every op with a known outcome is placed;
//! ops with an unknown outcome may stay unplaced (they never happened).

use std::collections::HashSet;
use std::time::Instant;

use crate::history::Op;
use crate::model::Model;

/// The search's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A linearisation exists.
    Linearizable,
    /// None exists. `stuck` is the op (index into the given slice) whose
    /// return the longest partial linearisation could not pass, and
    /// `placed` how many ops that linearisation held.
    Violation { stuck: usize, placed: usize },
    /// The deadline passed first.
    Unknown,
}

/// How often the search looks at the clock, in steps.
const DEADLINE_CHECK_STEPS: u64 = 1024;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// The matching entry (return of a call, call of a return).
    peer: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

struct List {
    entries: Vec<Entry>,
    head: usize,
}

impl List {
    fn new(ops: &[Op]) -> List {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, true, i));
            events.push((op.return_ns.unwrap_or(u64::MAX), false, i));
        }
        // At equal times calls come first: such ops count as concurrent.
        events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
        let n = events.len();
        let mut call_at = vec![NIL; ops.len()];
        let mut entries = Vec::with_capacity(n + 1);
        // Entry 0 is the head sentinel.
        entries.push(Entry { op: NIL, is_call: false, peer: NIL, prev: NIL, next: if n > 0 { 1 } else { NIL } });
        for (k, &(_, is_call, op)) in events.iter().enumerate() {
            let at = k + 1;
            let mut e = Entry { op, is_call, peer: NIL, prev: at - 1, next: if at < n { at + 1 } else { NIL } };
            if is_call {
                call_at[op] = at;
            } else {
                e.peer = call_at[op];
            }
            entries.push(e);
        }
        for at in 1..=n {
            if !entries[at].is_call {
                let call = entries[at].peer;
                entries[call].peer = at;
            }
        }
        List { entries, head: 0 }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.entries[call].peer;
        for at in [call, ret] {
            let Entry { prev, next, .. } = self.entries[at];
            self.entries[prev].next = next;
            if next != NIL {
                self.entries[next].prev = prev;
            }
        }
    }

    /// Puts them back, in the reverse order of `lift`.
    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].peer;
        for at in [ret, call] {
            let Entry { prev, next, .. } = self.entries[at];
            self.entries[prev].next = at;
            if next != NIL {
                self.entries[next].prev = at;
            }
        }
    }
}

/// Searches for a linearisation of `ops` (one key's) under `model`.
pub(crate) fn search<M: Model>(model: &M, ops: &[Op], deadline: Instant) -> Outcome {
    let mut list = List::new(ops);
    let mut remaining_known = ops.iter().filter(|o| o.return_ns.is_some()).count();
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    // Frames: the call lifted, the state before it, its other possible
    // next states still to try.
    let mut stack: Vec<(usize, M::State, Vec<M::State>)> = Vec::new();
    let mut state = model.init();
    let mut entry = list.entries[list.head].next;
    let mut best = (0usize, NIL);
    let mut steps = 0u64;
    'search: loop {
        steps += 1;
        if steps.is_multiple_of(DEADLINE_CHECK_STEPS) && Instant::now() >= deadline {
            return Outcome::Unknown;
        }
        if remaining_known == 0 {
            return Outcome::Linearizable;
        }
        debug_assert!(entry != NIL, "a known return is always ahead while known ops remain");
        let e = list.entries[entry];
        if e.is_call {
            let op = &ops[e.op];
            let mut nexts = model.step(&state, op);
            let mut moved = false;
            while let Some(next) = nexts.pop() {
                placed[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((placed.clone(), next.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next), nexts));
                    list.lift(entry);
                    if op.return_ns.is_some() {
                        remaining_known -= 1;
                    }
                    entry = list.entries[list.head].next;
                    moved = true;
                    break;
                }
                placed[e.op / 64] &= !(1 << (e.op % 64));
            }
            if !moved {
                entry = e.next;
            }
            continue;
        }
        // A return whose call is not placed: undo the last placement.
        if stack.len() >= best.0 {
            best = (stack.len(), e.op);
        }
        let Some((call, before, mut others)) = stack.pop() else {
            return Outcome::Violation { stuck: best.1, placed: best.0 };
        };
        let op_index = list.entries[call].op;
        list.unlift(call);
        if ops[op_index].return_ns.is_some() {
            remaining_known += 1;
        }
        // The same call may lead to another state (a nondeterministic
        // model): try those before giving it up.
        while let Some(next) = others.pop() {
            if cache.insert((placed.clone(), next.clone())) {
                list.lift(call);
                if ops[op_index].return_ns.is_some() {
                    remaining_known -= 1;
                }
                stack.push((call, before, others));
                state = next;
                entry = list.entries[list.head].next;
                continue 'search;
            }
        }
        placed[op_index / 64] &= !(1 << (op_index % 64));
        state = before;
        entry = list.entries[call].next;
    }
}
