//! CLAIM, RELEASE, OWNER: a register of the owner (claims without TTL).

use super::Model;
use crate::history::{Call, Op, Reply};

/// The model of unique claims.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClaimModel;

impl Model for ClaimModel {
    type State = Option<String>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        match (&op.call, &op.reply) {
            (Call::Claim { owner, .. }, reply) => {
                let free_or_mine = s.as_ref().is_none_or(|o| o == owner);
                match reply {
                    Some(Reply::Claimed) if free_or_mine => vec![Some(owner.clone())],
                    Some(Reply::Held { owner: o }) if !free_or_mine && s.as_ref() == Some(o) => vec![s.clone()],
                    None if free_or_mine => vec![Some(owner.clone())],
                    None => vec![s.clone()],
                    _ => vec![],
                }
            }
            (Call::Release { owner, .. }, reply) => {
                let mine = s.as_ref() == Some(owner);
                match reply {
                    Some(Reply::Int { n: 1 }) if mine => vec![None],
                    Some(Reply::Int { n: 0 }) if !mine => vec![s.clone()],
                    None if mine => vec![None],
                    None => vec![s.clone()],
                    _ => vec![],
                }
            }
            (Call::Owner { .. }, Some(Reply::Name { name })) if name == s => vec![s.clone()],
            (Call::Owner { .. }, None) => vec![s.clone()],
            _ => vec![],
        }
    }
}
