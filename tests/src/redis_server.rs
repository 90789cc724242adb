//! A private redis-server per test, or a shared one named by `CREWQ_REDIS_URL`.
//!
//! Each [`TestRedis::start`] runs its own `redis-server` on a free loopback
//! port in a fresh temporary directory, with persistence off, and stops it
//! on drop: tests never touch the machine's own Redis on 6379 and never see
//! each other's keys. With `CREWQ_REDIS_URL` set, tests use that server
//! instead; keys then stay apart by [`TestRedis::unique_prefix`], and drop
//! deletes exactly the keys under the prefixes handed out (never
//! `FLUSHALL`: the server may be shared).
//!
//! [`TestRedis::start_tls`] starts a private server that speaks TLS only,
//! with certificates the test hands in.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming an existing server to use instead.
pub const REDIS_URL_VAR: &str = "CREWQ_REDIS_URL";

/// Where `redis-server` is looked for after `PATH`.
const SEARCH_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin"];

/// How long a fresh server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ports to try when another process takes the one we picked
/// between choosing it and the server binding it.
const START_ATTEMPTS: usize = 8;

/// What redis-server logs once it accepts connections (7.0 and 7.2+).
const READY_LINE: &str = "Ready to accept connections";

/// Keys deleted per `DEL` when cleaning a shared server.
const SCAN_BATCH: usize = 500;

/// Why a TLS server may not start, for the panic message.
const TLS_HINT: &str = "the TLS tests need a redis-server built with TLS (`make BUILD_TLS=yes`; \
     Debian/Ubuntu's `redis-server` package is): a 7.0 build without it rejects `--tls-port` \
     as a bad directive, a later one fails to listen on it. Install one with \
     `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)";

/// The certificates of a TLS test server, as PEM text.
///
/// The fixture writes them into the server's temporary directory.
pub struct ServerTls {
    /// The server's certificate chain, leaf first.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
    /// The CA that client certificates must chain to.
    pub client_ca_pem: String,
    /// Whether clients must present a certificate (`--tls-auth-clients`).
    pub require_client_cert: bool,
}

/// How a private server listens.
#[derive(Clone, Copy)]
enum Listen<'a> {
    /// Plain TCP.
    Plain,
    /// TLS only: no plain-text port at all.
    Tls(&'a ServerTls),
}

/// A redis-server owned by one test, or the shared `CREWQ_REDIS_URL` one.
pub struct TestRedis {
    url: String,
    server: Option<OwnedServer>,
    prefixes: Mutex<Vec<String>>,
}

/// A server this process started; killed (and its directory removed) when
/// dropped, also while a test panics.
pub(crate) struct OwnedServer {
    pub(crate) child: Child,
    pub(crate) dir: tempfile::TempDir,
}

impl OwnedServer {
    /// Kills the server (`SIGKILL`: nothing is persisted) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestRedis {
    /// Starts a private redis-server on a free loopback port in a fresh temp dir
    /// (or uses `CREWQ_REDIS_URL` when set).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be found (with how to install it) or does
    /// not start; a test that needs Redis never skips silently.
    pub fn start() -> TestRedis {
        match std::env::var(REDIS_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => TestRedis {
                url,
                server: None,
                prefixes: Mutex::new(Vec::new()),
            },
            _ => Self::start_with_args(&[]),
        }
    }

    /// Starts a private redis-server with extra arguments (for example
    /// `["--requirepass", "secret"]`), even when `CREWQ_REDIS_URL` is set.
    ///
    /// [`TestRedis::url`] carries no credentials; a test that starts a server
    /// requiring them builds its own URL.
    ///
    /// # Panics
    ///
    /// As [`TestRedis::start`].
    pub fn start_with_args(args: &[&str]) -> TestRedis {
        Self::start_listening(Listen::Plain, args)
    }

    /// Starts a private redis-server that speaks TLS only (`--port 0`), with
    /// `tls`'s certificates and extra arguments; [`TestRedis::url`] is then
    /// `rediss://127.0.0.1:<port>/`.
    ///
    /// [`TestRedis::broker`] and [`TestRedis::raw_connection`] do not know
    /// the CA: a test connects with a `RedisConfig` of its own.
    ///
    /// # Panics
    ///
    /// As [`TestRedis::start`], and (saying how to get one) when
    /// `redis-server` was built without TLS.
    pub fn start_tls(tls: &ServerTls, args: &[&str]) -> TestRedis {
        Self::start_listening(Listen::Tls(tls), args)
    }

    fn start_listening(listen: Listen<'_>, args: &[&str]) -> TestRedis {
        let binary = find_binary("redis-server");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match spawn(&binary, listen, args) {
                Ok((url, server)) => {
                    return TestRedis {
                        url,
                        server: Some(server),
                        prefixes: Mutex::new(Vec::new()),
                    };
                }
                Err(why) => {
                    // A build without TLS fails the same way every time.
                    if matches!(listen, Listen::Tls(_)) && why.contains("Bad directive") {
                        panic!("{TLS_HINT}.\nredis-server ({}): {why}", binary.display());
                    }
                    failures.push(why);
                }
            }
        }
        let hint = match listen {
            Listen::Plain => "",
            Listen::Tls(_) => TLS_HINT,
        };
        panic!(
            "redis-server ({}) did not start after {START_ATTEMPTS} attempts. {hint}\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    /// The server's URL (`redis://127.0.0.1:<port>/` for a private server,
    /// `rediss://` for a TLS one).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix no other user of this server has (unique per call).
    ///
    /// Prefixes have a fixed-width counter, so none is a prefix of another
    /// and cleaning up `p*` never touches another test's keys.
    pub fn unique_prefix(&self) -> String {
        let prefix = next_unique_prefix();
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(prefix.clone());
        prefix
    }

    /// A RedisBroker connected to it.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn broker(&self) -> crewq_redis::RedisBroker {
        match crewq_redis::RedisBroker::connect(&self.url).await {
            Ok(broker) => broker,
            Err(err) => panic!("cannot connect to the test Redis at {}: {err}", self.url),
        }
    }

    /// A plain synchronous redis-rs connection, for setting up what the
    /// Broker cannot (a key of another type, `CLIENT KILL` ...).
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub fn raw_connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|err| panic!("cannot connect to the test Redis at {}: {err}", self.url))
    }

    /// The port of a private server, `None` for a `CREWQ_REDIS_URL` one.
    pub fn port(&self) -> Option<u16> {
        self.server.as_ref()?;
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
    }

    /// The server's log file, for a private server.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.server
            .as_ref()
            .map(|server| log_path(server.dir.path()))
    }

    /// Deletes every key under the prefixes handed out, on a shared server.
    fn clean_prefixes(&self) -> redis::RedisResult<()> {
        let prefixes = std::mem::take(
            &mut *self
                .prefixes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if prefixes.is_empty() {
            return Ok(());
        }
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        for prefix in prefixes {
            let pattern = format!("{prefix}*");
            let keys = keys_matching(&mut conn, &pattern)?;
            for batch in keys.chunks(SCAN_BATCH) {
                redis::cmd("DEL").arg(batch).exec(&mut conn)?;
            }
        }
        Ok(())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        match self.server.as_mut() {
            Some(server) => {
                // Killing is enough: nothing is persisted, and the temp dir
                // goes with `server.dir`.
                server.kill();
            }
            None => {
                // Best effort: a failing clean-up must not turn a passing
                // test into a panic (or a panicking one into an abort).
                let _ = self.clean_prefixes();
            }
        }
    }
}

/// Every key of the server behind `conn` that matches `pattern` (`SCAN`,
/// so a shared server is not blocked as by `KEYS`).
pub(crate) fn keys_matching(
    conn: &mut redis::Connection,
    pattern: &str,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(conn)?
        .collect()
}

/// A key prefix unique in this process and across runs, with a
/// fixed-width counter so that none is a prefix of another.
pub(crate) fn next_unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("crewqtest-{}-{:08}", process_token(), n)
}

/// Process id and start time, so prefixes differ between runs too.
fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{}-{:08x}", std::process::id(), nanos)
    })
}

/// `redis-server` or `redis-cli` on `PATH` or in [`SEARCH_DIRS`].
///
/// # Panics
///
/// When it is not found, saying how to install it.
pub(crate) fn find_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = on_path
        .into_iter()
        .chain(SEARCH_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found on PATH or in {SEARCH_DIRS:?}. The Redis tests need \
         redis-server and redis-cli (7.0 or later): install it with `apt-get install redis-server` \
         (Debian/Ubuntu), `brew install redis` (macOS), or set {REDIS_URL_VAR} to a \
         server whose keys the tests may create and delete"
    );
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| format!("local_addr: {err}"))
}

/// The `--port`/`--tls-*` arguments for listening on `port`, after writing
/// a TLS server's certificate files into `dir`.
fn listen_args(listen: Listen<'_>, port: u16, dir: &Path) -> Result<Vec<OsString>, String> {
    let port = OsString::from(port.to_string());
    let Listen::Tls(tls) = listen else {
        return Ok(vec!["--port".into(), port]);
    };
    let write = |name: &str, pem: &str| -> Result<OsString, String> {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|err| format!("write {}: {err}", path.display()))?;
        Ok(path.into_os_string())
    };
    let auth_clients = if tls.require_client_cert { "yes" } else { "no" };
    Ok(vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port,
        "--tls-cert-file".into(),
        write("server.crt", &tls.cert_pem)?,
        "--tls-key-file".into(),
        write("server.key", &tls.key_pem)?,
        "--tls-ca-cert-file".into(),
        write("ca.crt", &tls.client_ca_pem)?,
        "--tls-auth-clients".into(),
        auth_clients.into(),
    ])
}

/// Starts one server on a free port and waits until it is ready; `Err`
/// says why not.
fn spawn(
    binary: &Path,
    listen: Listen<'_>,
    args: &[&str],
) -> Result<(String, OwnedServer), String> {
    spawn_on(binary, listen, free_port()?, args)
}

/// Starts one plain-TCP server on `port` with extra `args` and waits until
/// it is ready; `Err` says why not (the port taken ...).
pub(crate) fn spawn_plain_on(
    binary: &Path,
    port: u16,
    args: &[&str],
) -> Result<OwnedServer, String> {
    spawn_on(binary, Listen::Plain, port, args).map(|(_, server)| server)
}

/// Starts one server on `port` and waits until it is ready.
fn spawn_on(
    binary: &Path,
    listen: Listen<'_>,
    port: u16,
    args: &[&str],
) -> Result<(String, OwnedServer), String> {
    let dir = tempfile::Builder::new()
        .prefix("crewq-redis-")
        .tempdir()
        .map_err(|err| format!("temp dir: {err}"))?;
    let log = File::create(log_path(dir.path())).map_err(|err| format!("log file: {err}"))?;
    let log_err = log.try_clone().map_err(|err| format!("log file: {err}"))?;
    let child = Command::new(binary)
        .args(listen_args(listen, port, dir.path())?)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|err| format!("spawn {}: {err}", binary.display()))?;
    let mut server = OwnedServer { child, dir };
    let (url, probe) = match listen {
        Listen::Plain => (format!("redis://127.0.0.1:{port}/"), Probe::Ping),
        Listen::Tls(_) => (format!("rediss://127.0.0.1:{port}/"), Probe::Accepts),
    };
    match wait_ready(&mut server, port, probe) {
        Ok(()) => Ok((url, server)),
        Err(why) => {
            server.kill();
            let log = std::fs::read_to_string(log_path(server.dir.path())).unwrap_or_default();
            Err(format!("port {port}: {why}; log:\n{log}"))
        }
    }
}

/// How to tell that the server listens.
#[derive(Clone, Copy)]
enum Probe {
    /// A plain-text PING gets a reply.
    Ping,
    /// The port accepts a TCP connection (a TLS port answers a plain PING
    /// by hanging up).
    Accepts,
}

/// Waits until the server logged that it is ready and answers on its port.
///
/// The log line matters: when another process took the port, this server
/// exits, and a PING alone could be answered by that other process.
fn wait_ready(server: &mut OwnedServer, port: u16, probe: Probe) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let log = log_path(server.dir.path());
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("redis-server exited with {status}"));
        }
        let ready = std::fs::read_to_string(&log).is_ok_and(|text| text.contains(READY_LINE));
        let listens = match probe {
            Probe::Ping => answers_on(port),
            Probe::Accepts => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if ready && listens {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether something speaking RESP answers on the port (any reply will do:
/// with `--requirepass` a PING gets `NOAUTH`).
fn answers_on(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 1];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read(&mut reply).is_ok_and(|n| n == 1)
        && matches!(reply[0], b'+' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(conn: &mut redis::Connection) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
        keys.sort();
        keys
    }

    #[test]
    fn drop_stops_the_server_and_removes_its_directory() {
        let server = TestRedis::start_with_args(&[]);
        let port = server.port().expect("private");
        let dir = server
            .log_path()
            .and_then(|log| log.parent().map(Path::to_path_buf))
            .expect("dir");
        assert!(answers_on(port));
        let pid = server
            .server
            .as_ref()
            .map(|owned| owned.child.id())
            .expect("pid");
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        // Killed and reaped. (Not "the port is closed": a parallel test's
        // server may already have taken it.)
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} still runs"
        );
    }

    #[test]
    fn prefixes_are_unique_and_none_is_a_prefix_of_another() {
        let server = TestRedis::start_with_args(&[]);
        let prefixes: Vec<String> = (0..20).map(|_| server.unique_prefix()).collect();
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                assert!(i == j || !b.starts_with(a.as_str()), "{a} / {b}");
            }
        }
    }

    #[test]
    fn a_shared_server_loses_only_the_keys_under_prefixes_handed_out() {
        let owner = TestRedis::start_with_args(&[]);
        // What `start` builds for CREWQ_REDIS_URL, pointed at `owner`.
        let shared = TestRedis {
            url: owner.url().to_owned(),
            server: None,
            prefixes: Mutex::new(Vec::new()),
        };
        let mine = shared.unique_prefix();
        let theirs = owner.unique_prefix();
        let mut conn = owner.raw_connection();
        for key in [
            format!("{mine}:a"),
            format!("{mine}:{{tag}}:b"),
            format!("{theirs}:a"),
            "unrelated".to_owned(),
        ] {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .exec(&mut conn)
                .expect("SET");
        }
        drop(shared);
        assert_eq!(keys(&mut conn), {
            let mut left = vec![format!("{theirs}:a"), "unrelated".to_owned()];
            left.sort();
            left
        });
    }
}
