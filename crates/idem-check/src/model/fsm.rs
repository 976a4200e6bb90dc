//! FSM.MOVE, FSM.GET: a register of the current state with a transition
//! rule given by each call.

use super::Model;
use crate::history::{Call, Op, Reply};

/// The word FROM uses for an absent key.
pub const FSM_NONE: &str = "none";

/// The model of state machines.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsmModel;

impl Model for FsmModel {
    type State = Option<String>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        match &op.call {
            Call::FsmMove { to, from, .. } => {
                let here = s.as_deref().unwrap_or(FSM_NONE);
                let (reply, next) = if s.as_deref() == Some(to.as_str()) {
                    (Reply::Already, s.clone())
                } else if from.iter().any(|f| f == here) {
                    (Reply::Moved, Some(to.clone()))
                } else {
                    (Reply::FsmRefused { current: s.clone() }, s.clone())
                };
                match &op.reply {
                    None => vec![next],
                    Some(r) if *r == reply => vec![next],
                    Some(_) => vec![],
                }
            }
            Call::FsmGet { .. } => match &op.reply {
                None => vec![s.clone()],
                Some(Reply::Name { name }) if name == s => vec![s.clone()],
                Some(_) => vec![],
            },
            _ => vec![],
        }
    }
}
