//! A PostgreSQL cluster of one test's own: `initdb` in a temporary directory, a server on a
//! loopback port, stopped and removed on drop (also when the test panics). The only way to
//! stop or restart a whole server without taking the shared one from the tests beside it.
//!
//! PostgreSQL refuses to run as root: as root every `pg_*` command runs as user `postgres`
//! (`runuser`), which owns the directory; run as anyone else, they run as the current user.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

pub struct Cluster {
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// Run the commands through `runuser -u postgres` (the test runs as root).
    as_postgres: bool,
    port: u16,
    /// Holds `data/` (the cluster), the server log and the Unix socket; removed after the
    /// server is stopped (fields drop after [`Drop::drop`]).
    dir: tempfile::TempDir,
}

/// How the server is stopped (`pg_ctl -m`).
#[derive(Clone, Copy)]
pub enum Stop {
    /// Every process killed at once, no checkpoint: a crash, recovered from the WAL at start.
    Immediate,
    /// Sessions terminated, a checkpoint, a clean exit.
    Fast,
}

impl Stop {
    fn mode(self) -> &'static str {
        match self {
            Stop::Immediate => "immediate",
            Stop::Fast => "fast",
        }
    }
}

impl Cluster {
    /// Makes and starts a cluster, or says in one line why it cannot and returns `None`:
    /// the same policy as the suite's shared server (`support::backend_ready`), so under
    /// `CI=true` that is a failure instead.
    pub fn start_or_skip() -> Option<Cluster> {
        match Cluster::start() {
            Ok(cluster) => Some(cluster),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but this test cannot run a PostgreSQL cluster of its own: {e}")
            }
            Err(e) => {
                eprintln!("private PostgreSQL cluster test skipped: {e}");
                None
            }
        }
    }

    fn start() -> Result<Cluster, String> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new().prefix("callgate-pg-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let as_postgres = dir.path().metadata().map_err(|e| format!("temp dir: {e}"))?.uid() == 0;
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .map_err(|e| format!("running chown: {e}"))?;
            if !chown.status.success() {
                return Err(format!(
                    "running as root without a `postgres` user to run the server as: {}",
                    String::from_utf8_lossy(&chown.stderr).trim()
                ));
            }
        }
        let port = free_port()?;
        let cluster = Cluster { bin, as_postgres, port, dir };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"],
        )?;
        // Loopback TCP on our port, the socket in our directory (never the system's).
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 50\n",
            cluster.dir.path().display()
        );
        let conf = Path::new(&data).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// `postgres://` URL of database `postgres` on this cluster (trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections (after crash recovery, if any).
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "120", "start"]).map(|_| ())
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&self, how: Stop) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-t", "120", "-m", how.mode(), "stop"]).unwrap();
    }

    /// Stops the server and starts it again, waiting for both.
    pub fn restart(&self, how: Stop) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "120", "-m", how.mode(), "restart"]).unwrap();
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one PostgreSQL program (as `postgres` when we are root) and returns its output.
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // `postgres` may not be allowed into the test's working directory.
        let out =
            command.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output().map_err(|e| {
                match self.as_postgres {
                    true => format!("running runuser (to run {program} as postgres): {e}"),
                    false => format!("running {program}: {e}"),
                }
            })?;
        if !out.status.success() {
            return Err(format!(
                "{program} {}: {}{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Whatever state the test left it in; the directory goes after this.
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-w", "-m", "immediate", "stop"]);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with the server programs (Debian's layout),
/// else `pg_config --bindir`.
fn binaries() -> Result<PathBuf, String> {
    let has_server = |bin: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|p| bin.join(p).is_file());
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    match from_pg_config {
        Some(bin) if has_server(&bin) => Ok(bin),
        _ => Err("no PostgreSQL server programs (initdb, pg_ctl, postgres) under /usr/lib/postgresql/*/bin or `pg_config --bindir`".into()),
    }
}

/// A free loopback port below Linux's ephemeral range (32768 on): a port the tests' own
/// `127.0.0.1:0` listeners are never given, so it is still free when the server restarts.
fn free_port() -> Result<u16, String> {
    let start = fastrand::u16(20_000..30_000);
    (start..30_000)
        .chain(20_000..start)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .ok_or_else(|| "no free loopback port in 20000–29999".into())
}
