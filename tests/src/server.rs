//! One accept loop for every in-process HTTP server of the kit: HTTP/1.1
//! and h2c (prior knowledge) on one port through hyper-util's auto builder,
//! with upgrades, a connection count, and a way for a handler to reset its
//! own TCP connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::body::{BoxBody, boxed};

/// Answers one request; the kit's handlers all take and give [`BoxBody`].
pub type Handler =
    Arc<dyn Fn(Request<BoxBody>) -> BoxFuture<'static, Response<BoxBody>> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<BoxBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// Put in every request's extensions: which connection it came on.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Counts from 0 in accept order.
    pub id: usize,
    pub peer: SocketAddr,
    reset: Arc<Notify>,
}

impl Connection {
    /// Closes the TCP connection with a RST (SO_LINGER 0), dropping whatever
    /// is still buffered, after `after` so that frames already handed to
    /// the connection reach the socket.
    pub fn reset_after(&self, after: Duration) {
        let reset = self.reset.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            reset.notify_one();
        });
    }
}

/// Counters shared by a server and its handle.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl Counters {
    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// A running server; dropping it stops accepting and closes every
/// connection.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `handler` on `listener` until the returned value is dropped.
    pub fn start(listener: TcpListener, handler: Handler) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, handler, counters.clone()));
        Ok(Self {
            addr,
            counters,
            task,
        })
    }

    /// Binds `addr` and serves `handler` there.
    pub async fn bind(addr: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        Self::start(TcpListener::bind(addr).await?, handler)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Stops accepting and closes every connection at once.
    pub fn shutdown(&self) {
        self.task.abort();
    }

    /// Stops accepting, closes every connection and returns once the
    /// listening socket is closed, so its address can be bound again.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Runs until the accept loop ends (it ends only when aborted).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, handler: Handler, counters: Arc<Counters>) {
    // Dropped with this task, which aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let id = counters.accepted.fetch_add(1, Ordering::SeqCst);
                let conn = Connection { id, peer, reset: Arc::new(Notify::new()) };
                connections.spawn(serve_connection(stream, conn, handler.clone(), counters.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    conn: Connection,
    handler: Handler,
    counters: Arc<Counters>,
) {
    counters.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(counters);
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket, to set SO_LINGER 0 on it
    // after hyper owns the stream.
    let Ok(twin) = stream.into_std().and_then(|s| Ok((s.try_clone()?, s))) else {
        return;
    };
    let (twin, std) = twin;
    let Ok(stream) = TcpStream::from_std(std) else {
        return;
    };

    let reset = conn.reset.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
        let fut = handler(req.map(boxed));
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        _ = reset.notified() => {
            let _ = socket2::SockRef::from(&twin).set_linger(Some(Duration::ZERO));
        }
    }
}

struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}
