//! State machines: FSM.MOVE, FSM.GET. `already` is checked before FROM, so a
//! replayed transition is harmless; `none` (normalised by the parser) stands
//! for an absent key and is never stored.

use bytes::Bytes;

use super::keymap;
use super::{own, Effects, Machine};
use crate::backend::CmdResult;
use crate::change::Change;
use crate::command::FSM_NONE;
use crate::outcome::{MoveStatus, Moved};
use crate::reply::Reply;

impl Machine {
    pub(super) fn fsm_put(&mut self, key: &Bytes, state: &Bytes) {
        match self.fsm.entry(key) {
            keymap::Entry::Occupied(mut e) => e.get_mut().1 = own(state),
            keymap::Entry::Vacant(e) => {
                e.insert((own(key), own(state)));
            }
        }
    }

    pub(super) fn fsm_move(&mut self, key: &Bytes, to: &Bytes, from: &[Bytes], effects: &mut Effects) -> CmdResult {
        // One probe reads the state and writes, or finds where to insert.
        let slot = self.fsm.entry(key);
        let current = match &slot {
            keymap::Entry::Occupied(e) => Some(&e.get().1),
            keymap::Entry::Vacant(_) => None,
        };
        if current == Some(to) {
            return Ok(Moved { status: MoveStatus::Already, state: to.clone() }.into_reply());
        }
        let current: &[u8] = current.map_or(FSM_NONE, |s| s.as_ref());
        if !from.iter().any(|f| f.as_ref() == current) {
            return Ok(Moved { status: MoveStatus::Refused, state: Bytes::copy_from_slice(current) }.into_reply());
        }
        match slot {
            keymap::Entry::Occupied(mut e) => e.get_mut().1 = own(to),
            keymap::Entry::Vacant(e) => {
                e.insert((own(key), own(to)));
            }
        }
        effects.changes.push(Change::FsmPut { key: key.clone(), state: to.clone() });
        Ok(Moved { status: MoveStatus::Moved, state: to.clone() }.into_reply())
    }

    pub(super) fn fsm_get(&mut self, key: &Bytes) -> CmdResult {
        Ok(self.fsm.get(key).map_or(Reply::Nil, |s| Reply::Bulk(s.clone())))
    }

    pub(super) fn dump_fsm(&self, out: &mut dyn FnMut(Change)) {
        for (key, state) in self.fsm.iter() {
            out(Change::FsmPut { key: key.clone(), state: state.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::T;

    #[test]
    fn moves_follow_from() {
        let mut t = T::new();
        assert_eq!(t.cmd("FSM.GET o"), "nil");
        assert_eq!(t.cmd("FSM.MOVE o paid FROM new"), "[refused none]");
        assert_eq!(t.cmd("FSM.MOVE o new FROM NONE"), "[moved new]");
        assert_eq!(t.cmd("FSM.MOVE o new FROM none"), "[already new]");
        assert!(t.last.is_empty());
        assert_eq!(t.cmd("FSM.MOVE o shipped FROM paid"), "[refused new]");
        assert_eq!(t.cmd("FSM.MOVE o paid FROM new cart"), "[moved paid]");
        assert_eq!(t.cmd("FSM.MOVE o paid FROM zzz"), "[already paid]", "already is checked first");
        assert_eq!(t.cmd("FSM.GET o"), "paid");
        t.check_replay();
    }
}
