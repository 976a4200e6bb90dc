//! Deliberately broken variants of idem, to prove that the fault harness
//! reports each one (docs/reliability.md, "Seeded bugs").
//!
//! Compiled only with the `seeded-bugs` feature, which nothing in a normal
//! build enables: without it this module and every hook that consults it
//! are absent from the binary. With it, the bug is chosen at run time by
//! [`ENV`] (`IDEM_SEEDED_BUG`); unset, the build behaves like the real one.

use std::sync::OnceLock;

/// The environment variable that chooses the bug.
pub const ENV: &str = "IDEM_SEEDED_BUG";

/// A seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `fence-reissue`: recovery forgets the fence high-water mark, so the
    /// fence sequence starts again at 1 after every restart.
    FenceReissue,
    /// `ack-before-sync`: a reply does not wait for its record to be written
    /// and synced; the record stays in the log's buffer until a later
    /// snapshot writes the state, so a kill loses acknowledged writes.
    AckBeforeSync,
    /// `early-regrant`: a lock's lease is taken to end halfway through, so
    /// the lock is granted to the next caller while its holder's lease runs.
    EarlyRegrant,
}

impl Bug {
    /// Every seeded bug.
    pub const ALL: [Bug; 3] = [Bug::FenceReissue, Bug::AckBeforeSync, Bug::EarlyRegrant];

    /// The bug's name, as [`ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Bug::FenceReissue => "fence-reissue",
            Bug::AckBeforeSync => "ack-before-sync",
            Bug::EarlyRegrant => "early-regrant",
        }
    }

    /// The bug named `s`.
    pub fn parse(s: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("{ENV}={s:?} names no seeded bug (one of: {})", names.join(", "))
        })
    }
}

/// The bug [`ENV`] chooses (`None` when it is unset or empty); an unknown
/// name is an error.
pub fn chosen() -> Result<Option<Bug>, String> {
    static CHOSEN: OnceLock<Result<Option<Bug>, String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| match std::env::var(ENV) {
            Ok(s) if !s.is_empty() => Bug::parse(&s).map(Some),
            _ => Ok(None),
        })
        .clone()
}

/// Whether `bug` is the one chosen. The binary validates [`ENV`] at start
/// ([`chosen`]), so an unknown name never reaches this point silently.
pub fn active(bug: Bug) -> bool {
    chosen().ok().flatten() == Some(bug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in Bug::ALL {
            assert_eq!(Bug::parse(b.name()), Ok(b));
        }
        let e = Bug::parse("fence").unwrap_err();
        assert!(e.contains("fence-reissue, ack-before-sync, early-regrant"), "{e}");
    }
}
