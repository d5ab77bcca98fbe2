//! Local API proxies (`[[proxy]]`): a program talks plain HTTP to a loopback
//! address or a Unix socket, and the daemon adds a fresh token of a profile
//! and forwards the request to the API, streaming both bodies.
//!
//! Only the daemon's own user is served: on a Unix socket the peer's uid
//! comes from SO_PEERCRED, on TCP from the kernel's socket table over
//! sock_diag ([`peer`]); anyone else, or a peer whose owner cannot be found,
//! gets 403.
//! Requests are answered by hyper; upstream calls go through hyper-util's
//! pooled client with the profile's roots and the daemon's proxy rules
//! ([`forward`], [`crate::daemon::oauth::ApiClient`]).
//!
//! A reload keeps each proxy whose address is unchanged (its settings swap
//! in place, connections stay), stops the ones gone and starts the new
//! ones; a new address that cannot be bound leaves everything unchanged.

mod forward;
mod peer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::daemon::config::{ProxyConfig, ProxyListen};
use crate::daemon::engine::Engine;
use crate::protocol::ProxyStatus;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn body_error<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

/// Connections one proxy serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// The kernel's queue of connections not yet accepted.
const BACKLOG: u32 = 1024;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a peer that is only told 403.
const REFUSED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;
/// Refused peers are logged at most once per this interval per proxy.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counters shown by `ce-auth status`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    refused: AtomicU64,
    turned_away: AtomicU64,
    errors: AtomicU64,
    refreshes: AtomicU64,
    connections: AtomicU64,
}

/// What each connection of one proxy shares.
struct ProxyState {
    config: RwLock<Arc<ProxyConfig>>,
    engine: Arc<Engine>,
    counters: Counters,
    /// The address actually bound (the port when 0 was asked for).
    bound: String,
    last_refusal_log: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl ProxyState {
    fn config(&self) -> Arc<ProxyConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn http(&self, config: &ProxyConfig) -> Result<crate::daemon::oauth::ApiClient, String> {
        self.engine
            .api_client(&config.profile)
            .map_err(|e| format!("profile \"{}\": {}", config.profile, e.message))
    }

    /// Counts a refused peer and logs it, at most once per interval.
    fn refused(&self, who: &str, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.log_refusal(who, why);
    }

    /// Counts a connection closed at capacity and logs it like a refusal.
    fn turned_away(&self, who: &str) {
        self.counters.turned_away.fetch_add(1, Ordering::Relaxed);
        self.log_refusal(
            who,
            &format!("{MAX_CONNECTIONS} connections are open, the most one proxy serves"),
        );
    }

    /// Logs a peer turned away, at most once per interval.
    fn log_refusal(&self, who: &str, why: &str) {
        let mut last = self
            .last_refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let more = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            proxy = %self.bound,
            "proxy: refused {who}: {why}{}",
            if more > 0 {
                format!(" ({more} more refusals not logged)")
            } else {
                String::new()
            }
        );
    }
}

/// Proxies ready to start: the new configuration and the listeners bound
/// for its new addresses.
pub struct Prepared {
    configs: Vec<ProxyConfig>,
    fresh: Vec<(ProxyConfig, Bound)>,
}

/// A listener bound for a proxy, not yet serving.
enum Bound {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

struct Running {
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
    #[cfg(unix)]
    socket: Option<std::path::PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        #[cfg(unix)]
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The running proxies, by address.
#[derive(Default)]
pub struct Proxies {
    running: Mutex<BTreeMap<String, Running>>,
}

impl Proxies {
    /// No proxies.
    pub fn new() -> Proxies {
        Proxies::default()
    }

    /// Binds the addresses of `configs` that no running proxy has, changing
    /// nothing yet; fails when one cannot be bound. Must run inside the
    /// daemon's tokio runtime.
    pub fn prepare(&self, configs: &[ProxyConfig]) -> Result<Prepared, String> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vec::new();
        for c in configs {
            if !running.contains_key(&c.listen.to_string()) {
                let bound = bind(&c.listen)
                    .map_err(|e| format!("[[proxy]] {}: cannot listen: {e}", c.listen))?;
                fresh.push((c.clone(), bound));
            }
        }
        Ok(Prepared {
            configs: configs.to_vec(),
            fresh,
        })
    }

    /// Makes the running proxies those prepared: stops the ones gone, swaps
    /// the settings of the ones kept, starts the new ones.
    pub fn commit(&self, engine: &Arc<Engine>, prepared: Prepared) {
        let Prepared { configs, fresh } = prepared;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, r| {
            let keep = configs.iter().any(|c| &c.listen.to_string() == key);
            if !keep {
                tracing::info!(proxy = %r.state.bound, "proxy stopped");
            }
            keep
        });
        for c in &configs {
            if let Some(r) = running.get(&c.listen.to_string()) {
                *r.state.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c.clone());
            }
        }
        for (config, bound) in fresh {
            let key = config.listen.to_string();
            running.insert(key, start(Arc::clone(engine), config, bound));
        }
    }

    /// [`Proxies::prepare`] then [`Proxies::commit`].
    pub fn apply(&self, engine: &Arc<Engine>, configs: &[ProxyConfig]) -> Result<(), String> {
        let p = self.prepare(configs)?;
        self.commit(engine, p);
        Ok(())
    }

    /// Each proxy's address and counters.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .values()
            .map(|r| {
                let c = r.state.config();
                let n = &r.state.counters;
                ProxyStatus {
                    listen: r.state.bound.clone(),
                    url: match &c.listen {
                        ProxyListen::Tcp(_) => Some(format!("http://{}", r.state.bound)),
                        ProxyListen::Unix(_) => None,
                    },
                    upstream: c.upstream.to_string(),
                    profile: c.profile.clone(),
                    requests: n.requests.load(Ordering::Relaxed),
                    refused: n.refused.load(Ordering::Relaxed),
                    turned_away: n.turned_away.load(Ordering::Relaxed),
                    errors: n.errors.load(Ordering::Relaxed),
                    refreshes: n.refreshes.load(Ordering::Relaxed),
                    connections: n.connections.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Stops every proxy.
    pub fn stop(&self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn bind(listen: &ProxyListen) -> std::io::Result<Bound> {
    match listen {
        ProxyListen::Tcp(addr) => {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(*addr)?;
            Ok(Bound::Tcp(socket.listen(BACKLOG)?))
        }
        #[cfg(unix)]
        ProxyListen::Unix(path) => {
            use std::os::unix::fs::PermissionsExt;
            // a stale socket of ours may be replaced; anything else is left alone
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let ours =
                    meta.file_type().is_socket() && meta.uid() == crate::paths::current_uid();
                let live = std::os::unix::net::UnixStream::connect(path).is_ok();
                if !ours || live {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!(
                            "{} exists and is not a stale socket of yours",
                            path.display()
                        ),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            Ok(Bound::Unix(
                tokio::net::UnixListener::from_std(l)?,
                path.clone(),
            ))
        }
        #[cfg(not(unix))]
        ProxyListen::Unix(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "unix: proxy sockets need a Unix system",
        )),
    }
}

fn start(engine: Arc<Engine>, config: ProxyConfig, bound: Bound) -> Running {
    let addr = match &bound {
        Bound::Tcp(l) => l
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| config.listen.to_string()),
        #[cfg(unix)]
        Bound::Unix(_, p) => format!("unix:{}", p.display()),
    };
    tracing::info!(
        proxy = %addr,
        upstream = %config.upstream,
        profile = %config.profile,
        "proxy listening"
    );
    if engine.status(Some(&config.profile)).is_err() {
        tracing::warn!(
            proxy = %addr,
            "proxy: profile \"{}\" is not configured; its requests get 502 until it is",
            config.profile
        );
    }
    let state = Arc::new(ProxyState {
        config: RwLock::new(Arc::new(config)),
        engine,
        counters: Counters::default(),
        bound: addr,
        last_refusal_log: Mutex::new(None),
        suppressed: AtomicU64::new(0),
    });
    #[cfg(unix)]
    let socket = match &bound {
        Bound::Unix(_, p) => Some(p.clone()),
        Bound::Tcp(_) => None,
    };
    let task = tokio::spawn(accept_loop(Arc::clone(&state), bound));
    Running {
        state,
        task,
        #[cfg(unix)]
        socket,
    }
}

async fn accept_loop(state: Arc<ProxyState>, bound: Bound) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let state = Arc::clone(&state);
        match &bound {
            Bound::Tcp(l) => match l.accept().await {
                Ok((stream, peer)) => {
                    // at capacity a new connection is closed at once, so a
                    // flood never fills the kernel's queue for good
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        state.turned_away(&peer.to_string());
                        continue;
                    };
                    // two syscalls that never wait (sock_diag), so inline
                    let who = match stream.local_addr() {
                        Ok(local) => peer::tcp_peer_uid(peer, local),
                        Err(e) => Err(format!("the connection has no local address: {e}")),
                    };
                    tokio::spawn(async move {
                        let _permit = permit;
                        serve(state, TokioIo::new(stream), &peer.to_string(), who).await;
                    });
                }
                Err(e) => accept_failed(&state, e).await,
            },
            #[cfg(unix)]
            Bound::Unix(l, _) => match l.accept().await {
                Ok((stream, _)) => {
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        state.turned_away("a Unix socket peer");
                        continue;
                    };
                    tokio::spawn(async move {
                        let _permit = permit;
                        let who = peer::unix_peer_uid(&stream);
                        serve(state, TokioIo::new(stream), "a Unix socket peer", who).await;
                    });
                }
                Err(e) => accept_failed(&state, e).await,
            },
        }
    }
}

/// Out of descriptors and the like: wait a little instead of spinning.
async fn accept_failed(state: &ProxyState, e: std::io::Error) {
    tracing::warn!(proxy = %state.bound, "proxy: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection: forwarded requests for the daemon's own user,
/// 403 for everything a refused peer sends.
async fn serve<IO>(state: Arc<ProxyState>, io: TokioIo<IO>, who: &str, uid: Result<u32, String>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let own = crate::paths::current_uid();
    let refusal = match uid {
        Ok(u) if u == own => None,
        Ok(u) => Some(format!(
            "uid {u} may not use this proxy: it adds uid {own}'s token and serves that user only"
        )),
        Err(e) => Some(format!(
            "the connection's owner could not be determined ({e})"
        )),
    };
    if let Some(why) = &refusal {
        state.refused(who, why);
    }
    let refused = refusal.is_some();
    state.counters.connections.fetch_add(1, Ordering::Relaxed);
    let svc_state = Arc::clone(&state);
    let refusal: Option<Arc<str>> = refusal.map(Into::into);
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&svc_state);
        let refusal = refusal.clone();
        async move {
            Ok::<_, std::convert::Infallible>(match refusal {
                Some(why) => {
                    drop(req);
                    let mut r = forward::answer(hyper::StatusCode::FORBIDDEN, &why);
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    r
                }
                None => forward::handle(state, req).await,
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(if refused {
            REFUSED_HEADER_TIMEOUT
        } else {
            HEADER_TIMEOUT
        })
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!(proxy = %state.bound, "proxy connection ended: {e}");
    }
    state.counters.connections.fetch_sub(1, Ordering::Relaxed);
}
