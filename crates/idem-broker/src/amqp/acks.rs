//! The acks of one AMQP channel, coalesced. Each `basic.ack` is a frame the
//! client hands to its I/O loop and the broker processes; deliveries settled
//! at the same moment (the adapter commits a pipeline of them at once) can
//! share one `basic.ack` with `multiple` set, which acks every unsettled
//! delivery of the channel up to its tag.
//!
//! `multiple` must never cover a delivery that is not to be acked (one still
//! running, or one being rejected or requeued): so the channel's unsettled
//! tags are tracked, and a multiple ack only covers a run of tags, starting
//! at the lowest unsettled one, whose acks are all due. An ack due behind a
//! gap (an older delivery still running) is sent on its own at once, never
//! held back: a held ack would keep the delivery counted against the
//! channel's prefetch.
//!
//! One caller at a time sends (the one that found nobody sending); acks that
//! fall due meanwhile are sent by it in its next round, so they coalesce
//! while a frame is on its way. An ack is thus sent after the caller that
//! asked for it returned: the broker redelivers a delivery whose ack was
//! never sent, and its record answers that redelivery.

use std::collections::{BTreeMap, BTreeSet};

use lapin::acker::Acker;
use lapin::options::BasicAckOptions;
use parking_lot::Mutex;

/// Coalesces the acks of one consuming channel.
#[derive(Default)]
pub(super) struct Acks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Tags delivered on the channel and not yet settled on the wire.
    unsettled: BTreeSet<u64>,
    /// Tags whose ack is due and not yet sent, with their ackers.
    due: BTreeMap<u64, Acker>,
    /// Whether a caller is sending (then it sends what falls due too).
    sending: bool,
}

/// One round of acks: a multiple ack up to a tag, and single ones.
struct Round {
    multiple: Option<Acker>,
    singles: Vec<Acker>,
}

impl Acks {
    /// A delivery arrived (deliveries arrive in tag order).
    pub(super) fn delivered(&self, tag: u64) {
        let mut s = self.state.lock();
        assert!(s.unsettled.last().is_none_or(|last| *last < tag), "delivery tags grow on a channel");
        s.unsettled.insert(tag);
    }

    /// A delivery was settled otherwise (rejected, requeued), and that
    /// frame is on its way: a multiple ack may now cover its tag.
    pub(super) fn settled(&self, tag: u64) {
        let mut s = self.state.lock();
        assert!(!s.due.contains_key(&tag), "a delivery settled otherwise has no ack due");
        s.unsettled.remove(&tag);
    }

    /// Acks the delivery `tag`, with others due at the same moment.
    pub(super) async fn ack(&self, tag: u64, acker: Acker) {
        {
            let mut s = self.state.lock();
            assert!(s.unsettled.contains(&tag), "an ack is due once, for a delivery not yet settled");
            s.due.insert(tag, acker);
            if s.sending {
                return;
            }
            s.sending = true;
        }
        loop {
            let Some(round) = self.next_round() else { return };
            if let Some(acker) = round.multiple {
                send(acker, true).await;
            }
            for acker in round.singles {
                send(acker, false).await;
            }
        }
    }

    /// Takes every due ack, or clears `sending` when there is none.
    fn next_round(&self) -> Option<Round> {
        let mut s = self.state.lock();
        assert!(s.sending, "only the sending caller takes rounds");
        if s.due.is_empty() {
            s.sending = false;
            return None;
        }
        let due = std::mem::take(&mut s.due);
        // The run of due tags from the lowest unsettled one.
        let mut run_end = None;
        for tag in s.unsettled.iter() {
            if !due.contains_key(tag) {
                break;
            }
            run_end = Some(*tag);
        }
        for tag in due.keys() {
            s.unsettled.remove(tag);
        }
        let mut round = Round { multiple: None, singles: Vec::new() };
        for (tag, acker) in due {
            match run_end {
                // The run's other ackers are covered by its last one.
                Some(end) if tag < end => {}
                Some(end) if tag == end => round.multiple = Some(acker),
                _ => round.singles.push(acker),
            }
        }
        Some(round)
    }
}

async fn send(acker: Acker, multiple: bool) {
    if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
        // The broker redelivers what was not acked; the records answer it.
        tracing::warn!(error = %e, multiple, "basic.ack failed");
    }
}
