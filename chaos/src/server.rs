//! The suite's private redis-server: on a free loopback port, in the run's
//! own directory, killed and restarted on the same port and directory.
//!
//! Like `crewq-tests`' `TestRedis` (which this follows), it never touches
//! port 6379 and never binds anything but 127.0.0.1; unlike it, the server
//! can be SIGKILLed, stopped and started again, with `appendonly yes` and
//! `appendfsync always` when a scenario needs what was acknowledged to
//! survive. Drop kills it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `redis-server` is looked for after `PATH`.
const SEARCH_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin"];

/// How long a (re)started server may take to answer PING (an AOF replay
/// of a big run included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A redis-server this process owns.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

/// Finds a program on `PATH` or in the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(SEARCH_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server in `dir` (created if missing) on a free port; with
    /// `aof`, every write is fsynced to the append-only file before its
    /// reply.
    ///
    /// # Errors
    ///
    /// When `redis-server` is missing or does not start.
    pub fn start(dir: &Path, aof: bool) -> Result<RedisServer, String> {
        let binary = find_program("redis-server").ok_or_else(|| {
            "redis-server not found: install it (`apt-get install redis-server`)".to_owned()
        })?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut failures = Vec::new();
        // Another process may take the port between our pick and the bind.
        for _ in 0..8 {
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            if port == 6379 {
                continue;
            }
            let mut server = RedisServer {
                binary: binary.clone(),
                port,
                dir: dir.to_owned(),
                aof,
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(why) => failures.push(why),
            }
        }
        Err(format!(
            "redis-server did not start: {}",
            failures.join("; ")
        ))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether it is running (as far as this process knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn launch(&mut self) -> Result<(), String> {
        let aof = if self.aof { "yes" } else { "no" };
        let log = self.dir.join("redis.log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", aof])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if pong(self.port) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(format!("exited with {status}: {tail}"));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("no PONG within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash. What `appendfsync always` acknowledged survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a clean stop (redis-server flushes and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(child.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, in the same directory.
    ///
    /// # Errors
    ///
    /// When it does not come back (the port taken meanwhile, say).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let mut last = String::new();
        // The old process's socket may linger a moment.
        for _ in 0..20 {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "redis-server did not restart on {}: {last}",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM through `kill(1)` (the workspace forbids `unsafe`, which
/// `libc::kill` needs).
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a server on `port` answers PING with PONG (not `-LOADING`).
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG"
}
