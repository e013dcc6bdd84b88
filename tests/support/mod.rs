//! Running the real `zcdp` binary in tests: start it, read its start-up lines, stop it.
#![allow(dead_code)]

pub mod campaign_flow;
pub mod kill_flow;
pub mod up_flows;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Zcdp {
    child: Child,
    pub bootstrap: String,
    pub http: String,
    /// The keys it printed, by kind (`write`, `secret`, `admin`) for app `demo`.
    pub keys: std::collections::HashMap<String, String>,
    lines: mpsc::Receiver<String>,
}

impl Zcdp {
    /// The key it printed of `kind`.
    pub fn key(&self, kind: &str) -> &str {
        &self.keys[kind]
    }

    /// Starts `zcdp <args>` with its stdout read line by line; nothing is waited for.
    pub fn spawn(args: &[&str]) -> Zcdp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zcdp"))
            .args(args)
            .env("ZCDP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start zcdp");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Zcdp { child, bootstrap: String::new(), http: String::new(), keys: Default::default(), lines: rx }
    }

    /// The next line of stdout that contains `text`, waiting up to a minute.
    pub fn wait_line(&mut self, text: &str) -> String {
        self.wait_line_within(text, Duration::from_secs(60))
    }

    /// The next line of stdout that contains `text`, waiting up to `within` for each line.
    pub fn wait_line_within(&mut self, text: &str, within: Duration) -> String {
        loop {
            let Ok(line) = self.lines.recv_timeout(within) else {
                panic!("zcdp printed no line with {text:?} within {within:?}");
            };
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for the three key lines of app `demo` (`write key for app demo: …`, then the secret
    /// and admin keys) and keeps them; for a `spawn`ed zcdp whose earlier lines were read.
    pub fn wait_keys(&mut self) {
        for kind in ["write", "secret", "admin"] {
            let prefix = format!("{kind} key for app demo: ");
            let line = self.wait_line(&prefix);
            self.keys.insert(kind.to_string(), line.trim_start_matches(&prefix).trim().to_string());
        }
    }

    /// Starts `zcdp <args>` and waits (up to a minute) for its "running" line.
    pub fn start(args: &[&str]) -> Zcdp {
        let mut z = Zcdp::spawn(args);
        loop {
            let Ok(line) = z.lines.recv_timeout(Duration::from_secs(60)) else {
                panic!("zcdp did not print its start-up lines within a minute");
            };
            if let Some(rest) = line.split("bootstrap: ").nth(1) {
                z.bootstrap = rest.trim().to_string();
            }
            for kind in ["write", "secret", "admin"] {
                if let Some(key) = line.strip_prefix(&format!("{kind} key for app demo: ")) {
                    z.keys.insert(kind.to_string(), key.trim().to_string());
                }
            }
            if let Some(rest) = line.split("HTTP API on ").nth(1) {
                z.http = rest.split_whitespace().next().unwrap().trim_start_matches("http://").to_string();
            }
            if line.starts_with("zcdp: running") {
                break;
            }
        }
        assert!(!z.bootstrap.is_empty() && !z.http.is_empty(), "zcdp printed no bootstrap or HTTP line");
        assert_eq!(z.keys.len(), 3, "zcdp printed a write, a secret and an admin key line for app demo: {:?}", z.keys.keys());
        z
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for it to exit by itself: its status and the rest of stdout.
    pub fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "zcdp did not exit within {within:?}");
            // Polling the child's exit: there is nothing to wait on but the process itself.
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        (status, rest)
    }

    /// SIGTERM, then the rest of stdout and the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            rest.push(line);
        }
        let status = self.child.wait().unwrap();
        (status, rest)
    }
}

/// `zcdp up` with a campaigns file (carts abandoned 2 s after their last change, engagement
/// refreshed every 200 ms, its own data dir) and `extra` flags, its start-up lines read up to
/// the keys: where its Zalo simulator and its HTTP API are.
pub struct UpWithCampaigns {
    pub zcdp: Zcdp,
    /// `http://…` of the HTTP API.
    pub base: String,
    /// `http://…` of the simulator, and its `/sim/received`.
    pub sim: String,
    pub received_url: String,
    _data: tempfile::TempDir,
}

impl UpWithCampaigns {
    pub fn start(campaigns: &str, extra: &[&str]) -> UpWithCampaigns {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("campaigns.toml");
        std::fs::write(&file, campaigns).unwrap();
        let data_dir = data.path().join("d");
        let mut args = vec![
            "up",
            "--http",
            "127.0.0.1:0",
            "--cart-timeout",
            "2s",
            "--engagement-refresh",
            "200ms",
            "--campaigns",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut zcdp = Zcdp::spawn(&args);
        let line = zcdp.wait_line("/sim/received");
        let received_url = line.split("GET ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        let sim = received_url.trim_end_matches("/sim/received").to_string();
        let line = zcdp.wait_line("HTTP API on http://");
        let base = format!("http://{}", line.split("HTTP API on http://").nth(1).unwrap().split_whitespace().next().unwrap());
        zcdp.wait_keys();
        UpWithCampaigns { zcdp, base, sim, received_url, _data: data }
    }
}

impl Drop for Zcdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python virtualenv with Confluent's client, made once under the target dir.
pub fn stock_client_python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("stock-client-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("ready");
    if !marker.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 -m venv");
        assert!(ok.success(), "python3 -m venv failed");
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "confluent-kafka[avro,schemaregistry]==2.12.1"])
            .status()
            .expect("pip install");
        assert!(ok.success(), "pip install confluent-kafka failed (PyPI must be reachable)");
        std::fs::write(&marker, "").unwrap();
    }
    python
}
