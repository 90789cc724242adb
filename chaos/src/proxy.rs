//! A TCP proxy between the workers and Redis whose faults switch at run
//! time: pass, delay, refuse new connections, reset (RST) the open ones, and
//! stall the open ones silently (half-open).
//!
//! Every connection gets a sequence number when accepted. A reset or a
//! stall applies to the connections open at that moment (numbers below a
//! mark): connections made afterwards are unaffected, as when one network
//! path dies and a reconnect takes another. A stalled connection is never
//! revived: the bytes sent into it vanish and nothing comes back, with no
//! FIN and no RST, for as long as the client keeps it open; that is what a
//! half-open TCP connection looks like to a client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What happens to new connections and to the bytes of unstalled ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Close each new connection with an RST as soon as it is accepted
    /// (open ones keep working).
    Refuse,
}

/// The proxy's control state, shared with every connection.
#[derive(Clone, Copy, Debug)]
struct Control {
    mode: Mode,
    /// Connections numbered below this are reset.
    reset_below: u64,
    /// Connections numbered below this are stalled.
    stall_below: u64,
}

/// A running proxy; dropping it stops accepting and closes every
/// connection.
pub struct Proxy {
    port: u16,
    control: watch::Sender<Control>,
    next: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    ///
    /// When it cannot listen.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (control, _) = watch::channel(Control {
            mode: Mode::Pass,
            reset_below: 0,
            stall_below: 0,
        });
        let next = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            control.clone(),
            Arc::clone(&next),
        ));
        Ok(Proxy {
            port,
            control,
            next,
            accept,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Switches the mode for new connections and new bytes.
    pub fn set_mode(&self, mode: Mode) {
        self.control.send_modify(|c| c.mode = mode);
    }

    /// Resets (RST) every connection open now; returns how many were open
    /// (counting ones already closed).
    pub fn reset_open(&self) -> u64 {
        let mark = self.next.load(Ordering::SeqCst);
        self.control.send_modify(|c| c.reset_below = mark);
        mark
    }

    /// Stalls every connection open now, for good.
    pub fn stall_open(&self) -> u64 {
        let mark = self.next.load(Ordering::SeqCst);
        self.control.send_modify(|c| c.stall_below = mark);
        mark
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connections see the reset mark and close.
        self.control.send_modify(|c| c.reset_below = u64::MAX);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    next: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if control.borrow().mode == Mode::Refuse {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let seq = next.fetch_add(1, Ordering::SeqCst);
        let rx = control.subscribe();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(upstream).await {
                serve(seq, client, server, rx).await;
            }
        });
    }
}

/// Forwards both ways until either side closes or the connection is reset.
async fn serve(
    seq: u64,
    mut client: TcpStream,
    mut server: TcpStream,
    rx: watch::Receiver<Control>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            biased;
            () = until_reset(seq, rx.clone()) => true,
            () = pump(seq, client_read, server_write, rx.clone()) => false,
            () = pump(seq, server_read, client_write, rx) => false,
        }
    };
    if reset {
        // SO_LINGER 0: the close sends an RST, not a FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

async fn until_reset(seq: u64, mut rx: watch::Receiver<Control>) {
    loop {
        if seq < rx.borrow_and_update().reset_below {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction, applying the mode to each chunk. A stalled
/// connection swallows what it reads and never sends again.
async fn pump<R, W>(seq: u64, mut from: R, mut to: W, rx: watch::Receiver<Control>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let control = *rx.borrow();
        if seq < control.stall_below {
            // Keep reading (so the sender's writes succeed, as on a
            // half-open link) and forward nothing.
            continue;
        }
        if let Mode::Delay(delay) = control.mode {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_millis(500), conn.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn stall_silences_open_connections_but_not_new_ones() {
        let proxy = Proxy::start(echo().await).await.expect("proxy");
        let addr = ("127.0.0.1", proxy.port());
        let mut old = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(round_trip(&mut old).await.expect("pass"), b"ping");
        proxy.stall_open();
        let err = round_trip(&mut old).await.expect_err("stalled");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let mut new = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(round_trip(&mut new).await.expect("new"), b"ping");
    }

    #[tokio::test]
    async fn reset_and_refuse_close_connections() {
        let proxy = Proxy::start(echo().await).await.expect("proxy");
        let addr = ("127.0.0.1", proxy.port());
        let mut old = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(round_trip(&mut old).await.expect("pass"), b"ping");
        proxy.reset_open();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(round_trip(&mut old).await.is_err(), "reset");
        proxy.set_mode(Mode::Refuse);
        let mut refused = TcpStream::connect(addr).await.expect("tcp accept");
        assert!(round_trip(&mut refused).await.is_err(), "refused");
        proxy.set_mode(Mode::Pass);
        let mut fine = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(round_trip(&mut fine).await.expect("pass"), b"ping");
    }
}
