//! The local API proxy's benchmark: a plain upstream to proxy to, and an
//! HTTP/1.1 keep-alive load generator that drives either the upstream
//! directly or the proxy in front of it, with the same requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Serves `GET /small` (a 300-byte JSON body; `?ms=N` answers after N ms,
/// as a real API would) and `GET /bytes/N` (N zero bytes, streamed) on
/// 127.0.0.1 until killed; prints `{"url": ...}` first.
/// It checks no token: the figures are the proxy's own cost.
pub fn upstream() -> anyhow::Result<()> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "{}",
            serde_json::json!({"url": format!("http://{}", listener.local_addr()?)})
        );
        std::io::stdout().flush()?;
        let small = Bytes::from(format!("{{\"data\":\"{}\"}}", "x".repeat(288)));
        loop {
            let (stream, _) = listener.accept().await?;
            let small = small.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let small = small.clone();
                        async move {
                            type B = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
                            let path = req.uri().path().to_string();
                            let delay = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("ms="))
                                .and_then(|ms| ms.parse::<u64>().ok());
                            if let Some(ms) = delay {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let resp: hyper::Response<B> = if let Some(n) =
                                path.strip_prefix("/bytes/")
                            {
                                let n: u64 = n.parse().unwrap_or(0);
                                let chunk = Bytes::from(vec![0u8; 64 * 1024]);
                                let s = futures_util::stream::unfold(n, move |left| {
                                    let chunk = chunk.clone();
                                    async move {
                                        (left > 0).then(|| {
                                            let take = left.min(chunk.len() as u64);
                                            (
                                                Ok(Frame::data(chunk.slice(..take as usize))),
                                                left - take,
                                            )
                                        })
                                    }
                                });
                                hyper::Response::builder()
                                    .header("content-length", n)
                                    .body(BodyExt::boxed(StreamBody::new(s)))
                                    .unwrap()
                            } else {
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(BodyExt::boxed(Full::new(small).map_err(|e| match e {})))
                                    .unwrap()
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// A bare HTTP/1.1 forwarder to `upstream`: hyper's server and hyper-util's
/// pooled client on one current-thread runtime (as the daemon's proxy runs),
/// bodies streamed, no token and no checks. It is the proxy's ceiling: what
/// any forwarder pays on this machine for the second pair of connections.
pub fn relay(upstream: &str) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let base: hyper::Uri = upstream.parse().context("the upstream URL")?;
    let authority = base.authority().context("an upstream host")?.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client: Client<_, hyper::body::Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "{}",
            serde_json::json!({"url": format!("http://{}", listener.local_addr()?)})
        );
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let (client, authority) = (client.clone(), authority.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let (client, authority) = (client.clone(), authority.clone());
                        async move {
                            let pq = req.uri().path_and_query().cloned();
                            let mut uri = hyper::http::uri::Parts::default();
                            uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
                            uri.authority = Some(authority);
                            uri.path_and_query = pq;
                            *req.uri_mut() = hyper::Uri::from_parts(uri)?;
                            req.headers_mut().remove(hyper::header::HOST);
                            let resp = client.request(req).await?;
                            anyhow::Ok(resp.map(|b| b.boxed()))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// Keep-alive GETs of `url` on `conns` connections (a thread each) for
/// `duration` after `warmup`; prints requests/s and latency percentiles.
pub fn load(
    url: &str,
    conns: usize,
    warmup: f64,
    duration: f64,
    label: &str,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let cpu0 = pid.map(crate::harness::proc_cpu).transpose()?;
    let u = url::Url::parse(url).context("the URL")?;
    let addr = format!(
        "{}:{}",
        u.host_str().context("a host")?,
        u.port_or_known_default().unwrap_or(80)
    );
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ce-auth-bench\r\n\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_secs_f64(warmup);
    let end = start + Duration::from_secs_f64(duration);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, request, stop) = (addr.clone(), request.clone(), Arc::clone(&stop));
            std::thread::spawn(move || -> anyhow::Result<(Vec<u64>, u64)> {
                let stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                let mut w = stream.try_clone()?;
                let mut r = BufReader::with_capacity(256 * 1024, stream);
                let mut lat = Vec::new();
                let mut bytes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    w.write_all(request.as_bytes())?;
                    let n = read_response(&mut r)?;
                    let t1 = Instant::now();
                    if t0 >= start {
                        lat.push((t1 - t0).as_nanos() as u64);
                        bytes += n;
                    }
                }
                Ok((lat, bytes))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in threads {
        let (lat, b) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        all.extend(lat);
        bytes += b;
    }
    stop.store(true, Ordering::Relaxed);
    // the process's CPU over warm-up and window, per request of the window
    // (the same load runs throughout)
    let cpu_us_per_req = match (pid, cpu0) {
        (Some(p), Some(c0)) if !all.is_empty() => {
            let cpu = crate::harness::proc_cpu(p)?
                .saturating_sub(c0)
                .as_secs_f64();
            Some(cpu * 1e6 * duration / (warmup + duration) / all.len() as f64)
        }
        _ => None,
    };
    all.sort_unstable();
    let pct = |q: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((q * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "kind": "http", "label": label, "conns": conns,
            "requests": all.len(), "rps": all.len() as f64 / duration,
            "mib_per_s": bytes as f64 / duration / 1048576.0,
            "p50_us": pct(0.50), "p99_us": pct(0.99), "max_us": pct(1.0),
            "cpu_us_per_req": cpu_us_per_req,
        })
    );
    Ok(())
}

/// Reads one response (status 200 with a `Content-Length` body) and returns
/// its body's length.
fn read_response(r: &mut BufReader<TcpStream>) -> anyhow::Result<u64> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&head)?;
    if resp.code != Some(200) {
        bail!("status {:?}", resp.code);
    }
    let len: u64 = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .context("a Content-Length")?;
    let copied = std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink())?;
    if copied != len {
        bail!("a short body: {copied} of {len} bytes");
    }
    Ok(len)
}
