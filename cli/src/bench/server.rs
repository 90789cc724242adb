//! `crewq bench --spawn-redis`: a private redis-server on a free loopback
//! port, stopped when the bench ends, however it ends.
//!
//! Drop stops it when the bench returns or panics. A signal (`SIGTERM`,
//! `SIGINT`, `SIGKILL`) ends the process without running drops, so a
//! watchdog (`sh`, started with the server) kills the server once the
//! bench's process is gone: before it, a bench killed with `SIGTERM` left
//! its redis-server running (issue 11).
//!
//! A trimmed-down cousin of the tests' `TestRedis` (no TLS, no shared
//! server, no key prefixes): the CLI must not depend on the tests crate.
//! Persistence is off, so the server's work is the bench's commands only.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `redis-server` is looked for after `PATH`.
const SEARCH_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin"];

/// How long a fresh server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports to try when another process takes the one picked first.
const START_ATTEMPTS: usize = 5;

/// What redis-server logs once it accepts connections (7.0 and 7.2+).
const READY_LINE: &str = "Ready to accept connections";

/// A redis-server this process started; killed on drop.
pub struct SpawnedRedis {
    child: Child,
    /// Kills `child` once this process has exited; itself killed first on
    /// drop, so that it never outlives the server and kills a process that
    /// reused its pid.
    watchdog: Option<Child>,
    url: String,
    // Holds the server's working directory (and log) until the server is gone.
    _dir: tempfile::TempDir,
}

impl SpawnedRedis {
    /// Starts `redis-server` on a free loopback port, persistence off.
    ///
    /// # Errors
    ///
    /// When no `redis-server` is found or none starts, saying why.
    pub fn start() -> Result<SpawnedRedis, String> {
        let binary = find_redis_server()?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match spawn(&binary) {
                Ok(server) => return Ok(server),
                Err(why) => failures.push(why),
            }
        }
        Err(format!(
            "redis-server ({}) did not start: {}",
            binary.display(),
            failures.join("; ")
        ))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        super::rss::peak_rss_bytes(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for SpawnedRedis {
    fn drop(&mut self) {
        if let Some(watchdog) = &mut self.watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // Nothing is persisted: killing is a clean stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a `sh` that waits for this process to exit, then kills `server`
/// (`None` if no `sh` could be started: drop still stops the server).
fn watchdog(server: u32) -> Option<Child> {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {server} 2>/dev/null",
        me = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn find_redis_server() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(SEARCH_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "--spawn-redis needs redis-server (7.0 or later) on PATH or in {SEARCH_DIRS:?}: \
                 install it with `apt-get install redis-server` (Debian/Ubuntu) or \
                 `brew install redis` (macOS), or pass --broker redis://host:port"
            )
        })
}

/// Starts one server and waits until it is ready.
fn spawn(binary: &Path) -> Result<SpawnedRedis, String> {
    let dir = tempfile::Builder::new()
        .prefix("crewq-bench-redis-")
        .tempdir()
        .map_err(|err| format!("temp dir: {err}"))?;
    // Free a moment ago; if another process takes it first, the server
    // exits and the next attempt picks another.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|err| format!("no free port: {err}"))?
        .port();
    let log_path = dir.path().join("redis.log");
    let log = File::create(&log_path).map_err(|err| format!("log file: {err}"))?;
    let log_err = log.try_clone().map_err(|err| format!("log file: {err}"))?;
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|err| format!("spawn {}: {err}", binary.display()))?;
    let watchdog = watchdog(child.id());
    let mut server = SpawnedRedis {
        child,
        watchdog,
        url: format!("redis://127.0.0.1:{port}/"),
        _dir: dir,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("port {port}: exited with {status}: {log}"));
        }
        // The log line, not only a reply on the port: a server that lost
        // the port to another process exits, and that process could answer.
        let ready = std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains(READY_LINE));
        if ready && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!("port {port}: not ready within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
