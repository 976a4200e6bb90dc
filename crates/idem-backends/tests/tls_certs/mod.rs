//! What the TLS tests of the external stores share: a private engine process
//! killed on drop, a free port, and a CA with a localhost certificate.

use std::net::TcpListener;
use std::path::Path;
use std::process::Child;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

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

/// Writes a new CA as `ca_name`, and cert.pem / key.pem for localhost signed by it.
pub fn write_certs(dir: &Path, ca_name: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(ca_name), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}
