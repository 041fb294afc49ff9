//! A self-signed certificate made at test time, for servers that speak TLS.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A certificate for `127.0.0.1` and `localhost`, with its key, in a fresh host
/// directory as `server.pem` and `server.key` (what [`start_redis_tls`] and
/// [`start_etcd_tls`] mount at `/tls`). The directory is removed when dropped.
///
/// [`start_redis_tls`]: crate::start_redis_tls
/// [`start_etcd_tls`]: crate::start_etcd_tls
pub struct TestCertificate {
    dir: PathBuf,
    pem: String,
}

impl TestCertificate {
    /// Makes one; `name` goes into the directory's name.
    pub fn new(name: &str) -> TestCertificate {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("certificate");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "dlock-{name}-tls-{}-{nanos}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pem = cert.cert.pem();
        std::fs::write(dir.join("server.pem"), &pem).expect("write cert");
        std::fs::write(dir.join("server.key"), cert.signing_key.serialize_pem())
            .expect("write key");
        TestCertificate { dir, pem }
    }

    /// The directory holding `server.pem` and `server.key`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate, PEM-encoded: what a client trusts.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
