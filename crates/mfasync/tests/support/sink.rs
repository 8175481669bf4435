//! A real SMTP server (support/smtp_sink.py, Python aiosmtpd) on 127.0.0.1
//! that keeps every message it accepts; used by the tests that send email.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real SMTP server on 127.0.0.1 that keeps every message it accepts.
pub struct SmtpSink {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl SmtpSink {
    pub fn start(auth: Option<&str>) -> SmtpSink {
        SmtpSink::start_with(auth, None)
    }

    /// With TLS: `tls` is `MODE:CERT:KEY` (support/smtp_sink.py).
    pub fn start_with(auth: Option<&str>, tls: Option<&str>) -> SmtpSink {
        SmtpSink::start_at(None, auth, tls)
    }

    /// On `port` (an SMTP server that comes back where it was).
    pub fn start_on(port: u16) -> SmtpSink {
        SmtpSink::start_at(Some(port), None, None)
    }

    fn start_at(fixed: Option<u16>, auth: Option<&str>, tls: Option<&str>) -> SmtpSink {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        for _ in 0..5 {
            let port = fixed.unwrap_or_else(mfasync_testkit::free_port);
            // Debian's python3 has aiosmtpd (python3-aiosmtpd, see scripts/install-deps)
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.arg(&script).arg(dir.path()).arg(port.to_string());
            if let Some(a) = auth {
                cmd.arg(a);
            }
            if let Some(t) = tls {
                cmd.env("SMTP_SINK_TLS", t);
            }
            let log = std::fs::File::create(dir.path().join("sink.log")).expect("log");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("spawn /usr/bin/python3 smtp_sink.py");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if dir.path().join("ready").exists() {
                    return SmtpSink { dir, port, child };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "SMTP sink did not start: {}",
            std::fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default()
        );
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(self.dir.path())
            .expect("read sink dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                let n = name
                    .strip_prefix("msg")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|(_, p)| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read msg"))
                    .expect("msg json")
            })
            .collect()
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
