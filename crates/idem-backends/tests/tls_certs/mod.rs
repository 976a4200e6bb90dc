//! What the tests of private external engines share: a private engine
//! process killed on drop, a free port and the wait for it to open, a CA
//! with a localhost certificate, and parsing an idem command line.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use bytes::Bytes;
use idem_core::{Command as IdemCommand, Limits};

use idem_testkit::{Ca, ExtendedKeyUsagePurpose};

/// A private engine process, killed and reaped when the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`, for at most
/// `patience`; `what` names the engine in the failure message.
pub fn wait_for_port(port: u16, patience: Duration, what: &str) {
    let deadline = Instant::now() + patience;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port} within {patience:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An idem command from its words, under the default limits.
pub fn cmd(args: &[&str]) -> IdemCommand {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    IdemCommand::parse(&args, &Limits::default()).unwrap()
}

/// Writes a new CA as `ca_name`, and cert.pem / key.pem for localhost signed by it.
pub fn write_certs(dir: &Path, ca_name: &str) {
    let ca = Ca::new(ca_name);
    let (cert, key) = ca.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join(ca_name), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}
