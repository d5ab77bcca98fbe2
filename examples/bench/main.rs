//! `bench`: the load generator and measuring tools behind `scripts/bench.sh`.
//!
//! Each subcommand prints one JSON object on stdout; the script turns them
//! into `target/bench/results.md`. See docs/BENCHMARKS.md for the method.
//!
//! ```sh
//! cargo run --release --example bench -- load --socket $CE_AUTH_SOCK --conns 64
//! cargo run --release --example bench -- echo --like $CE_AUTH_SOCK --conns 64
//! ```

mod harness;
mod http;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use harness::{EchoServer, Load, Outcome};

#[derive(Parser)]
#[command(name = "bench", about = "ce-auth benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Connections, each with one request in flight
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Generator threads (each runs its own epoll loop)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds before measuring
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// A new connection for every request
    #[arg(long)]
    new_conn: bool,
    /// Profile to ask for (default: the daemon's default profile)
    #[arg(long)]
    profile: Option<String>,
    /// min_ttl sent with each request; with --check-fresh, replies are checked against it
    #[arg(long)]
    min_ttl: Option<u64>,
    /// Count replies whose token has less than min_ttl left
    #[arg(long)]
    check_fresh: bool,
    /// A daemon pid whose CPU use over the window is reported
    #[arg(long)]
    pid: Option<u32>,
    /// Label in the JSON output
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive the daemon's socket with `token` requests
    Load {
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        args: LoadArgs,
    },
    /// Drive the built-in echo server (answering with a copy of the daemon's reply)
    Echo {
        /// The daemon socket whose `token` reply the echo server copies
        #[arg(long)]
        like: PathBuf,
        /// Echo server threads
        #[arg(long, default_value_t = 1)]
        server_threads: usize,
        #[command(flatten)]
        args: LoadArgs,
    },
    /// Open connections, one `token` request each, then report the daemon's RSS
    Hold {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Resident memory of a process, in KiB
    Rss {
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// A plain HTTP upstream for the proxy benchmark (runs until killed)
    Upstream,
    /// A bare HTTP forwarder to an upstream: the proxy's ceiling (runs until killed)
    Relay {
        #[arg(long)]
        upstream: String,
    },
    /// Keep-alive HTTP GETs of one URL: requests/s and latency
    Http {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value = "")]
        label: String,
        /// A process whose CPU time per request is reported (the proxy)
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Median wall time of whole processes, run interleaved round-robin
    Spawn {
        /// Runs per command
        #[arg(long, default_value_t = 300)]
        runs: usize,
        /// Unmeasured runs per command first
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// `label=program arg... [<stdin-file]` (split on spaces); the first is the reference
        #[arg(long = "cmd", required = true)]
        cmds: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Load { socket, args } => {
            let load = load_of(&socket, &args);
            let cpu0 = args.pid.map(harness::proc_cpu).transpose()?;
            let mut o = harness::run(&load)?;
            let daemon_cpu = match (args.pid, cpu0) {
                (Some(p), Some(c0)) => Some(harness::proc_cpu(p)?.saturating_sub(c0).as_secs_f64()),
                _ => None,
            };
            // the daemon's CPU is sampled over warmup + window; scale to the window
            let total = load.warmup + load.duration;
            let daemon_cores = daemon_cpu.map(|c| c / total.as_secs_f64());
            print_outcome("load", &args, &mut o, daemon_cores, None);
        }
        Cmd::Echo {
            like,
            server_threads,
            args,
        } => {
            let reply = one_reply(&like, args.profile.as_deref())?;
            let dir = tempfile::tempdir()?;
            let server = EchoServer::start(dir.path().join("echo.sock"), reply, server_threads)?;
            let load = load_of(&server.path, &args);
            let mut o = harness::run(&load)?;
            let server_cpu = server.stop().as_secs_f64();
            let total = load.warmup + load.duration;
            print_outcome(
                "echo",
                &args,
                &mut o,
                None,
                Some(server_cpu / total.as_secs_f64()),
            );
        }
        Cmd::Hold {
            socket,
            conns,
            pid,
            label,
        } => hold(&socket, conns, pid, &label)?,
        Cmd::Rss { pid, label } => {
            println!(
                "{}",
                serde_json::json!({"kind": "rss", "label": label, "rss_kib": harness::rss_kib(pid)?})
            );
        }
        Cmd::Spawn { runs, warmup, cmds } => spawn_cost(runs, warmup, &cmds)?,
        Cmd::Upstream => http::upstream()?,
        Cmd::Relay { upstream } => http::relay(&upstream)?,
        Cmd::Http {
            url,
            conns,
            warmup,
            duration,
            label,
            pid,
        } => http::load(&url, conns, warmup, duration, &label, pid)?,
    }
    Ok(())
}

fn load_of(socket: &std::path::Path, a: &LoadArgs) -> Load {
    let req = serde_json::json!({"op": "token", "profile": a.profile, "min_ttl": a.min_ttl});
    let mut request = serde_json::to_vec(&strip_nulls(req)).expect("json");
    request.push(b'\n');
    Load {
        socket: socket.to_path_buf(),
        conns: a.conns,
        threads: a.threads,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        request,
        new_conn: a.new_conn,
        min_ttl: if a.check_fresh {
            Some(a.min_ttl.unwrap_or(60))
        } else {
            None
        },
    }
}

fn strip_nulls(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    v
}

fn print_outcome(
    kind: &str,
    a: &LoadArgs,
    o: &mut Outcome,
    daemon_cores: Option<f64>,
    server_cores: Option<f64>,
) {
    o.sort();
    let gen_cores = o.cpu.as_secs_f64() / o.window.as_secs_f64().max(1e-9);
    let v = serde_json::json!({
        "kind": kind,
        "label": a.label,
        "conns": a.conns,
        "threads": a.threads,
        "new_conn": a.new_conn,
        "seconds": o.window.as_secs_f64(),
        "requests": o.requests,
        "rps": o.rate().round(),
        "p50_us": round2(o.percentile_us(0.5)),
        "p99_us": round2(o.percentile_us(0.99)),
        "p999_us": round2(o.percentile_us(0.999)),
        "max_us": round2(o.percentile_us(1.0)),
        "errors": o.errors,
        "conn_failures": o.conn_failures,
        "checked": o.checked,
        "stale": o.stale,
        "min_margin_s": o.min_margin.map(round2),
        "gen_cpu_cores": round2(gen_cores),
        "gen_cpu_us_per_req": round2(o.cpu_per_request_us()),
        "daemon_cpu_cores": daemon_cores.map(round2),
        "server_cpu_cores": server_cores.map(round2),
    });
    println!("{v}");
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One `token` reply line from the daemon, `\n` included.
fn one_reply(socket: &std::path::Path, profile: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("{}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = strip_nulls(serde_json::json!({"op": "token", "profile": profile}));
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = Vec::new();
    BufReader::new(s).read_until(b'\n', &mut line)?;
    if !line.starts_with(b"{\"ok\":true,") {
        bail!("the daemon did not serve a token");
    }
    Ok(line)
}

fn hold(socket: &std::path::Path, conns: usize, pid: u32, label: &str) -> anyhow::Result<()> {
    let before = harness::rss_kib(pid)?;
    let mut open = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        (&s).write_all(b"{\"op\":\"token\"}\n")?;
        open.push(BufReader::new(s));
    }
    let mut ok = 0;
    for r in &mut open {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        if line.starts_with(b"{\"ok\":true,") {
            ok += 1;
        }
    }
    // connections are all served and still open
    let during = harness::rss_kib(pid)?;
    drop(open);
    println!(
        "{}",
        serde_json::json!({"kind": "hold", "label": label, "conns": conns, "served": ok,
                           "rss_before_kib": before, "rss_kib": during})
    );
    Ok(())
}

struct Proc {
    label: String,
    program: String,
    args: Vec<String>,
    stdin: Option<PathBuf>,
    times: Vec<Duration>,
    failures: usize,
}

fn spawn_cost(runs: usize, warmup: usize, cmds: &[String]) -> anyhow::Result<()> {
    let mut procs = Vec::new();
    for c in cmds {
        let (label, rest) = c.split_once('=').context("--cmd wants label=command")?;
        let mut words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        let stdin = match words.last() {
            Some(w) if w.starts_with('<') => Some(PathBuf::from(&w[1..])),
            _ => None,
        };
        if stdin.is_some() {
            words.pop();
        }
        if words.is_empty() {
            bail!("empty command for {label}");
        }
        procs.push(Proc {
            label: label.to_string(),
            program: words.remove(0),
            args: words,
            stdin,
            times: Vec::with_capacity(runs),
            failures: 0,
        });
    }
    for round in 0..warmup + runs {
        // interleave, so that drift in machine load hits every command alike
        for p in &mut procs {
            let mut cmd = Command::new(&p.program);
            cmd.args(&p.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match &p.stdin {
                Some(f) => cmd.stdin(std::fs::File::open(f)?),
                None => cmd.stdin(Stdio::null()),
            };
            let t = Instant::now();
            let status = cmd
                .status()
                .with_context(|| format!("cannot run {}", p.program))?;
            let took = t.elapsed();
            if !status.success() {
                p.failures += 1;
            }
            if round >= warmup {
                p.times.push(took);
            }
        }
    }
    let mut rows = Vec::new();
    let mut reference = None;
    for p in &mut procs {
        p.times.sort_unstable();
        let median = p.times[p.times.len() / 2].as_secs_f64() * 1e6;
        let mean =
            p.times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / p.times.len() as f64;
        let reference = *reference.get_or_insert(median);
        rows.push(serde_json::json!({
            "label": p.label, "runs": p.times.len(), "failures": p.failures,
            "median_us": round2(median), "mean_us": round2(mean),
            "p10_us": round2(p.times[p.times.len() / 10].as_secs_f64() * 1e6),
            "p90_us": round2(p.times[p.times.len() * 9 / 10].as_secs_f64() * 1e6),
            "ratio_to_first": round2(median / reference),
        }));
    }
    println!("{}", serde_json::json!({"kind": "spawn", "rows": rows}));
    Ok(())
}
