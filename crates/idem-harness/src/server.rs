//! The idem server under test: the real binary, started, killed with
//! SIGKILL, stopped with SIGSTOP and restarted on the same store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a (re)start with recovery may take before the run gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a killed process may take to be gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server is launched: which store, and what wraps it.
#[derive(Clone, Debug)]
pub struct Launch {
    pub bin: PathBuf,
    /// `None`: the embedded store in `data`.
    pub store_url: Option<String>,
    pub data: PathBuf,
    pub logs: PathBuf,
    /// Extra environment (seeded-bug switches, faketime).
    pub env: Vec<(String, String)>,
}

/// A running idem.
pub struct Server {
    launch: Launch,
    child: Option<Child>,
    port: u16,
    starts: u32,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Server {
    pub fn new(launch: Launch) -> Server {
        Server { launch, child: None, port: free_port(), starts: 0 }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Spawns the process; `monotonic_shift_s`, when set, starts it in a new
    /// time namespace whose monotonic and boot clocks are shifted (a reboot
    /// as idem sees it).
    pub fn spawn(&mut self, monotonic_shift_s: Option<i64>) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "one server process at a time");
        self.starts += 1;
        let log = self.launch.logs.join(format!("idem-{}.log", self.starts));
        let mut cmd = match monotonic_shift_s {
            Some(s) => {
                let mut c = Command::new("unshare");
                c.args(["--time", "--fork", "--kill-child"])
                    .arg(format!("--monotonic={s}"))
                    .arg(format!("--boottime={s}"))
                    .arg("--")
                    .arg(&self.launch.bin);
                c
            }
            None => Command::new(&self.launch.bin),
        };
        cmd.args(["serve", "--port", &self.port.to_string(), "--http-port", "0", "--log", "warn"]);
        match &self.launch.store_url {
            Some(url) => {
                cmd.args(["--store", url]);
            }
            None => {
                cmd.arg("--data").arg(&self.launch.data);
                // Snapshot often, so kills also land in snapshots and
                // restarts recover from snapshot plus log.
                cmd.env("IDEM_SNAPSHOT_AFTER_BYTES", "262144");
            }
        }
        for (k, v) in &self.launch.env {
            cmd.env(k, v);
        }
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .with_context(|| format!("starting {}", self.launch.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server answers PING.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let log = self.launch.logs.join(format!("idem-{}.log", self.starts));
                bail!("idem exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) {
                    if redis::cmd("PING").query::<redis::Value>(&mut con).is_ok() {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("idem did not answer within {READY_TIMEOUT:?}")
    }

    /// SIGKILL: no shutdown path runs. Under `unshare` idem is the child's
    /// child: it is killed too, and waited for until it is gone, so the next
    /// start finds its data directory unlocked.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The server runs in its own process group (with `unshare`,
            // idem is the group's second process): kill the whole group.
            let group = c.id() as i32;
            // SAFETY: kill(2) on the process group this harness created.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
            let deadline = Instant::now() + GONE_TIMEOUT;
            // SAFETY: signal 0 only asks whether the group still exists.
            while Instant::now() < deadline && unsafe { libc::kill(-group, 0) } == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Empties the embedded store's data directory (the server must be
    /// down).
    pub fn forget_data(&self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "the server is down");
        if self.launch.store_url.is_some() {
            bail!("amnesia needs the embedded store");
        }
        let _ = std::fs::remove_dir_all(&self.launch.data);
        Ok(())
    }

    /// SIGSTOP (true) or SIGCONT (false).
    pub fn signal_stop(&self, stop: bool) {
        if let Some(pid) = self.pid() {
            // The whole process group: under `unshare`, idem is not the
            // child itself.
            // SAFETY: kill(2) on the process group this harness created.
            unsafe {
                libc::kill(-pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal_stop(false);
        self.kill();
    }
}
