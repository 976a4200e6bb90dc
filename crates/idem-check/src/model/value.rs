//! VALUE.GET, VALUE.SET [IFVERSION]: a versioned register whose version
//! starts at 1 and grows with every successful SET.

use super::Model;
use crate::history::{Call, Op, Reply};

/// The model of versioned values.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValueModel;

/// A version, or only a bound on it when a SET's reply was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Exactly this (0: absent).
    Is(u64),
    /// Some version above this.
    Above(u64),
}

impl Version {
    fn matches(self, v: u64) -> bool {
        match self {
            Version::Is(x) => x == v,
            Version::Above(x) => v > x,
        }
    }
    fn floor(self) -> u64 {
        match self {
            Version::Is(x) | Version::Above(x) => x,
        }
    }
}

/// The value (`None`: absent) and its version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueState {
    value: Option<String>,
    version: Version,
}

impl Model for ValueModel {
    type State = ValueState;

    fn init(&self) -> Self::State {
        ValueState { value: None, version: Version::Is(0) }
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        match &op.call {
            Call::ValueSet { value, if_version, .. } => {
                let mut next = Vec::new();
                // The condition holds when there is none or it names the
                // current version (which an unknown version may be).
                let may_hold = if_version.is_none_or(|v| s.version.matches(v));
                let may_fail = if_version.is_some_and(|v| !matches!(s.version, Version::Is(x) if x == v));
                match &op.reply {
                    Some(Reply::ValueOk { version }) if may_hold && *version > s.version.floor() => {
                        // An unconditional SET on a version that is known
                        // only by its bound: the new version is above it.
                        next.push(ValueState { value: Some(value.clone()), version: Version::Is(*version) })
                    }
                    Some(Reply::Conflict { version })
                        if may_fail && s.version.matches(*version) && if_version != &Some(*version) =>
                    {
                        next.push(ValueState { value: s.value.clone(), version: Version::Is(*version) });
                    }
                    None => {
                        if may_hold {
                            let floor = if_version.unwrap_or(s.version.floor());
                            next.push(ValueState { value: Some(value.clone()), version: Version::Above(floor) });
                        }
                        if may_fail {
                            next.push(s.clone());
                        }
                    }
                    _ => {}
                }
                next
            }
            Call::ValueGet { .. } => match &op.reply {
                None => vec![s.clone()],
                Some(Reply::Versioned { value: None }) if s.value.is_none() => vec![s.clone()],
                Some(Reply::Versioned { value: Some((v, ver)) })
                    if s.value.as_ref() == Some(v) && s.version.matches(*ver) =>
                {
                    vec![ValueState { value: s.value.clone(), version: Version::Is(*ver) }]
                }
                Some(_) => vec![],
            },
            _ => vec![],
        }
    }
}
