//! A loopback TCP proxy that can make the links it already carries go
//! silent: no FIN, no RST, nothing forwarded either way, while new links
//! still work. That is a half-open connection as a dead NAT mapping or a
//! partitioned host leaves it.
//!
//! Plain threads and blocking sockets, so it runs beside any runtime.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// How often blocked threads look at the switches.
const POLL: Duration = Duration::from_millis(20);

/// A proxy on `127.0.0.1:<port>` to one upstream port.
pub struct SilencingProxy {
    port: u16,
    shared: Arc<Switches>,
}

struct Switches {
    /// Links opened before this epoch are silent.
    epoch: AtomicU64,
    stop: AtomicBool,
}

impl SilencingProxy {
    /// Forwards to `127.0.0.1:upstream`; `None` upstream accepts links and
    /// never answers (a server that hangs).
    pub fn start(upstream: Option<u16>) -> SilencingProxy {
        Self::start_on(0, upstream)
    }

    /// [`SilencingProxy::start`] on a given port (`0`: any free one).
    pub fn start_on(port: u16, upstream: Option<u16>) -> SilencingProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let shared = Arc::new(Switches {
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let switches = Arc::clone(&shared);
        thread::spawn(move || accept_loop(&listener, upstream, &switches));
        SilencingProxy { port, shared }
    }

    /// The URL of a Redis behind the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The links open now go silent, both ways, and stay open; later links
    /// are forwarded.
    pub fn silence_existing(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for SilencingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, upstream: Option<u16>, switches: &Arc<Switches>) {
    let mut held = Vec::new();
    while !switches.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => return,
        };
        let Some(upstream) = upstream else {
            // Accept and never answer; keep the socket open until the end.
            held.push(client);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            continue;
        };
        let born = switches.epoch.load(Ordering::SeqCst);
        for (from, to) in [
            (client.try_clone(), server.try_clone()),
            (Ok(server), Ok(client)),
        ] {
            if let (Ok(from), Ok(to)) = (from, to) {
                let switches = Arc::clone(switches);
                thread::spawn(move || pump(from, to, born, &switches));
            }
        }
    }
}

/// Copies `from` to `to` until either closes, or holds both silently once
/// the link's epoch has passed.
fn pump(mut from: TcpStream, mut to: TcpStream, born: u64, switches: &Switches) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    let silent = || switches.epoch.load(Ordering::SeqCst) > born;
    while !switches.stop.load(Ordering::SeqCst) {
        if silent() {
            // Read nothing, write nothing, close nothing.
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if !silent() && to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
