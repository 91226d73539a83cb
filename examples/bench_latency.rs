//! Benchmark of what an outage costs the caller: the latency of an annotated write while Redis
//! refuses connections, and while it blackholes them (accepts, then never answers), through
//! the production connection (`RetryConnection::builder(..).connect()`, default deadline, 500 ms) beside raw
//! redis-rs with its default `ConnectionManager` (`client.get_connection_manager()`), measured
//! in the same run through the same proxy.
//!
//! ```sh
//! cargo run --release --example bench_latency                  # about two minutes
//! cargo run --release --example bench_latency -- --window 2 --deadline 200ms --workers 4   # smoke
//! ```
//!
//! Options: `--deadline D` (default 500ms), `--window S` seconds each phase keeps workers calling
//! (default 20), `--workers N` concurrent callers a phase (default 16), `--runs N` (default 1;
//! with more, each figure is the median with its range).
//!
//! Each phase: a proxy in front of Redis lets traffic through while both connections warm up,
//! then either refuses every connection (and cuts the open ones) or blackholes them; `workers`
//! tasks then call `save_token` (a `SET .. EX` in a `#[redis_retry]` method) back to back for
//! `window` seconds. A raw call still waiting when the window closes is waited for, up to 60 s,
//! and counted at what it took; one that takes longer is counted as 60 s. Captured writes go to
//! the demo broker (or `KAFKA_BROKERS`).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use redis_retry::{redis_retry, ProducerConfig, RetryConnection, RetryProducer};
use support::Demo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: bench_latency [--deadline D] [--window SECS] [--workers N] [--runs N]";
/// A raw call that outlives this is counted at it: the figure is a floor, and the run ends.
const RAW_CAP: Duration = Duration::from_secs(60);

struct Options {
    deadline: Duration,
    window: Duration,
    workers: usize,
    runs: usize,
}

fn options() -> Result<Options, BoxError> {
    let mut o = Options {
        deadline: redis_retry::DEFAULT_DEADLINE,
        window: Duration::from_secs(20),
        workers: 16,
        runs: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--deadline" => o.deadline = duration(&value()?)?,
            "--window" => o.window = Duration::from_secs(value()?.parse()?),
            "--workers" => o.workers = value()?.parse()?,
            "--runs" => o.runs = value()?.parse()?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}").into()),
        }
    }
    if o.deadline.is_zero() || o.window.is_zero() || o.workers == 0 || o.runs == 0 {
        return Err(format!("every option must be above zero\n{USAGE}").into());
    }
    Ok(o)
}

/// `250ms` or `1s`.
fn duration(text: &str) -> Result<Duration, BoxError> {
    match (text.strip_suffix("ms"), text.strip_suffix('s')) {
        (Some(ms), _) => Ok(Duration::from_millis(ms.parse()?)),
        (None, Some(s)) => Ok(Duration::from_secs_f64(s.parse()?)),
        _ => Err(format!("{text}: a duration such as 250ms or 1s\n{USAGE}").into()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Let traffic through.
    None,
    /// Refuse new connections and cut the open ones.
    Refuse,
    /// Accept connections and swallow everything, answering nothing.
    Blackhole,
}

/// A proxy in front of Redis that can refuse or blackhole.
struct Proxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, state) = watch::channel(Fault::None);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut state = state.clone();
                let now = *state.borrow_and_update();
                tokio::spawn(async move {
                    match now {
                        // Dropped at once: the client sees its connection closed.
                        Fault::Refuse => drop(client),
                        Fault::Blackhole => swallow(client).await,
                        Fault::None => relay(client, target, &mut state).await,
                    }
                });
            }
        });
        Ok(Proxy { addr, fault, task })
    }

    fn set(&self, fault: Fault) {
        let _ = self.fault.send(fault);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays until a fault: refuse closes the connection, blackhole keeps it open and silent.
async fn relay(mut client: TcpStream, target: SocketAddr, state: &mut watch::Receiver<Fault>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let fault = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        f = state.wait_for(|f| *f != Fault::None) => f.map(|f| *f).unwrap_or(Fault::Refuse),
    };
    drop(server);
    if fault == Fault::Blackhole {
        swallow(client).await;
    }
}

/// Reads and discards whatever the client sends, never answering, until it hangs up.
async fn swallow(mut client: TcpStream) {
    let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
}

#[redis_retry(source = "DeviceRepository.SaveToken")]
async fn save_token<C>(redis: &mut C, device: &str) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    redis.set_ex(format!("bench:latency:{device}"), "0123456789abcdef", 600).await
}

/// Calls `save_token` from `workers` tasks back to back for `window`; the latency of each call.
async fn phase<C>(conn: C, workers: usize, window: Duration) -> Vec<Duration>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let samples = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + window;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (mut conn, samples) = (conn.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                let started = Instant::now();
                let took =
                    match tokio::time::timeout(RAW_CAP, save_token(&mut conn, &format!("{w}-{i}"))).await {
                        Ok(_) => started.elapsed(),
                        Err(_) => RAW_CAP,
                    };
                samples.lock().unwrap().push(took);
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort();
    samples
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row: name, then p50, p99 and max in milliseconds, and the count.
type Row = (String, [f64; 3], usize);

async fn run_once(demo: &Demo, opts: &Options, producer: &RetryProducer) -> Result<Vec<Row>, BoxError> {
    let target: SocketAddr = {
        let info = redis::Client::open(demo.redis_url.as_str())?.get_connection_info().clone();
        match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .next()
                .ok_or("Redis host does not resolve")?,
            _ => return Err("a plain redis:// URL is needed".into()),
        }
    };
    let mut rows = Vec::new();
    for fault in [Fault::Refuse, Fault::Blackhole] {
        let proxy = Proxy::start(target).await?;
        let url = format!("redis://{}/", proxy.addr);
        let ours = RetryConnection::builder(url.as_str())
            .deadline(opts.deadline)
            .producer(producer.clone())
            .connect()
            .await?;
        let raw: ConnectionManager = redis::Client::open(url.as_str())?.get_connection_manager().await?;
        // Both connections are up and have written once before the fault.
        save_token(&mut ours.clone(), "warm").await?;
        save_token(&mut raw.clone(), "warm").await?;
        proxy.set(fault);
        let name = match fault {
            Fault::Refuse => "refused",
            Fault::Blackhole => "blackholed",
            Fault::None => unreachable!(),
        };
        for (who, samples) in [
            ("redis-retry (deadline)", phase(ours, opts.workers, opts.window).await),
            ("raw redis-rs (default ConnectionManager)", phase(raw, opts.workers, opts.window).await),
        ] {
            let figures =
                [ms(quantile(&samples, 0.5)), ms(quantile(&samples, 0.99)), ms(quantile(&samples, 1.0))];
            rows.push((format!("{name}: {who}"), figures, samples.len()));
        }
    }
    Ok(rows)
}

fn median_and_range(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    if values.len() == 1 {
        format!("{median:.1}")
    } else {
        format!("{median:.1} ({:.1}–{:.1})", values[0], values[values.len() - 1])
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let opts = options()?;
    let demo = Demo::start().await.map_err(|e| e.to_string())?;
    let topic = demo.topic("bench-latency");
    let config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&config.topics()).await.map_err(|e| e.to_string())?;
    let producer = RetryProducer::new(&config)?;
    println!(
        "outage latency: deadline {:?}, {} workers, {} s a phase, {} run(s); {}",
        opts.deadline,
        opts.workers,
        opts.window.as_secs(),
        opts.runs,
        demo.broker_label()
    );
    let mut runs = Vec::new();
    for _ in 0..opts.runs {
        runs.push(run_once(&demo, &opts, &producer).await?);
    }
    println!();
    println!("| outage: caller | p50 ms | p99 ms | max ms | calls |");
    println!("|---|---|---|---|---|");
    for (i, (name, _, _)) in runs[0].iter().enumerate() {
        let column = |k: usize| median_and_range(&mut runs.iter().map(|r| r[i].1[k]).collect::<Vec<_>>());
        let calls: usize = runs.iter().map(|r| r[i].2).sum::<usize>() / runs.len();
        println!("| {name} | {} | {} | {} | {calls} |", column(0), column(1), column(2));
    }
    let blackholed_p99 = runs.iter().map(|r| r[2].1[1]).fold(0.0, f64::max);
    println!();
    println!(
        "blackholed p99 through the deadline: {blackholed_p99:.1} ms (worst run) against a bound of {:.1} ms (deadline + 5 ms)",
        ms(opts.deadline) + 5.0
    );
    producer.flush(Duration::from_secs(10)).ok();
    Ok(())
}
