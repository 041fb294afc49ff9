//! A TCP proxy for fault tests: one link between clients and a server that a test
//! can delay, blackhole, or reset (this kernel has no netem). Traffic goes only to
//! the upstream port on 127.0.0.1.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the link does to the bytes crossing it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Link {
    /// Bytes pass at once.
    Pass,
    /// Each chunk is held this long before it is passed on.
    Delay(Duration),
    /// Nothing passes, and nothing is closed: bytes wait, as packets dropped and
    /// retransmitted would, until the link passes again.
    Blackhole,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct State {
    link: Link,
    /// Bumped by `reset`: every connection opened before it is closed.
    generation: u64,
}

/// A proxy listening on 127.0.0.1, forwarding to `127.0.0.1:<upstream>`. Dropping it
/// stops it and closes its connections.
pub struct Proxy {
    port: u16,
    state: Arc<watch::Sender<State>>,
    accept: JoinHandle<()>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream` on a free port.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (state, _) = watch::channel(State {
            link: Link::Pass,
            generation: 0,
        });
        let state = Arc::new(state);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = {
            let (state, open) = (Arc::clone(&state), Arc::clone(&open));
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let _ = client.set_nodelay(true);
                    let (receiver, open) = (state.subscribe(), Arc::clone(&open));
                    tokio::spawn(async move {
                        open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        connection(client, upstream, receiver).await;
                        open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            })
        };
        Proxy {
            port,
            state,
            accept,
            open,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sets what the link does from now on, for open and new connections.
    pub fn set(&self, link: Link) {
        self.state.send_modify(|s| s.link = link);
    }

    /// Closes every open connection (clients see a reset or end of stream); new
    /// connections pass as the link says. Returns how many were open.
    pub fn reset(&self) -> usize {
        let open = self.open.load(std::sync::atomic::Ordering::SeqCst);
        self.state.send_modify(|s| s.generation += 1);
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closes the open connections: their tasks end when the sender is gone.
        self.state.send_modify(|s| s.generation += 1);
    }
}

async fn connection(client: TcpStream, upstream: u16, mut state: watch::Receiver<State>) {
    let born = state.borrow().generation;
    // Held while the link is a blackhole, as a dropped SYN would be.
    if pass_or_wait(&mut state, born).await.is_none() {
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, state.clone(), born);
    let down = pump(server_read, client_write, state, born);
    // Either direction ending (a close, a reset, the proxy dropped) ends both.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies one direction, chunk by chunk, as the link says.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = reset(&mut state, born) => return,
        };
        let Some(link) = pass_or_wait(&mut state, born).await else {
            return;
        };
        if let Link::Delay(d) = link {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = reset(&mut state, born) => return,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the link is a blackhole; `None` if the connection was reset.
async fn pass_or_wait(state: &mut watch::Receiver<State>, born: u64) -> Option<Link> {
    loop {
        let now = *state.borrow_and_update();
        if now.generation != born {
            return None;
        }
        if now.link != Link::Blackhole {
            return Some(now.link);
        }
        state.changed().await.ok()?;
    }
}

/// Resolves when this connection's generation has been reset (or the proxy dropped).
async fn reset(state: &mut watch::Receiver<State>, born: u64) {
    loop {
        if state.borrow_and_update().generation != born {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
