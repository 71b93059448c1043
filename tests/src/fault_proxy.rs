//! A TCP proxy that breaks a link the ways networks do, for tests against real dependencies
//! (no toxiproxy-like crate or package exists here, and kernel netem is missing).
//!
//! - [`FaultProxy::pass`]: bytes flow both ways (the default).
//! - [`FaultProxy::blackhole`]: a silent partition: every connection, open or new, stays
//!   open and nothing moves in either direction; no FIN, no RST. What was sent meanwhile
//!   waits (in this proxy and the kernel's buffers) and flows once the link is back
//!   ([`pass`](FaultProxy::pass)), as after a healed partition.
//! - [`FaultProxy::cut`]: closes both sides of every open connection (new ones are accepted).
//! - [`FaultProxy::cut_at_frame`] (AMQP 0-9-1 only, see [`FaultProxy::amqp`]): arms a
//!   one-shot cut at the next method frame of a given class and method in one direction: that
//!   frame and everything after it are dropped and both sides are closed. E.g. the broker's
//!   `Basic.Ack` to a publisher: the broker has the message, the publisher never hears so.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the service) to the upstream (the dependency).
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

/// AMQP 0-9-1 `Basic.Publish` (class 60, method 40).
pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
/// AMQP 0-9-1 `Basic.Ack` (class 60, method 80): a publisher confirm when sent by the broker.
pub const BASIC_ACK: (u16, u16) = (60, 80);

struct Trigger {
    direction: Direction,
    method: (u16, u16),
    fired: oneshot::Sender<()>,
}

struct Shared {
    upstream: SocketAddr,
    amqp: bool,
    /// `true` while blackholed.
    blackhole: watch::Sender<bool>,
    /// Bumped by every cut; connections opened before it close.
    cuts: watch::Sender<u64>,
    trigger: Mutex<Option<Trigger>>,
    accepted: AtomicUsize,
}

/// The proxy; stops accepting when dropped (open connections end with the test's runtime).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A byte-level proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::spawn(upstream, false).await
    }

    /// A proxy to an AMQP 0-9-1 broker that forwards whole frames, so it can cut at one.
    pub async fn amqp(upstream: SocketAddr) -> Self {
        Self::spawn(upstream, true).await
    }

    async fn spawn(upstream: SocketAddr, amqp: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            amqp,
            blackhole: watch::Sender::new(false),
            cuts: watch::Sender::new(0),
            trigger: Mutex::new(None),
            accepted: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s.clone(), client));
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Let bytes flow (ends a blackhole; what waited is delivered).
    pub fn pass(&self) {
        self.shared.blackhole.send_replace(false);
    }

    /// Stop every byte in both directions, silently, until [`pass`](Self::pass).
    pub fn blackhole(&self) {
        self.shared.blackhole.send_replace(true);
    }

    /// Close both sides of every open connection.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Arm a one-shot cut at the next AMQP method frame `method` (class, method) travelling
    /// in `direction`; the receiver fires when it happened.
    pub fn cut_at_frame(&self, direction: Direction, method: (u16, u16)) -> oneshot::Receiver<()> {
        assert!(self.shared.amqp, "cut_at_frame needs FaultProxy::amqp");
        let (fired, rx) = oneshot::channel();
        *self.shared.trigger.lock().unwrap() = Some(Trigger {
            direction,
            method,
            fired,
        });
        rx
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn serve(shared: Arc<Shared>, client: TcpStream) {
    let mut cuts = shared.cuts.subscribe();
    // A new connection in a partition hangs like the open ones (the client sees no answer).
    let mut gate = shared.blackhole.subscribe();
    let opened = async {
        let _ = gate.wait_for(|blackholed| !blackholed).await;
        TcpStream::connect(shared.upstream).await
    };
    let upstream = tokio::select! {
        _ = cuts.changed() => return,
        up = opened => match up {
            Ok(up) => up,
            Err(_) => return, // upstream down: the client sees its connection closed
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let to_upstream = pump(shared.clone(), Direction::ToUpstream, cr, uw);
    let to_client = pump(shared.clone(), Direction::ToClient, ur, cw);
    // Either direction ending (EOF, error, a frame cut) or a cut closes both sides.
    tokio::select! {
        () = to_upstream => {}
        () = to_client => {}
        _ = cuts.changed() => {}
    }
}

async fn pump(
    shared: Arc<Shared>,
    direction: Direction,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) {
    let mut gate = shared.blackhole.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    if shared.amqp && direction == Direction::ToUpstream {
        // The protocol header `AMQP\0\0\x09\x01` precedes the client's first frame.
        if from.read_exact(&mut buf[..8]).await.is_err() {
            return;
        }
        if gate.wait_for(|b| !b).await.is_err() || to.write_all(&buf[..8]).await.is_err() {
            return;
        }
    }
    loop {
        let chunk = if shared.amqp {
            // type (1), channel (2), size (4), payload, frame end (1).
            let mut frame = vec![0u8; 7];
            if from.read_exact(&mut frame).await.is_err() {
                return;
            }
            let size = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]) as usize;
            frame.resize(7 + size + 1, 0);
            if from.read_exact(&mut frame[7..]).await.is_err() {
                return;
            }
            frame
        } else {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf[..n].to_vec(),
            }
        };
        // Held here while blackholed: nothing read after this chunk, nothing written.
        if gate.wait_for(|b| !b).await.is_err() {
            return;
        }
        if shared.amqp && chunk[0] == 1 && chunk.len() >= 11 {
            let method = (
                u16::from_be_bytes([chunk[7], chunk[8]]),
                u16::from_be_bytes([chunk[9], chunk[10]]),
            );
            let mut armed = shared.trigger.lock().unwrap();
            if armed
                .as_ref()
                .is_some_and(|t| t.direction == direction && t.method == method)
            {
                let t = armed.take().expect("armed");
                drop(armed);
                let _ = t.fired.send(());
                return; // dropped with everything after it; both sides close
            }
        }
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
}
