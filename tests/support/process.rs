//! Child-process plumbing shared by the Redis and Kafka servers.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A port that was free a moment ago. Nothing holds it afterwards, so a
/// parallel test may grab it first; callers retry the spawn when the server
/// then fails to bind.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A server child process whose stdout and stderr go to one log file. The
/// same log is appended to across restarts so a failure shows the history.
pub(crate) struct ServerProcess {
    name: &'static str,
    program: PathBuf,
    log_path: PathBuf,
    /// Variables to set (Some) or remove (None) in the child's environment.
    env: Vec<(&'static str, Option<OsString>)>,
    /// Where the current run's output starts in the log, so that an earlier
    /// run's failure is not mistaken for this one's.
    run_starts_at: u64,
    child: Option<Child>,
}

impl ServerProcess {
    pub(crate) fn new(name: &'static str, program: PathBuf) -> ServerProcess {
        let dir = std::env::temp_dir().join("redis-retry-tests");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("create log directory {}: {err}", dir.display()));
        let log_path = dir.join(format!("{}.log", super::unique(name)));
        ServerProcess { name, program, log_path, env: Vec::new(), run_starts_at: 0, child: None }
    }

    pub(crate) fn env(&mut self, name: &'static str, value: Option<OsString>) {
        self.env.push((name, value));
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn spawn(&mut self, args: &[OsString]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|err| panic!("open log {}: {err}", self.log_path.display()));
        let _ = writeln!(
            log,
            "=== spawning {} {:?}",
            self.program.display(),
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>()
        );
        self.run_starts_at = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().expect("clone log file handle");
        let mut command = Command::new(&self.program);
        command.args(args).stdin(Stdio::null()).stdout(log).stderr(stderr);
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        kill_with_parent(&mut command);
        let child = spawn_from_long_lived_thread(command).unwrap_or_else(|err| {
            panic!("failed to spawn {} ({}): {err}", self.name, self.program.display())
        });
        self.child = Some(child);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some` once the child has died by itself (it is then reaped).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, not a graceful shutdown: tests want the abrupt loss a crash or
    /// a partition causes, and it is immediate. Waiting reaps the child, after
    /// which the kernel has closed its listening socket.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `ready` until it holds. Err (with the reason) if the process died
    /// or `timeout` passed; the caller decides whether to retry or panic.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("{} exited during startup with {status}", self.name));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} not ready after {timeout:?}", self.name));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `max_bytes` of the log, for panic messages.
    pub(crate) fn log_tail(&self, max_bytes: u64) -> String {
        self.read_log(|len| len.saturating_sub(max_bytes))
    }

    fn read_log(&self, start: impl FnOnce(u64) -> u64) -> String {
        let read = || -> io::Result<String> {
            let mut file = File::open(&self.log_path)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(start(len)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        read().unwrap_or_else(|err| format!("<cannot read {}: {err}>", self.log_path.display()))
    }

    /// Whether the log shows a failed bind, i.e. another test took the port
    /// between `free_port` and the spawn.
    pub(crate) fn lost_port_race(&self) -> bool {
        let run_start = self.run_starts_at;
        let tail = self.read_log(|len| run_start.max(len.saturating_sub(4096))).to_ascii_lowercase();
        tail.contains("address already in use") || tail.contains("addrinuse")
    }

    pub(crate) fn startup_failure(&self, reason: &str) -> String {
        format!(
            "{reason}\n--- {} (tail) ---\n{}\n--- end of log ---",
            self.log_path.display(),
            self.log_tail(8192)
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            // A failing test is when the log matters, so keep it and say where.
            eprintln!("{} log kept at {}", self.name, self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// PR_SET_PDEATHSIG as a backstop for a test process that dies without
/// running destructors (SIGKILL from a timeout, abort): its servers must not
/// outlive it and keep ports or memory.
fn kill_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and the closure allocates nothing,
        // which is what may run between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The death signal fires when the *thread* that forked exits, not the
/// process. Tests may start servers from short-lived threads (spawn_blocking
/// workers are reaped after 10 s idle, a runtime's workers die with it), so
/// every spawn goes through one thread that lives as long as the process.
fn spawn_from_long_lived_thread(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("test-server-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .expect("spawner thread is gone");
    reply_rx.recv().expect("spawner thread is gone")
}

/// A plain TCP connect, for "is anything listening" checks that must not
/// depend on a protocol client's own retry logic.
pub(crate) fn accepts_tcp(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// First match of `name` as an executable file in PATH, then in the given
/// fallback directories.
pub(crate) fn find_executable(name: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs.iter().chain(fallbacks).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    path.is_file()
}
