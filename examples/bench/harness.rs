//! The load generator's engine: epoll-driven Unix-socket connections with one
//! request in flight each, exact latency recording, CPU accounting, and a
//! built-in echo server that answers like the daemon (the generator's ceiling).
//!
//! Level-triggered epoll and one `read` per readiness event keep the cost per
//! request at one `read` and one `write` plus a share of an `epoll_wait`, which
//! is less than the daemon itself spends on a request.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to run: `conns` connections on `threads` threads, each with one request in flight.
#[derive(Debug, Clone)]
pub struct Load {
    pub socket: PathBuf,
    pub conns: usize,
    pub threads: usize,
    /// Run this long before measuring (connections set up, caches warm).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// One request line, `\n` included.
    pub request: Vec<u8>,
    /// Open a new connection for every request instead of keeping it.
    pub new_conn: bool,
    /// Count replies whose token has less than this many seconds left at the time
    /// the request was sent (the daemon promises at least `min_ttl` when it answers).
    pub min_ttl: Option<u64>,
}

/// What a run measured (only replies completed inside the window count).
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    /// Replies that were not `{"ok":true,...}`.
    pub errors: u64,
    /// Token replies with less than `min_ttl` left.
    pub stale: u64,
    /// Checked token replies.
    pub checked: u64,
    /// The smallest `expires_at - sent` seen, in seconds.
    pub min_margin: Option<f64>,
    pub window: Duration,
    /// Round-trip times in nanoseconds, unsorted.
    pub latencies_ns: Vec<u32>,
    /// CPU (user + system) the generator threads used inside the window.
    pub cpu: Duration,
    /// Connections that could not be opened or broke.
    pub conn_failures: u64,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.stale += o.stale;
        self.checked += o.checked;
        self.min_margin = match (self.min_margin, o.min_margin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.window = self.window.max(o.window);
        self.latencies_ns.extend(o.latencies_ns);
        self.cpu += o.cpu;
        self.conn_failures += o.conn_failures;
    }

    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Sorts the latencies; call before [`Outcome::percentile_us`].
    pub fn sort(&mut self) {
        self.latencies_ns.sort_unstable();
    }

    /// The `q`-quantile (0..=1) of the sorted latencies, in microseconds.
    pub fn percentile_us(&self, q: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(self.latencies_ns[i]) / 1000.0
    }

    /// Generator CPU per request, in microseconds.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }
}

/// Runs `load` and returns what it measured.
pub fn run(load: &Load) -> io::Result<Outcome> {
    let threads = load.threads.clamp(1, load.conns.max(1));
    let start = Instant::now();
    let from = start + load.warmup;
    let end = from + load.duration;
    let mut handles = Vec::new();
    for t in 0..threads {
        // spread connections evenly over the threads
        let n = load.conns / threads + usize::from(t < load.conns % threads);
        let load = load.clone();
        handles.push(std::thread::spawn(move || worker(&load, n, from, end)));
    }
    let mut total = Outcome::default();
    for h in handles {
        let o = h
            .join()
            .map_err(|_| io::Error::other("a generator thread panicked"))??;
        total.merge(o);
    }
    Ok(total)
}

/// One connection's state.
struct Conn {
    stream: Option<UnixStream>,
    buf: Vec<u8>,
    sent: Instant,
    sent_wall: f64,
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut r) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// A level-triggered epoll instance.
pub struct Epoll(RawFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev lives across the call
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and returns the tokens of ready descriptors in `out`.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most events.len() entries
        let n = unsafe {
            libc::epoll_wait(
                self.0,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor
        unsafe { libc::close(self.0) };
    }
}

fn open(load: &Load, ep: &Epoll, token: u64) -> io::Result<UnixStream> {
    let s = UnixStream::connect(&load.socket)?;
    s.set_nonblocking(true)?;
    ep.add(s.as_raw_fd(), token)?;
    Ok(s)
}

/// Sends the request on `c`; false when the connection is broken.
fn send(load: &Load, c: &mut Conn) -> bool {
    c.sent = Instant::now();
    if load.min_ttl.is_some() {
        c.sent_wall = wall_now();
    }
    match &mut c.stream {
        // a short request on an idle socket goes out whole or not at all
        Some(s) => matches!(s.write(&load.request), Ok(n) if n == load.request.len()),
        None => false,
    }
}

/// The integer after `"expires_at":` in a reply line.
pub fn expires_at(line: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"expires_at\":";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn worker(load: &Load, n: usize, from: Instant, end: Instant) -> io::Result<Outcome> {
    let ep = Epoll::new()?;
    let mut out = Outcome {
        latencies_ns: Vec::with_capacity(1 << 20),
        ..Outcome::default()
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    for i in 0..n {
        let stream = open(load, &ep, i as u64)?;
        conns.push(Conn {
            stream: Some(stream),
            buf: Vec::with_capacity(4096),
            sent: Instant::now(),
            sent_wall: 0.0,
        });
    }
    for c in &mut conns {
        if !send(load, c) {
            return Err(io::Error::other("cannot send the first request"));
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; n.clamp(1, 1024)];
    let mut chunk = vec![0u8; 64 * 1024];
    let mut cpu_from: Option<Duration> = None;
    let mut measuring = false;
    loop {
        let ready = ep.wait(&mut events, 50)?;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= from {
            measuring = true;
            cpu_from = Some(thread_cpu());
        }
        for ev in &events[..ready] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            let Some(s) = &mut c.stream else { continue };
            let got = match s.read(&mut chunk) {
                Ok(0) => None,
                Ok(k) => Some(k),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => None,
            };
            let Some(k) = got else {
                // the daemon closed it: count, reopen, carry on
                out.conn_failures += 1;
                c.stream = None;
                c.buf.clear();
                if let Ok(s) = open(load, &ep, i as u64) {
                    c.stream = Some(s);
                    send(load, c);
                }
                continue;
            };
            c.buf.extend_from_slice(&chunk[..k]);
            let Some(nl) = c.buf.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let done = Instant::now();
            let line = &c.buf[..nl];
            if measuring && c.sent >= from {
                out.requests += 1;
                let rtt = done.duration_since(c.sent).as_nanos();
                out.latencies_ns.push(rtt.min(u128::from(u32::MAX)) as u32);
                if !line.starts_with(b"{\"ok\":true,") {
                    out.errors += 1;
                }
                if let Some(min_ttl) = load.min_ttl
                    && line.starts_with(b"{\"ok\":true,")
                {
                    out.checked += 1;
                    match expires_at(line) {
                        Some(exp) => {
                            let margin = exp as f64 - c.sent_wall;
                            out.min_margin =
                                Some(out.min_margin.map_or(margin, |m: f64| m.min(margin)));
                            if margin < min_ttl as f64 {
                                out.stale += 1;
                            }
                        }
                        None => out.stale += 1,
                    }
                }
            }
            // one request in flight: anything after the line is a protocol error
            c.buf.clear();
            if load.new_conn {
                c.stream = None;
                match open(load, &ep, i as u64) {
                    Ok(s) => c.stream = Some(s),
                    Err(_) => {
                        out.conn_failures += 1;
                        continue;
                    }
                }
            }
            if !send(load, c) {
                out.conn_failures += 1;
            }
        }
    }
    out.cpu = thread_cpu().saturating_sub(cpu_from.unwrap_or_default());
    out.window = end.duration_since(from);
    Ok(out)
}

/// An echo server on a Unix socket: answers every line with a fixed reply
/// (the daemon's own reply, copied), on its own threads, until dropped.
pub struct EchoServer {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Duration>>,
}

impl EchoServer {
    /// Binds `path` and serves on `threads` threads.
    pub fn start(path: PathBuf, reply: Vec<u8>, threads: usize) -> io::Result<EchoServer> {
        let listener = Arc::new(UnixListener::bind(&path)?);
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(reply);
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            let (listener, stop, reply) = (listener.clone(), stop.clone(), reply.clone());
            handles.push(std::thread::spawn(move || {
                let cpu0 = thread_cpu();
                if let Err(e) = echo_loop(&listener, &stop, &reply) {
                    eprintln!("echo server: {e}");
                }
                thread_cpu().saturating_sub(cpu0)
            }));
        }
        Ok(EchoServer {
            path,
            stop,
            threads: handles,
        })
    }

    /// Stops the threads; returns the CPU they used.
    pub fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let cpu = self.threads.into_iter().filter_map(|h| h.join().ok()).sum();
        let _ = std::fs::remove_file(&self.path);
        cpu
    }
}

const LISTENER: u64 = u64::MAX;

fn echo_loop(listener: &UnixListener, stop: &AtomicBool, reply: &[u8]) -> io::Result<()> {
    let ep = Epoll::new()?;
    ep.add(listener.as_raw_fd(), LISTENER)?;
    let mut conns: Vec<Option<(UnixStream, Vec<u8>)>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    while !stop.load(Ordering::Relaxed) {
        let ready = ep.wait(&mut events, 50)?;
        for ev in &events[..ready] {
            if ev.u64 == LISTENER {
                // several threads share the listener; losing the race is fine
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    ep.add(s.as_raw_fd(), slot as u64)?;
                    conns[slot] = Some((s, Vec::new()));
                }
                continue;
            }
            let slot = ev.u64 as usize;
            let Some((s, pending)) = &mut conns[slot] else {
                continue;
            };
            match s.read(&mut chunk) {
                Ok(0) => conns[slot] = None,
                Ok(k) => {
                    pending.extend_from_slice(&chunk[..k]);
                    let lines = pending.iter().filter(|b| **b == b'\n').count();
                    if let Some(last) = pending.iter().rposition(|b| *b == b'\n') {
                        pending.drain(..=last);
                    }
                    out.clear();
                    for _ in 0..lines {
                        out.extend_from_slice(reply);
                    }
                    if !out.is_empty() && s.write_all(&out).is_err() {
                        conns[slot] = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => conns[slot] = None,
            }
        }
    }
    Ok(())
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS line"))
}

/// CPU time (user + system) a process has used so far.
pub fn proc_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name may hold spaces; fields are counted after its `)`
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_at_is_found() {
        let l = br#"{"ok":true,"access_token":"a.b.c","token_type":"bearer","expires_at":1665080017,"profile":"dev"}"#;
        assert_eq!(expires_at(l), Some(1665080017));
        assert_eq!(expires_at(b"{\"ok\":false}"), None);
    }

    #[test]
    fn percentiles_pick_the_right_rank() {
        let mut o = Outcome {
            latencies_ns: (1..=1000).rev().map(|v| v * 1000).collect(),
            ..Outcome::default()
        };
        o.sort();
        assert_eq!(o.percentile_us(0.5), 500.0);
        assert_eq!(o.percentile_us(0.99), 990.0);
        assert_eq!(o.percentile_us(0.999), 999.0);
        assert_eq!(o.percentile_us(1.0), 1000.0);
    }
}
