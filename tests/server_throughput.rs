//! Throughput of the socket server's request path (parse, dispatch, reply,
//! batched flush) over 64 connections with pipelined requests.
//!
//! A measurement, not a pass/fail gate on shared CI machines: run with
//! `cargo test --release --test tests server_throughput -- --ignored --nocapture`.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use ce_auth::daemon::config::DaemonSettings;

use crate::util::daemon::Server;
use crate::util::load::heavy;

#[test]
#[ignore = "a measurement; run explicitly in release mode"]
fn pipelined_hello_throughput_over_64_connections() {
    let _heavy = heavy();
    let d = Server::start(DaemonSettings::default());
    let conns = 64;
    let batch = 64;
    let run_for = Duration::from_secs(3);
    let request = b"{\"op\":\"hello\",\"version\":1}\n".repeat(batch);
    let started = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let mut c = d.client();
            let request = request.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                let mut line = String::new();
                while started.elapsed() < run_for {
                    c.send_raw(&request);
                    for _ in 0..batch {
                        line.clear();
                        c.reader.read_line(&mut line).unwrap();
                        assert!(line.starts_with("{\"ok\":true"), "{line}");
                    }
                    done += batch as u64;
                }
                c.writer.flush().unwrap();
                done
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{total} requests in {secs:.2} s over {conns} connections: {:.0} req/s",
        total as f64 / secs
    );
    assert!(total > 0);
    d.stop().unwrap();
}
