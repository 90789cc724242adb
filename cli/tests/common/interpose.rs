//! A loopback TCP proxy in front of a Redis that runs a test's hook between
//! two commands of a client: after the client sent a command holding a
//! marker (`CONSUMERS`), the hook runs before anything more the client
//! sends is forwarded. That is how a test lands another client's command in
//! the gap between two of crewq's, deterministically.
//!
//! Plain threads and blocking sockets. The marker is looked for in each
//! chunk read from the client, which for the small commands it is meant for
//! arrive whole.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// How often the accept loop looks whether the proxy was dropped.
const POLL: Duration = Duration::from_millis(20);

type Hook = Box<dyn FnOnce() + Send>;

/// A proxy on `127.0.0.1:<port>` to one upstream address.
pub struct Interposer {
    port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    marker: &'static [u8],
    hook: Mutex<Option<Hook>>,
    fired: AtomicBool,
    stop: AtomicBool,
}

impl Interposer {
    /// Forwards to `upstream` (`host:port`) and runs `hook` once, in the
    /// first gap after a client command holding `marker`.
    pub fn start(
        upstream: String,
        marker: &'static [u8],
        hook: impl FnOnce() + Send + 'static,
    ) -> Interposer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let shared = Arc::new(Shared {
            marker,
            hook: Mutex::new(Some(Box::new(hook))),
            fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept_loop(&listener, &upstream, &accepting));
        Interposer { port, shared }
    }

    /// The URL of the Redis behind the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the hook ran.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Interposer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a `redis://host:port/...` URL.
pub fn address_of(url: &str) -> String {
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("the interposer speaks plain redis://, not {url}"));
    let authority = rest.split('/').next().unwrap_or(rest);
    assert!(
        !authority.contains('@'),
        "the interposer's tests use a server without credentials: {url}"
    );
    authority.to_owned()
}

fn accept_loop(listener: &TcpListener, upstream: &str, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => return,
        };
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        thread::spawn(move || copy(server_back, client_back));
        let forwarding = Arc::clone(shared);
        thread::spawn(move || forward_client(client, server, &forwarding));
    }
}

/// Client to server, running the hook in the first gap after the marker.
fn forward_client(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut armed = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if armed {
            // The client waited for the reply to the marked command before
            // sending this: the hook lands between the two.
            let hook = shared
                .hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
                shared.fired.store(true, Ordering::SeqCst);
            }
            armed = false;
        }
        if chunk
            .windows(shared.marker.len())
            .any(|window| window == shared.marker)
        {
            armed = true;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Server to client, as it comes.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
