//! A private PostgreSQL server for one test: `initdb` in a temporary directory, `pg_ctl` on a
//! free loopback port (as the `postgres` user when the tests run as root: the server refuses
//! root), stopped and removed when dropped. A real server, no mock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private server.
#[derive(Debug)]
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Extra server settings (TLS).
    options: String,
}

/// Debian's server binaries (the newest installed major version).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin (scripts/setup.sh installs them)")
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

impl Postgres {
    /// Initializes and starts a server (trust authentication, user `frostgate`, loopback only).
    pub fn start() -> Postgres {
        Self::start_with_tls(false).0
    }

    /// [`Self::start`]; with `tls`, the server also serves TLS with a certificate for
    /// `localhost` and 127.0.0.1 signed by a fresh authority, whose certificate (PEM) this returns.
    pub fn start_with_tls(tls: bool) -> (Postgres, Option<PathBuf>) {
        let dir = tempfile::Builder::new().prefix("frostgate-pg").tempdir().expect("dir");
        let data = dir.path().join("data");
        if is_root() {
            std::fs::create_dir(&data).expect("data dir");
            for p in [dir.path(), data.as_path()] {
                let status = Command::new("chown").arg("postgres:postgres").arg(p).status().expect("chown");
                assert!(status.success(), "chown {}", p.display());
            }
        }
        let mut pg = Postgres { port: crate::free_port(), bin: bin_dir(), data, _dir: dir, options: String::new() };
        let d = pg.data.display().to_string();
        pg.run("initdb", &["-D", &d, "-A", "trust", "-U", "frostgate", "--no-sync", "-E", "UTF8"]);
        let ca = tls.then(|| pg.certificates());
        pg.start_server();
        (pg, ca)
    }

    /// A fresh authority and the server's certificate and key (in the data directory, the key
    /// readable by the server alone); the authority's certificate path.
    fn certificates(&mut self) -> PathBuf {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("authority");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("p");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let (crt, pem) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::write(&crt, cert.pem()).expect("crt");
        std::fs::write(&pem, key.serialize_pem()).expect("key");
        let ca = self._dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("ca");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        if is_root() {
            for p in [&crt, &pem] {
                let status = Command::new("chown").arg("postgres:postgres").arg(p).status().expect("chown");
                assert!(status.success());
            }
        }
        self.options = format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", crt.display(), pem.display());
        ca
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let bin = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd.args(args).current_dir("/").output().unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_server(&self) {
        let d = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        let options =
            format!("-p {} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=200{}", self.port, self.options);
        self.run("pg_ctl", &["-D", &d, "-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "frostgate",
                "-d",
                "postgres",
                "-qAtc",
                "SELECT 1",
            ],
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://frostgate@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`fast`: clients disconnected, committed work kept; `immediate`: as a
    /// crash).
    pub fn stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data.display().to_string(), "-m", mode, "-w", "stop"]);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        self.start_server();
    }

    fn psql(&self, sql: &str) -> Command {
        let port = self.port.to_string();
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-h", "127.0.0.1", "-p", &port, "-U", "frostgate", "-d", "postgres", "-qAtc", sql]);
        psql
    }

    /// Runs one SQL statement with `psql`; its output (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(sql).output().expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` (one transaction) in a session of its own, in the background.
    pub fn session(&self, sql: &str) -> std::process::Child {
        self.psql(sql).stdout(std::process::Stdio::null()).spawn().expect("psql")
    }

    /// Its data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let d = self.data.display().to_string();
        let bin = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let _ = cmd.args(["-D", &d, "-m", "immediate", "-w", "stop"]).current_dir("/").output();
    }
}
