//! Wall-clock jumps: idem runs with libfaketime preloaded, reading its
//! offset from a control file that the harness rewrites during the run.
//!
//! Only `CLOCK_REALTIME` is faked (`FAKETIME_DONT_FAKE_MONOTONIC=1`): idem's
//! leases, TTLs and timeouts run on the monotonic clock, and the claim
//! under test is that moving the wall clock changes none of them. A moved
//! monotonic clock is the `clock` nemesis's time-namespace restart, which
//! fakes it faithfully; libfaketime's monotonic faking stretches or breaks
//! timed waits (its `clock_nanosleep` returns EINVAL for absolute monotonic
//! deadlines here), which would test libfaketime rather than idem.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where Debian's libfaketime package puts the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Wall-clock offsets a jump picks from, s: backwards and forwards, small
/// and across days.
pub const JUMPS_S: [i64; 6] = [-86_400, -3_600, -30, 30, 3_600, 2_592_000];

/// The control file of a run.
pub struct WallClock {
    file: PathBuf,
}

impl WallClock {
    /// Creates the control file under `dir` with no offset.
    pub fn new(dir: &Path) -> anyhow::Result<WallClock> {
        if !Path::new(LIBFAKETIME).exists() {
            bail!("{LIBFAKETIME} is missing: scripts/setup.sh installs Debian's faketime");
        }
        let w = WallClock { file: dir.join("faketime") };
        w.set(0)?;
        Ok(w)
    }

    /// The environment that starts idem under libfaketime. The file is read
    /// on every call (`FAKETIME_NO_CACHE`), so a jump takes effect at once.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Moves idem's wall clock to real time plus `offset_s`. The file is
    /// replaced by a rename, so libfaketime never reads half of it.
    pub fn set(&self, offset_s: i64) -> anyhow::Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset_s:+}\n")).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `date` under the control file's environment reports the offset, and
    /// a rewrite of the file moves it in the next process that reads it.
    #[test]
    fn the_control_file_moves_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let w = WallClock::new(dir.path()).expect("scripts/setup.sh installs faketime");
        let faked = |w: &WallClock| -> i64 {
            let out = std::process::Command::new("date").arg("+%s").envs(w.env()).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
        };
        let real = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for offset in [3_600, -86_400] {
            w.set(offset).unwrap();
            let got = faked(&w) - real();
            assert!((got - offset).abs() <= 2, "offset {offset} not applied: the clock was {got} s off");
        }
    }
}
