//! SLOTS.RESERVE, SLOTS.RELEASE, SLOTS.GET: a row of write-once-per-holder
//! cells taken all or none; a resource with no held slot is forgotten.

use super::Model;
use crate::history::{Call, Op, Reply};

/// The model of slot reservations.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotsModel;

impl Model for SlotsModel {
    /// The holders of every slot; empty when the resource is forgotten.
    type State = Vec<Option<String>>;

    fn init(&self) -> Self::State {
        Vec::new()
    }

    fn step(&self, s: &Self::State, op: &Op) -> Vec<Self::State> {
        match &op.call {
            Call::SlotsReserve { first, last, holder, size, .. } => {
                let mut slots = if s.is_empty() { vec![None; *size as usize] } else { s.clone() };
                if slots.len() != *size as usize || *last as usize >= slots.len() || first > last {
                    return vec![];
                }
                let range = *first as usize..=*last as usize;
                let held: Vec<(u32, String)> = slots[range.clone()]
                    .iter()
                    .zip(*first..)
                    .filter_map(|(h, i)| h.as_ref().filter(|h| *h != holder).map(|h| (i, h.clone())))
                    .collect();
                let (reply, next) = if held.is_empty() {
                    for slot in &mut slots[range] {
                        *slot = Some(holder.clone());
                    }
                    (Reply::Reserved, slots)
                } else {
                    (Reply::SlotConflict { held }, s.clone())
                };
                match &op.reply {
                    None => vec![next],
                    Some(r) if *r == reply => vec![next],
                    Some(_) => vec![],
                }
            }
            Call::SlotsRelease { first, last, holder, .. } => {
                let mut slots = s.clone();
                let mut freed = 0;
                for slot in slots.iter_mut().skip(*first as usize).take((*last - *first) as usize + 1) {
                    if slot.as_ref() == Some(holder) {
                        *slot = None;
                        freed += 1;
                    }
                }
                if slots.iter().all(Option::is_none) {
                    slots.clear();
                }
                match &op.reply {
                    None => vec![slots],
                    Some(Reply::Int { n }) if *n == freed => vec![slots],
                    Some(_) => vec![],
                }
            }
            Call::SlotsGet { .. } => match &op.reply {
                None => vec![s.clone()],
                Some(Reply::Slots { holders }) if holders == s => vec![s.clone()],
                Some(_) => vec![],
            },
            _ => vec![],
        }
    }
}
