//! The connection settings both SQL backends read from their `--store` URL
//! (`postgres://…?pool_size=32&lock_timeout_ms=2000`), each with a default
//! and a bound. They are removed from the URL before the driver parses the
//! rest, so the driver's own parameters (TLS, `connect_timeout`, …) keep
//! working beside them. A value that is not a number or is out of its
//! bounds is an error naming the setting: the backend does not start.

use std::time::Duration;

use idem_core::store_url::{take_param, whole_number as number};

/// Connections one backend opens at most, unless `pool_size` says otherwise.
pub const POOL_SIZE_DEFAULT: usize = 16;
/// Largest `pool_size` accepted (an engine's own connection limit is
/// usually lower: PostgreSQL's `max_connections` and MariaDB's default to
/// 100 and 151).
pub const POOL_SIZE_MAX: usize = 1_024;
/// How long a command waits for a pooled connection before replying `BUSY`,
/// unless `pool_wait_ms` says otherwise.
pub const POOL_WAIT_DEFAULT: Duration = Duration::from_secs(5);
/// How long a command waits for a row that another transaction (a caller's
/// own, through `tx`) has locked before replying `BUSY`, unless
/// `lock_timeout_ms` says otherwise.
pub const LOCK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Longest `pool_wait_ms` and `lock_timeout_ms` accepted: 10 minutes.
pub const TIMEOUT_MS_MAX: u64 = 600_000;

/// A SQL backend's pool and timeout settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once (`pool_size`, 1..=[`POOL_SIZE_MAX`]).
    pub size: usize,
    /// Longest wait for a free connection (`pool_wait_ms`, 1..=[`TIMEOUT_MS_MAX`]).
    pub wait: Duration,
    /// Longest wait for a locked row (`lock_timeout_ms`,
    /// 1..=[`TIMEOUT_MS_MAX`]; MySQL counts it in whole seconds, rounded up).
    pub lock_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { size: POOL_SIZE_DEFAULT, wait: POOL_WAIT_DEFAULT, lock_timeout: LOCK_TIMEOUT_DEFAULT }
    }
}

impl PoolSettings {
    /// Takes `pool_size`, `pool_wait_ms` and `lock_timeout_ms` out of
    /// `url`: (the URL without them, the settings, defaults for the absent
    /// ones). The error names the setting and its bounds.
    pub fn take_from(url: &str) -> Result<(String, PoolSettings), String> {
        let mut settings = PoolSettings::default();
        let (url, size) = take_param(url, "pool_size");
        let (url, wait) = take_param(&url, "pool_wait_ms");
        let (url, lock) = take_param(&url, "lock_timeout_ms");
        if let Some(v) = size {
            settings.size = usize::try_from(number("pool_size", &v, POOL_SIZE_MAX as u64)?).unwrap_or(POOL_SIZE_MAX);
        }
        if let Some(v) = wait {
            settings.wait = Duration::from_millis(number("pool_wait_ms", &v, TIMEOUT_MS_MAX)?);
        }
        if let Some(v) = lock {
            settings.lock_timeout = Duration::from_millis(number("lock_timeout_ms", &v, TIMEOUT_MS_MAX)?);
        }
        debug_assert!((1..=POOL_SIZE_MAX).contains(&settings.size));
        Ok((url, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_out_of_the_url() {
        let (url, s) =
            PoolSettings::take_from("postgres://u@h/db?sslmode=disable&pool_size=4&lock_timeout_ms=250&pool_wait_ms=9")
                .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(
            s,
            PoolSettings { size: 4, wait: Duration::from_millis(9), lock_timeout: Duration::from_millis(250) }
        );
        let (url, s) = PoolSettings::take_from("mysql://root@h:3306/test").unwrap();
        assert_eq!(url, "mysql://root@h:3306/test");
        assert_eq!(s, PoolSettings::default());
    }

    #[test]
    fn bad_values_are_errors_naming_the_setting() {
        for (url, name) in [
            ("postgres://h/db?pool_size=0", "pool_size"),
            ("postgres://h/db?pool_size=1025", "pool_size"),
            ("postgres://h/db?pool_size=ten", "pool_size"),
            ("postgres://h/db?pool_wait_ms=-1", "pool_wait_ms"),
            ("postgres://h/db?lock_timeout_ms=600001", "lock_timeout_ms"),
            ("postgres://h/db?lock_timeout_ms=", "lock_timeout_ms"),
        ] {
            let e = PoolSettings::take_from(url).unwrap_err();
            assert!(e.starts_with(name), "{url}: {e}");
        }
    }
}
