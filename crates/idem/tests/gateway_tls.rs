//! `idem gateway --tls-only`: HTTPS with the settings' certificate and no
//! plain listener, and a SIGHUP that makes the next handshake use new
//! certificate files. curl is the client; certificates are generated here.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idem_testkit::{Ca, ExtendedKeyUsagePurpose};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The test CA's files.
trait CaFiles {
    /// Writes a server certificate for 127.0.0.1 and its key to `cert` and `key`.
    fn server_leaf(&self, cert: &Path, key: &Path);
    fn write(&self, path: &Path) -> PathBuf;
}

impl CaFiles for Ca {
    fn server_leaf(&self, cert: &Path, key: &Path) {
        let (cert_pem, key_pem) = self.leaf(ExtendedKeyUsagePurpose::ServerAuth);
        // Written whole and renamed over: the gateway never reads half a file.
        for (path, text) in [(cert, cert_pem), (key, key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::File::create(&tmp).unwrap().write_all(text.as_bytes()).unwrap();
            std::fs::rename(tmp, path).unwrap();
        }
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).unwrap();
        path.to_path_buf()
    }
}
/// An upstream that answers every request with 200 and "up".
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut conn, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nup");
            });
        }
    });
    addr
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` over HTTPS trusting `ca`: curl's success and the body.
fn get(addr: SocketAddr, ca: &Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{}/", addr.port()))
        .output()
        .expect("curl runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn tls_only_serves_https_alone_and_sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    old_ca.server_leaf(&cert, &key);
    let old_trust = old_ca.write(&dir.path().join("old-ca.pem"));
    let new_trust = new_ca.write(&dir.path().join("new-ca.pem"));
    let up = upstream();
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["gateway", "--tls-only", "--listen", &plain.to_string(), "--tls-listen", &https.to_string()])
        .args(["--upstream", &format!("http://{up}"), "--log", "warn"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start idem gateway");
    let mut gateway = Gateway(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(https).is_err() {
        assert!(Instant::now() < deadline, "{https} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(get(https, &old_trust), (true, "up".to_string()));
    assert!(TcpStream::connect(plain).is_err(), "--tls-only: nothing listens on --listen");

    new_ca.server_leaf(&cert, &key);
    assert!(get(https, &old_trust).0, "new files are read on SIGHUP only");
    // SAFETY: kill(2) on the child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(gateway.0.id() as libc::pid_t, libc::SIGHUP) }, 0);
    // The signal is handled asynchronously: wait for the first handshake with the new certificate.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(https, &new_trust).0 {
        assert!(gateway.0.try_wait().unwrap().is_none(), "SIGHUP ended the gateway");
        assert!(Instant::now() < deadline, "the new certificate was never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!get(https, &old_trust).0, "the old certificate is no longer served");
    assert!(gateway.0.try_wait().unwrap().is_none(), "the gateway still runs");
}
