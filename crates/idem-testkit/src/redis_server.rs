//! A private `redis-server` for one test, on a loopback port of its own and
//! never the shared one on 6379: tests that flush, restart or re-clock Redis
//! must not disturb anyone else's. Killed and reaped on drop, also when the
//! test panics.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private redis-server may take to accept connections.
pub const START_PATIENCE: Duration = Duration::from_secs(20);

/// A loopback port that is free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A running private `redis-server` without persistence.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port(), |_| {})
    }

    /// Starts one on `port` (e.g. the port of one the test stopped), after
    /// `configure` has added its own arguments or environment to the
    /// command, and waits until it accepts connections.
    pub fn start_on(port: u16, configure: impl FnOnce(&mut Command)) -> RedisServer {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut cmd);
        let child = cmd.spawn().expect("start redis-server (is it installed?)");
        let server = RedisServer { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < START_PATIENCE, "redis-server on :{port} did not accept connections");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
