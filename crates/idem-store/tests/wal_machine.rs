//! The log against the real state machine: random commands run on an
//! `idem_core::machine::Machine`, their changes are logged, snapshots are
//! taken from `Machine::dump` (sometimes with later records already
//! reflected, as a late shard dump would), and after a crash the machine
//! rebuilt from the snapshot and the log dumps exactly the same state.

mod wal_common;

use std::path::Path;

use bytes::Bytes;
use idem_core::machine::{Applied, Effects, Machine, SeqEnv, WaiterId};
use idem_core::{Change, Command, Limits, Reply};
use idem_store::wal::sim::{CrashMode, SimFs};
use wal_common::*;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A random command on a small key space; `fences` holds fences seen in
/// replies so that COMMIT/ABORT/RENEW often use a live one.
fn random_command(rng: &mut Rng, fences: &[u64]) -> Vec<String> {
    let k = format!("k{}", rng.below(4));
    let o = format!("o{}", rng.below(3));
    let n = rng.below(5000) + 1;
    let fence = fences.get(rng.below(fences.len() as u64 + 1) as usize).copied().unwrap_or(1);
    let v: Vec<String> = match rng.below(17) {
        0 => vec!["IDEM.BEGIN".into(), k, "LEASE".into(), n.to_string()],
        1 => vec!["IDEM.COMMIT".into(), k, fence.to_string(), format!("r{n}"), "KEEP".into(), (n * 3).to_string()],
        2 => vec!["IDEM.ABORT".into(), k, fence.to_string()],
        3 => vec!["IDEM.DEL".into(), k],
        4 => vec!["CLAIM".into(), k, o, "TTL".into(), n.to_string()],
        5 => vec!["CLAIM".into(), k, o],
        6 => vec!["RELEASE".into(), k, o],
        7 => vec!["LOCK".into(), k, o, "LEASE".into(), n.to_string()],
        8 => vec!["UNLOCK".into(), k, o],
        9 => vec!["COUNTER.ADD".into(), k, (n as i64 - 2500).to_string(), "OP".into(), format!("op{}", n % 7)],
        10 => vec!["VALUE.SET".into(), k, format!("v{n}")],
        11 => vec!["FSM.MOVE".into(), k, format!("s{}", n % 3), "FROM".into(), "none".into(), "s0".into(), "s1".into()],
        12 => {
            let first = n % 40;
            vec![
                "SLOTS.RESERVE".into(),
                k,
                first.to_string(),
                (first + n % 5).to_string(),
                o,
                "SIZE".into(),
                "48".into(),
            ]
        }
        13 => {
            let first = n % 40;
            vec!["SLOTS.RELEASE".into(), k, first.to_string(), (first + 8).to_string(), o]
        }
        14 => vec!["TOKEN.NEW".into(), k, "TTL".into(), n.to_string()],
        15 => vec!["IDEM.RENEW".into(), k, fence.to_string(), "LEASE".into(), n.to_string()],
        _ => vec!["RENEW".into(), k, o, "LEASE".into(), n.to_string()],
    };
    v
}

fn dump(m: &Machine, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    m.dump(now, &mut |c| out.push(format!("{c:?}")));
    out.sort();
    out
}

fn fences_in(r: &Reply, out: &mut Vec<u64>) {
    if let Reply::Array(items) = r {
        if let (Some(Reply::Word(w)), Some(Reply::Int(f))) = (items.first(), items.get(1)) {
            if *w == "started" || *w == "acquired" || *w == "renewed" {
                out.push(*f as u64);
            }
        }
    }
}

#[test]
fn a_machine_rebuilt_from_a_snapshot_dumped_at_its_cut_and_the_log_matches() {
    rebuild_matches(false);
}

/// The engine dumps shards one by one after the cut, so a snapshot may
/// already reflect records that the log replays again over it.
#[test]
fn a_machine_rebuilt_from_a_snapshot_dumped_after_its_cut_and_the_log_matches() {
    rebuild_matches(true);
}

fn rebuild_matches(late_dump: bool) {
    let limits = Limits::default();
    for seed in 1..=40u64 {
        let fs = SimFs::new();
        let storage = sim_storage(&fs, 4096);
        let dir = Path::new("/m");
        let rt = runtime();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut m = Machine::new(limits.clone());
        let mut env = SeqEnv::default();
        let mut effects = Effects::default();
        let mut fences = Vec::new();
        let mut now = 1_000;
        {
            let (log, _, _) = open_collect(dir, &opts(), &storage).unwrap();
            let mut pending_snapshot = None;
            for step in 0..300 {
                now += rng.below(400);
                effects.clear();
                if step % 25 == 24 {
                    m.tick(now, &mut env, &mut effects);
                } else {
                    let args: Vec<Bytes> = random_command(&mut rng, &fences).into_iter().map(Bytes::from).collect();
                    let cmd = Command::parse(&args, &limits).unwrap();
                    if let Applied::Done(Ok(r)) = m.apply(now, &cmd, Some(WaiterId(step)), &mut env, &mut effects) {
                        fences_in(&r, &mut fences);
                    }
                }
                if !effects.changes.is_empty() {
                    let lsn = log.append(now, &effects.changes).unwrap();
                    rt.block_on(log.durable(lsn)).unwrap();
                }
                // Begin a snapshot now and dump the machine a few steps later,
                // so that it reflects records past its cut.
                if rng.below(60) == 0 && pending_snapshot.is_none() {
                    let delay = if late_dump { rng.below(4) } else { 0 };
                    pending_snapshot = Some((log.begin_snapshot().unwrap(), step + delay));
                }
                if matches!(&pending_snapshot, Some((_, at)) if *at <= step) {
                    let (mut snap, _) = pending_snapshot.take().unwrap();
                    let mut err = None;
                    m.dump(now, &mut |c: Change| {
                        if let Err(e) = snap.add(&c) {
                            err = Some(e);
                        }
                    });
                    assert!(err.is_none());
                    snap.finish(env.fence, now).unwrap();
                }
            }
            fs.crash();
        }
        fs.reboot(CrashMode::DropUnsynced, seed);
        let mut rebuilt = Machine::new(limits.clone());
        let (_log, rec) = idem_store::wal::Log::open_on(dir, &opts(), &storage, &mut |_, c| rebuilt.replay(&c))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(dump(&rebuilt, now), dump(&m, now), "seed {seed}: state differs after recovery");
        assert!(rec.fence_high >= fences.iter().copied().max().unwrap_or(0), "seed {seed}: fences");
        assert!(rec.clock_ms <= now);
    }
}
