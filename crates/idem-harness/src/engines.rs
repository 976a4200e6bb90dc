//! Private instances of the external stores, each on its own port and data
//! directory, started and killed by the harness. The machine's shared
//! services are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::free_port;

/// How long an engine may take to accept connections.
const ENGINE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Restarts tried after a kill before the run gives up.
const ENGINE_RESTART_TRIES: u32 = 20;

/// Which store idem runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Embedded,
    Postgres,
    Mysql,
    Redis,
}

/// How the private Redis persists: what idem's durability rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisPersistence {
    /// `appendonly yes`, `appendfsync always`: every write is fsynced first.
    Always,
    /// No persistence at all (the machine's shared Redis runs this way):
    /// a killed Redis forgets everything, acknowledged or not.
    None,
}

/// A private engine process.
pub struct Engine {
    redis: RedisPersistence,
    child: Option<Child>,
    port: u16,
    store: Store,
    dir: PathBuf,
}

fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed under /usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().with_context(|| format!("no {name} under /usr/lib/postgresql/*/bin"))
}

/// Runs `cmd` as the postgres user (PostgreSQL refuses to run as root),
/// still as this process's own child, so a kill reaps it.
fn as_postgres(cmd: &mut Command) -> anyhow::Result<&mut Command> {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at
    // once, before any other call could reuse its buffer.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            bail!("no postgres user");
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    Ok(cmd.uid(uid).gid(gid).env("HOME", "/tmp"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Engine {
    /// Creates the engine's data directory under `dir` and starts it.
    pub fn start(store: Store, dir: &Path, redis: RedisPersistence) -> anyhow::Result<Engine> {
        let dir = dir.join(format!("{store:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        match store {
            Store::Embedded => bail!("the embedded store needs no engine"),
            Store::Postgres => {
                // PostgreSQL refuses to run as root: its files belong to
                // the postgres user.
                run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir))?;
                run(as_postgres(&mut Command::new(pg_bin("initdb")?))?
                    .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                    .arg(dir.join("data")))?;
            }
            Store::Mysql => {
                run(Command::new("mariadb-install-db")
                    .args([
                        "--no-defaults",
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ])
                    .arg(format!("--datadir={}", dir.join("data").display())))?;
            }
            Store::Redis => {}
        }
        let mut e = Engine { redis, child: None, port, store, dir };
        e.spawn()?;
        e.wait_ready()?;
        if store == Store::Mysql {
            run(Command::new("mariadb").args([
                "-h",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-u",
                "root",
                "-e",
                "CREATE DATABASE IF NOT EXISTS idem",
            ]))?;
        }
        Ok(e)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("engine.log"))?;
        let port = self.port.to_string();
        let data = self.dir.join("data");
        let mut cmd = match self.store {
            Store::Postgres => {
                let mut c = Command::new(pg_bin("postgres")?);
                as_postgres(&mut c)?;
                c.arg("-D")
                    .arg(&data)
                    .args(["-p", &port, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
                    .args(["-c", "synchronous_commit=on", "-c", "max_connections=200"])
                    .arg("-k")
                    .arg(&self.dir);
                c
            }
            Store::Mysql => {
                let mut c = Command::new("mariadbd");
                c.arg("--no-defaults")
                    .arg("--user=root")
                    .arg(format!("--datadir={}", data.display()))
                    .arg(format!("--port={port}"))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.dir.join("mysqld.sock").display()))
                    .arg(format!("--pid-file={}", self.dir.join("mysqld.pid").display()))
                    .arg("--innodb-flush-log-at-trx-commit=1")
                    .arg("--skip-log-bin");
                c
            }
            Store::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
                match self.redis {
                    RedisPersistence::Always => c.args(["--appendonly", "yes", "--appendfsync", "always"]),
                    RedisPersistence::None => c.args(["--appendonly", "no"]),
                };
                c.arg("--dir").arg(&self.dir);
                c
            }
            Store::Embedded => unreachable!("no engine for the embedded store"),
        };
        let child =
            cmd.stdout(log.try_clone()?).stderr(log).spawn().with_context(|| format!("starting {:?}", self.store))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + ENGINE_READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{:?} exited with {status}; see {}", self.store, self.dir.join("engine.log").display());
            }
            let ready = match self.store {
                Store::Postgres => Command::new(pg_bin("pg_isready")?)
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|s| s.success()),
                Store::Mysql => Command::new("mariadb")
                    .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-u", "root", "-e", "SELECT 1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                _ => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{:?} did not start within {ENGINE_READY_TIMEOUT:?}", self.store)
    }

    /// The URL idem's `--store` takes.
    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// The URL of the engine as reached through `port` (a fault proxy).
    pub fn url_via(&self, port: u16) -> String {
        match self.store {
            Store::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            Store::Mysql => format!("mysql://root@127.0.0.1:{port}/idem"),
            Store::Redis => format!("redis://127.0.0.1:{port}"),
            Store::Embedded => unreachable!("no engine for the embedded store"),
        }
    }

    /// Where the engine listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL and restart on the same data directory.
    pub fn crash_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            kill_engine_tree(&mut c);
        }
        // The killed engine's children may hold its files for a moment:
        // a new start that exits at once is retried.
        let mut tries = 0;
        loop {
            self.spawn()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) if tries < ENGINE_RESTART_TRIES => {
                    tries += 1;
                    eprintln!("idem-harness: {:?} restart failed ({e}), retrying", self.store);
                    if let Some(mut c) = self.child.take() {
                        kill_engine_tree(&mut c);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn kill_engine_tree(c: &mut Child) {
    let pid = c.id() as i32;
    // The engine and its children (PostgreSQL's backends) all die at once,
    // as in a crash of the engine's host.
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for child in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process this harness started.
            unsafe {
                libc::kill(child, libc::SIGKILL);
            }
        }
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_engine_tree(&mut c);
        }
    }
}
