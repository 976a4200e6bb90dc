//! COUNTER.ADD, COUNTER.GET: a bounded counter whose op ids apply once.

use std::collections::BTreeMap;

use super::Model;
use crate::history::{Call, Op, Reply};

/// The model of bounded counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterModel;

/// The value, and the value each applied op id produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CounterState {
    value: i64,
    applied: BTreeMap<String, i64>,
}

impl Model for CounterModel {
    type State = CounterState;

    fn init(&self) -> Self::State {
        CounterState::default()
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        match &op.call {
            Call::CounterAdd { delta, min, max, op: id, .. } => {
                let (reply, next) = match id.as_ref().and_then(|id| s.applied.get(id)) {
                    Some(v) => (Reply::Replayed { value: *v }, s.clone()),
                    None => match s.value.checked_add(*delta).filter(|v| v >= min && v <= max) {
                        Some(v) => {
                            let mut next = s.clone();
                            next.value = v;
                            if let Some(id) = id {
                                next.applied.insert(id.clone(), v);
                            }
                            (Reply::CounterOk { value: v }, next)
                        }
                        None => (Reply::Refused { value: s.value }, s.clone()),
                    },
                };
                match &op.reply {
                    None => vec![next],
                    Some(r) if *r == reply => vec![next],
                    Some(_) => vec![],
                }
            }
            Call::CounterGet { .. } => match &op.reply {
                None => vec![s.clone()],
                Some(Reply::CounterValue { value }) if *value == s.value => vec![s.clone()],
                Some(_) => vec![],
            },
            _ => vec![],
        }
    }
}
