use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task;
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// How the proxy treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Pass,
    /// Nothing listens on the port: clients get ECONNREFUSED. Open
    /// connections are left alone (`reset_all` ends them).
    Refuse,
    /// New connections are accepted, read and discarded, never answered.
    /// Open connections stall: nothing is forwarded, and what they had in
    /// flight is delivered when the mode changes, as TCP retransmission would
    /// after a partition heals.
    Blackhole,
    /// New connections forward with this much added latency each way
    /// (pipelined: a burst is delayed once, not once per chunk).
    Delay(Duration),
}

/// A TCP proxy on a free 127.0.0.1 port in front of `target`. It runs on its
/// own thread with its own runtime so it keeps working whatever runtime the
/// test uses, even one the test blocks; control calls return once applied.
pub struct Proxy {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Request>,
    connections: Registry,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    SetMode(ProxyMode),
    ResetAll,
    Shutdown,
}

struct Request {
    command: Command,
    done: std_mpsc::SyncSender<Result<(), String>>,
}

struct Connection {
    kill: oneshot::Sender<()>,
    task: task::JoinHandle<()>,
}

type Registry = Arc<Mutex<HashMap<u64, Connection>>>;

const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        // Bound here, not on the proxy thread, so the port is known (and
        // held) before `start` returns.
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy on 127.0.0.1:0");
        listener.set_nonblocking(true).expect("make the proxy listener non-blocking");
        let addr = listener.local_addr().expect("proxy listener address");
        let (commands, command_rx) = mpsc::unbounded_channel();
        let connections = Registry::default();
        let registry = connections.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the proxy runtime");
                runtime.block_on(control(listener, addr, target, command_rx, registry));
                // Dropping the runtime drops every connection task and so
                // closes their sockets.
            })
            .expect("spawn the proxy thread");
        Proxy { addr, commands, connections, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// Applies to connections accepted from now on; Refuse closes the
    /// listener (leaving Refuse reopens it on the same port) and Blackhole
    /// also stalls open connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.call(Command::SetMode(mode));
    }

    /// Aborts every open connection with a TCP RST on both sides.
    pub fn reset_all(&self) {
        self.call(Command::ResetAll);
    }

    /// The Redis is "gone": new connections are refused, open ones reset.
    pub fn cut(&self) {
        self.set_mode(ProxyMode::Refuse);
        self.reset_all();
    }

    pub fn restore(&self) {
        self.set_mode(ProxyMode::Pass);
    }

    /// Connections currently open through the proxy (blackholed ones too).
    pub fn connections(&self) -> usize {
        lock(&self.connections).len()
    }

    fn call(&self, command: Command) {
        let (done, result) = std_mpsc::sync_channel(1);
        self.commands.send(Request { command, done }).expect("the proxy thread is gone");
        match result.recv_timeout(CONTROL_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("proxy on {}: {err}", self.addr),
            Err(err) => panic!("proxy on {} did not answer: {err}", self.addr),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let (done, _result) = std_mpsc::sync_channel(1);
        let _ = self.commands.send(Request { command: Command::Shutdown, done });
        if let Some(thread) = self.thread.take() {
            // A proxy thread that panicked has already reported it; panicking
            // again in drop would abort the test binary.
            let _ = thread.join();
        }
    }
}

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
    // A panic elsewhere must not hide the connections from cleanup.
    registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Acceptor {
    stop: oneshot::Sender<()>,
    task: task::JoinHandle<()>,
}

async fn control(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Request>,
    registry: Registry,
) {
    let (mode_tx, mode_rx) = watch::channel(ProxyMode::Pass);
    let next_id = Arc::new(AtomicU64::new(0));
    let spawn_acceptor = |listener: TcpListener| {
        let (stop, stopped) = oneshot::channel();
        let task = task::spawn(accept_loop(
            listener,
            target,
            mode_rx.clone(),
            registry.clone(),
            next_id.clone(),
            stopped,
        ));
        Acceptor { stop, task }
    };
    let listener = TcpListener::from_std(listener).expect("register the proxy listener");
    let mut acceptor = Some(spawn_acceptor(listener));

    while let Some(Request { command, done }) = commands.recv().await {
        let result = match command {
            Command::SetMode(mode) => {
                // The mode is published before a listener reopens so that no
                // connection is accepted under the old one.
                mode_tx.send_replace(mode);
                if mode == ProxyMode::Refuse {
                    if let Some(Acceptor { stop, task }) = acceptor.take() {
                        let _ = stop.send(());
                        // The accept loop owns the listener: once it has
                        // returned, the port is closed and connects are
                        // refused.
                        let _ = task.await;
                    }
                    Ok(())
                } else if acceptor.is_none() {
                    rebind(addr).await.map(|listener| {
                        acceptor = Some(spawn_acceptor(listener));
                    })
                } else {
                    Ok(())
                }
            }
            Command::ResetAll => {
                reset_all(&registry).await;
                Ok(())
            }
            Command::Shutdown => {
                let _ = done.send(Ok(()));
                return;
            }
        };
        let _ = done.send(result);
    }
}

async fn reset_all(registry: &Registry) {
    let connections: Vec<Connection> = lock(registry).drain().map(|(_, c)| c).collect();
    let mut tasks = Vec::with_capacity(connections.len());
    for Connection { kill, task } in connections {
        let _ = kill.send(());
        tasks.push(task);
    }
    // Waiting is what makes `reset_all` synchronous for the caller: when it
    // returns, every socket has been closed with an RST.
    for task in tasks {
        let _ = task.await;
    }
}

/// Reopens the listener on the port it had. Another process may have taken
/// the port while it was closed; that is retried briefly, then reported.
async fn rebind(addr: SocketAddr) -> Result<TcpListener, String> {
    let mut last_error = None;
    for _ in 0..50 {
        let attempt = || -> io::Result<TcpListener> {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        };
        match attempt() {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = Some(err),
        }
        sleep(Duration::from_millis(20)).await;
    }
    Err(format!("cannot listen on {addr} again after Refuse: {}", last_error.expect("at least one attempt")))
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    registry: Registry,
    next_id: Arc<AtomicU64>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let client = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                // Typically EMFILE or a connection reset before accept;
                // neither should end the proxy.
                Err(_) => {
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (kill, killed) = oneshot::channel();
        let accepted_mode = *mode.borrow();
        // Held across spawn + insert so the task cannot deregister itself
        // before it is registered (it takes the same lock when it ends).
        let mut connections = lock(&registry);
        let task =
            task::spawn(serve(id, client, target, accepted_mode, mode.clone(), killed, registry.clone()));
        connections.insert(id, Connection { kill, task });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both directions ended with EOF and were shut down in turn.
    Closed,
    /// Killed, failed, or unable to reach the target: close with an RST.
    Reset,
}

async fn serve(
    id: u64,
    mut client: TcpStream,
    target: SocketAddr,
    accepted_mode: ProxyMode,
    mode: watch::Receiver<ProxyMode>,
    mut killed: oneshot::Receiver<()>,
    registry: Registry,
) {
    // Nagle would add its own delays and blur what Delay promises.
    let _ = client.set_nodelay(true);
    let outcome = match accepted_mode {
        // Accepted in the instant between publishing Refuse and closing the
        // listener; a refused connection is what the test asked for.
        ProxyMode::Refuse => Outcome::Reset,
        ProxyMode::Blackhole => tokio::select! {
            _ = &mut killed => Outcome::Reset,
            () = discard(&mut client) => Outcome::Closed,
        },
        ProxyMode::Pass => forward(&mut client, target, Duration::ZERO, mode, &mut killed).await,
        ProxyMode::Delay(delay) => forward(&mut client, target, delay, mode, &mut killed).await,
    };
    if outcome == Outcome::Reset {
        let _ = client.set_zero_linger();
    }
    drop(client);
    lock(&registry).remove(&id);
}

async fn forward(
    client: &mut TcpStream,
    target: SocketAddr,
    delay: Duration,
    mode: watch::Receiver<ProxyMode>,
    killed: &mut oneshot::Receiver<()>,
) -> Outcome {
    let connected = tokio::select! {
        _ = &mut *killed => return Outcome::Reset,
        connected = timeout(CONNECT_TIMEOUT, TcpStream::connect(target)) => connected,
    };
    let Ok(Ok(mut upstream)) = connected else {
        return Outcome::Reset;
    };
    let _ = upstream.set_nodelay(true);
    let outcome = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let both_ways = async {
            tokio::try_join!(
                pump(client_read, upstream_write, delay, mode.clone()),
                pump(upstream_read, client_write, delay, mode),
            )
        };
        tokio::select! {
            _ = &mut *killed => Outcome::Reset,
            result = both_ways => match result {
                Ok(_) => Outcome::Closed,
                // One side reset or failed: pass that on to the other side
                // rather than a polite FIN it would not have seen otherwise.
                Err(_) => Outcome::Reset,
            },
        }
    };
    if outcome == Outcome::Reset {
        let _ = upstream.set_zero_linger();
    }
    outcome
}

/// Copies one direction. Chunks carry the time they may be written, so with
/// a delay a steady stream is shifted by `delay` rather than slowed down.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    delay: Duration,
    mut mode: watch::Receiver<ProxyMode>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut read_mode = mode.clone();
    let reading = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            flowing(&mut read_mode).await;
            let n = from.read(&mut buf).await?;
            // EOF: dropping the sender lets the writer drain and shut down.
            if n == 0 || chunks_tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let writing = async move {
        while let Some((due, chunk)) = chunks_rx.recv().await {
            sleep_until(due).await;
            flowing(&mut mode).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(reading, writing).map(|_| ())
}

/// Returns while the mode lets data through; under Blackhole it waits.
async fn flowing(mode: &mut watch::Receiver<ProxyMode>) {
    // An error means the proxy is shutting down and this task is about to be
    // dropped with its runtime.
    let _ = mode.wait_for(|m| *m != ProxyMode::Blackhole).await;
}

async fn discard(client: &mut TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
