//! TOKEN.NEW, TOKEN.USE, one partition per token: born once, spent once,
//! refused once its TTL ran out.

use super::{Lease, Model, Timing};
use crate::history::{Call, Op, Reply};

/// The model of one-time tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenModel {
    /// How lease ends are judged.
    pub timing: Timing,
}

/// A token's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenState {
    /// Not issued.
    Unborn,
    /// Issued, usable until its TTL ends.
    Live(Lease),
    /// Used.
    Spent,
}

impl Model for TokenModel {
    type State = TokenState;

    fn init(&self) -> Self::State {
        TokenState::Unborn
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        let t = self.timing;
        match (&op.call, &op.reply, s) {
            // A token is issued once: a second issue of the same token is a
            // duplicate, which the model refuses.
            (Call::TokenNew { ttl_ms, .. }, Some(Reply::Token { .. }), TokenState::Unborn) => {
                vec![TokenState::Live(Lease::granted(op, *ttl_ms))]
            }
            (Call::TokenUse { .. }, reply, state) => {
                let live = matches!(state, TokenState::Live(l) if l.may_be_live(op, t));
                let over = match state {
                    TokenState::Live(l) => l.may_be_over(op, t),
                    _ => true,
                };
                let mut next = Vec::new();
                if live && matches!(reply, Some(Reply::Int { n: 1 }) | None) {
                    next.push(TokenState::Spent);
                }
                if over && matches!(reply, Some(Reply::Int { n: 0 }) | None) {
                    next.push(*state);
                }
                next
            }
            _ => vec![],
        }
    }
}
