use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use super::process::{free_port, loopback, ServerProcess};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;

/// A redis-server child process on a free 127.0.0.1 port; no persistence
/// (`--save "" --appendonly no`).
pub struct RedisServer {
    port: u16,
    process: ServerProcess,
}

impl RedisServer {
    /// Starts and waits until it serves commands.
    pub fn start() -> RedisServer {
        let program = PathBuf::from(REDIS_SERVER);
        assert!(
            program.is_file(),
            "{REDIS_SERVER} not found; install it with `apt-get install -y redis-server`"
        );
        let mut process = ServerProcess::new("redis-server", program);
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            process.spawn(&args(port));
            let pid = process.pid();
            match process.wait_ready(STARTUP_TIMEOUT, || is_server(loopback(port), pid)) {
                Ok(()) => return RedisServer { port, process },
                Err(_) if attempt < PORT_ATTEMPTS && process.lost_port_race() => {
                    process.kill();
                }
                Err(reason) => {
                    let message = process.startup_failure(&reason);
                    process.kill();
                    panic!("{message}");
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis URL")
    }

    /// A fresh connection with the crate's default timeouts.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|err| panic!("connect to redis at {}: {err}", self.url()))
    }

    /// Kills the server (SIGKILL) and reaps it. The port number is kept for
    /// `restart`, but nothing holds it meanwhile.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts again on the same port, empty since nothing was persisted.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let mut last_failure = String::new();
        // The port cannot change now, so a bind failure (something grabbed
        // the port while it was free) is retried for a while rather than
        // moving elsewhere.
        for _ in 0..PORT_ATTEMPTS * 10 {
            self.process.spawn(&args(self.port));
            let pid = self.process.pid();
            match self.process.wait_ready(STARTUP_TIMEOUT, || is_server(loopback(port), pid)) {
                Ok(()) => return,
                Err(reason) => {
                    let lost_race = self.process.lost_port_race();
                    last_failure = self.process.startup_failure(&reason);
                    self.process.kill();
                    if !lost_race {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("restarting redis-server on port {}: {last_failure}", self.port);
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.process.log_path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` on `port` of 127.0.0.1 that keeps nothing on disk; the cluster harness adds
/// its own options to these.
pub(super) fn args(port: u16) -> Vec<OsString> {
    let dir = std::env::temp_dir();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        // Without a --dir the server would chdir nowhere special and could
        // drop files in the test's working directory (the crate root).
        "--dir",
        &dir.to_string_lossy(),
        "--logfile",
        "",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Whether `addr` serves commands and is our child rather than another
/// test's server that won a race for the port while ours failed to bind.
/// Raw RESP keeps readiness independent of the redis crate's connection setup
/// (HELLO, CLIENT SETINFO) and timeouts.
fn is_server(addr: SocketAddr, pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"INFO server\r\n")?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        // A LOADING error or any other non-bulk reply means "not yet".
        while !reply.ends_with(b"\r\n\r\n") && reply.first() != Some(&b'-') {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        let expected = format!("process_id:{pid}\r\n");
        Ok(String::from_utf8_lossy(&reply).contains(&expected))
    };
    attempt().unwrap_or(false)
}
