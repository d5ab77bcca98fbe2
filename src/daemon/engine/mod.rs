//! The token engine: per-profile token cache, single-flight acquisition,
//! proactive refresh, backoff and status.
//!
//! Each profile has one refresher task ([`profile`]), the only code that asks
//! the issuer for its tokens, so however many callers wait, at most one
//! request per profile is in flight. Callers read the cache under a short
//! lock; only when it cannot meet their `min_ttl` do they wake the refresher
//! and wait, for a bounded time. Scheduling maths lives in [`schedule`], time
//! in [`clock`].

pub mod clock;
mod profile;
pub mod schedule;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use self::clock::Clock;
use self::profile::{Entry, WaitError};
use crate::daemon::config::{CLIMATE_ENGINE_TOKEN_URL, Config, Profile};
use crate::daemon::oauth::{self, ErrorClass, HttpClients, Token, TokenError};
use crate::protocol::{
    ErrorCode, LoginReply, ProfileStatus, ReloadReply, TokenReply, WhoamiReply, WireError,
};
use crate::secret::Secret;

/// How long a caller without a usable token waits for one when it names no
/// bound: then it gets a token or `issuer_unavailable`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(crate::protocol::DEFAULT_WAIT);
/// The longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(crate::protocol::MAX_WAIT);

/// The `min_ttl` `whoami` asks for: enough for one API call.
const WHOAMI_MIN_TTL: Duration = Duration::from_secs(30);

/// Most profiles one daemon holds, from the file and `add` together.
///
/// Each profile keeps a secret (a 64-byte slot for a typical client secret)
/// and a token (a 1 KiB slot for a ~700-byte JWT) in locked memory, plus a
/// refresher task. 1,000 profiles need about 1.1 MiB locked (about 280
/// pages), an eighth of the common 8 MiB RLIMIT_MEMLOCK, which leaves room
/// for tokens up to a few KiB and for the copies a refresh holds briefly. It
/// is also far more than any one user's set of API clients.
pub const MAX_PROFILES: usize = 1_000;

/// An engine error with a stable wire code and an actionable message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<EngineError> for WireError {
    fn from(e: EngineError) -> WireError {
        WireError::new(e.code, e.message)
    }
}

/// Where tokens come from: the issuer over HTTP in the daemon; a scripted
/// source in scheduling tests.
pub trait TokenSource: Send + Sync + 'static {
    /// Requests a token for `profile`; `now` is the wall-clock time (Unix seconds).
    fn fetch<'a>(
        &'a self,
        profile: &'a Profile,
        now: f64,
    ) -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;
}

/// The issuer over HTTP ([`oauth::request_token`]).
pub struct HttpSource {
    http: Arc<HttpClients>,
}

impl HttpSource {
    /// A source sharing `http`'s connection pools.
    pub fn new(http: Arc<HttpClients>) -> Self {
        HttpSource { http }
    }
}

impl TokenSource for HttpSource {
    fn fetch<'a>(
        &'a self,
        profile: &'a Profile,
        now: f64,
    ) -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>> {
        Box::pin(oauth::request_token(&self.http, profile, now))
    }
}

/// What refresher tasks share.
struct Ctx {
    source: Arc<dyn TokenSource>,
    clock: Clock,
}

struct Profiles {
    default: Option<String>,
    map: HashMap<String, Arc<Entry>>,
    tasks: HashMap<String, JoinHandle<()>>,
}

/// Holds every profile and its token; cheap to share behind an `Arc`.
pub struct Engine {
    ctx: Arc<Ctx>,
    http: Arc<HttpClients>,
    profiles: RwLock<Profiles>,
    shut: AtomicBool,
    /// Serialises add/remove/reload so their read-compare-write stays whole.
    admin: Mutex<()>,
}

impl Engine {
    /// Builds an engine for a configuration. Call inside a tokio runtime.
    pub fn new(config: Config) -> Arc<Engine> {
        let http = Arc::new(HttpClients::new());
        let source = Arc::new(HttpSource::new(Arc::clone(&http)));
        Engine::build(config, source, Clock::system(), http)
    }

    /// An engine with its own token source and clock (tests, embedding).
    pub fn with_source(config: Config, source: Arc<dyn TokenSource>, clock: Clock) -> Arc<Engine> {
        Engine::build(config, source, clock, Arc::new(HttpClients::new()))
    }

    fn build(
        config: Config,
        source: Arc<dyn TokenSource>,
        clock: Clock,
        http: Arc<HttpClients>,
    ) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            ctx: Arc::new(Ctx { source, clock }),
            http,
            profiles: RwLock::new(Profiles {
                default: None,
                map: HashMap::new(),
                tasks: HashMap::new(),
            }),
            shut: AtomicBool::new(false),
            admin: Mutex::new(()),
        });
        // the daemon checks the cap before it builds an engine (lifecycle);
        // an embedder passing more gets an engine without profiles
        if let Err(e) = engine.reload(config) {
            tracing::error!("{e}");
        }
        engine
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Profiles> {
        self.profiles.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Profiles> {
        self.profiles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds a profile (the default when `None`).
    fn lookup(&self, profile: Option<&str>) -> Result<Arc<Entry>, EngineError> {
        if self.shut.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        let p = self.read();
        let name = match profile.or_else(|| effective_default(&p)) {
            Some(n) => n,
            None => {
                return Err(EngineError {
                    code: ErrorCode::UnknownProfile,
                    message: format!(
                        "no profile named and no default_profile set (needed when there is more than one profile); name one with -p{}",
                        known(&p)
                    ),
                });
            }
        };
        p.map.get(name).cloned().ok_or_else(|| EngineError {
            code: ErrorCode::UnknownProfile,
            message: format!("no profile named \"{}\"{}", name.escape_debug(), known(&p)),
        })
    }

    /// A token for `profile` (the default when `None`) with at least `min_ttl`
    /// left, waiting at most [`DEFAULT_WAIT`] for one.
    pub async fn token(
        &self,
        profile: Option<&str>,
        min_ttl: Duration,
    ) -> Result<TokenReply, EngineError> {
        self.token_within(profile, min_ttl, DEFAULT_WAIT).await
    }

    /// [`Engine::token`], waiting at most `wait` (capped at [`MAX_WAIT`]) when
    /// no cached token will do; with zero it answers at once.
    pub async fn token_within(
        &self,
        profile: Option<&str>,
        min_ttl: Duration,
        wait: Duration,
    ) -> Result<TokenReply, EngineError> {
        let min = min_ttl.as_secs_f64();
        let wait = wait.min(MAX_WAIT);
        // a replaced profile's waiters move to the new entry; a few tries suffice
        for _ in 0..4 {
            let entry = self.lookup(profile)?;
            if let Some(reply) = entry.cached(self.ctx.clock.now(), min) {
                return Ok(reply);
            }
            match entry.wait_token(&self.ctx, min, wait).await {
                Ok(r) => return Ok(r),
                Err(WaitError::Failed(e)) => return Err(e),
                Err(WaitError::Gone) => continue,
            }
        }
        Err(self.gone(profile))
    }

    /// The hot path of `token`: appends the reply line of `profile`'s cached
    /// token (the default's when `None`) if it has at least `min_ttl` left,
    /// and says whether it did. Never waits; on false (no such token, no such
    /// profile, shutting down) [`Engine::token_within`] gives the answer.
    pub fn cached_token_line(
        &self,
        profile: Option<&str>,
        min_ttl: Duration,
        out: &mut Vec<u8>,
    ) -> bool {
        match self.lookup(profile) {
            Ok(entry) => entry.cached_line(self.ctx.clock.now(), min_ttl.as_secs_f64(), out),
            Err(_) => false,
        }
    }

    /// Obtains a new token now, even if the cached one is fresh, waiting for
    /// the attempt at most the request timeout and a little.
    pub async fn refresh(&self, profile: Option<&str>) -> Result<TokenReply, EngineError> {
        self.refresh_within(profile, None).await
    }

    /// [`Engine::refresh`], waiting at most `wait` (capped at [`MAX_WAIT`]).
    pub async fn refresh_within(
        &self,
        profile: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<TokenReply, EngineError> {
        for _ in 0..4 {
            let entry = self.lookup(profile)?;
            let wait = wait
                .unwrap_or(entry.profile.timeout + Duration::from_secs(2))
                .min(MAX_WAIT);
            match entry.force_refresh(&self.ctx, wait).await {
                Ok(r) => return Ok(r),
                Err(WaitError::Failed(e)) => return Err(e),
                Err(WaitError::Gone) => continue,
            }
        }
        Err(self.gone(profile))
    }

    fn gone(&self, profile: Option<&str>) -> EngineError {
        if self.shut.load(Ordering::Acquire) {
            return shutting_down();
        }
        EngineError {
            code: ErrorCode::UnknownProfile,
            message: format!(
                "profile \"{}\" was removed while waiting",
                profile.unwrap_or("(default)")
            ),
        }
    }

    /// Status of one profile, or of all when `None`.
    pub fn status(&self, profile: Option<&str>) -> Result<Vec<ProfileStatus>, EngineError> {
        let now = self.ctx.clock.now();
        match profile {
            Some(_) => Ok(vec![self.lookup(profile)?.status(now)]),
            None => {
                let p = self.read();
                let mut all: Vec<ProfileStatus> = p.map.values().map(|e| e.status(now)).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(all)
            }
        }
    }

    /// The default profile's name, if any: `default_profile`, else the only
    /// profile when there is exactly one.
    pub fn default_profile(&self) -> Option<String> {
        effective_default(&self.read()).map(str::to_owned)
    }

    /// Adds (or with `replace`, replaces) a profile at runtime.
    ///
    /// Profiles added this way survive `reload` unless the file defines the
    /// same name. The first profile of an engine without a default becomes it.
    pub fn add(&self, profile: Profile, replace: bool) -> Result<(), EngineError> {
        if self.shut.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = self.write();
        let name = profile.name.clone();
        if !p.map.contains_key(&name) && p.map.len() >= MAX_PROFILES {
            return Err(too_many_profiles(
                format!(
                    "cannot add profile \"{}\": the daemon already holds {} profiles",
                    name.escape_debug(),
                    p.map.len()
                ),
                "remove one first with `ce-auth remove PROFILE`",
            ));
        }
        if let Some(old) = p.map.get(&name) {
            if !replace {
                return Err(EngineError {
                    code: ErrorCode::ProfileExists,
                    message: format!(
                        "profile \"{name}\" already exists; remove it first or add with replace (ce-auth add --replace)"
                    ),
                });
            }
            if old.profile == profile {
                // same settings and secret: keep the token
                old.from_config.store(false, Ordering::Release);
                return Ok(());
            }
        }
        if p.default.is_none() && p.map.is_empty() {
            p.default = Some(name.clone());
        }
        self.install(&mut p, profile, false);
        tracing::info!(profile = %name, "profile added");
        Ok(())
    }

    /// Removes a profile, dropping its secret and token.
    pub fn remove(&self, name: &str) -> Result<(), EngineError> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = self.write();
        if !p.map.contains_key(name) {
            return Err(EngineError {
                code: ErrorCode::UnknownProfile,
                message: format!("no profile named \"{}\"{}", name.escape_debug(), known(&p)),
            });
        }
        Self::uninstall(&mut p, name);
        if p.default.as_deref() == Some(name) {
            p.default = None;
        }
        tracing::info!(profile = %name, "profile removed");
        Ok(())
    }

    /// Applies a new configuration; unchanged profiles keep their tokens.
    ///
    /// Profiles whose settings or secret changed start afresh; profiles the
    /// file no longer has stop, except those added at runtime with `add`.
    /// A configuration that would take the daemon past [`MAX_PROFILES`] is
    /// refused whole (`config_error`), leaving the running one untouched.
    pub fn reload(&self, config: Config) -> Result<ReloadReply, EngineError> {
        let mut reply = ReloadReply::default();
        if self.shut.load(Ordering::Acquire) {
            return Ok(reply);
        }
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = self.write();
        let kept = p
            .map
            .iter()
            .filter(|(n, e)| {
                !e.from_config.load(Ordering::Acquire) && !config.profiles.contains_key(*n)
            })
            .count();
        if config.profiles.len() + kept > MAX_PROFILES {
            return Err(too_many_profiles(
                format!(
                    "the configuration has {} profiles{}",
                    config.profiles.len(),
                    if kept > 0 {
                        format!(" and {kept} more were added at runtime")
                    } else {
                        String::new()
                    }
                ),
                "remove some from the file or with `ce-auth remove PROFILE`",
            ));
        }
        let gone: Vec<String> = p
            .map
            .iter()
            .filter(|(n, e)| {
                e.from_config.load(Ordering::Acquire) && !config.profiles.contains_key(*n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            Self::uninstall(&mut p, &n);
            reply.removed.push(n);
        }
        for (name, profile) in config.profiles {
            match p.map.get(&name) {
                Some(old) if old.profile == profile => {
                    old.from_config.store(true, Ordering::Release);
                    reply.unchanged.push(name);
                }
                Some(_) => {
                    self.install(&mut p, profile, true);
                    reply.changed.push(name);
                }
                None => {
                    self.install(&mut p, profile, true);
                    reply.added.push(name);
                }
            }
        }
        for (n, e) in &p.map {
            if !e.from_config.load(Ordering::Acquire) {
                reply.unchanged.push(n.clone());
            }
        }
        p.default = match config.default_profile {
            Some(d) => Some(d),
            // keep a default that still exists (e.g. a profile added at runtime)
            None => p.default.take().filter(|d| p.map.contains_key(d)),
        };
        reply.unchanged.sort();
        Ok(reply)
    }

    /// Starts a profile's entry and refresher, stopping any previous one.
    fn install(&self, p: &mut Profiles, profile: Profile, from_config: bool) {
        let name = profile.name.clone();
        Self::uninstall(p, &name);
        let entry = Entry::new(profile, from_config);
        let task = tokio::spawn(profile::refresher(
            Arc::clone(&entry),
            Arc::clone(&self.ctx),
        ));
        p.map.insert(name.clone(), entry);
        p.tasks.insert(name, task);
    }

    fn uninstall(p: &mut Profiles, name: &str) {
        if let Some(old) = p.map.remove(name) {
            old.stop();
        }
        if let Some(task) = p.tasks.remove(name) {
            // an in-flight request is abandoned; `stop` already made its result moot
            task.abort();
        }
    }

    /// The HTTP client for API requests proxied with `profile`'s token: the
    /// profile's roots and connect timeout, responses streamed.
    pub fn api_client(&self, profile: &str) -> Result<oauth::ApiClient, EngineError> {
        let entry = self.lookup(Some(profile))?;
        self.http
            .streaming_for_profile(&entry.profile)
            .map_err(|e| api_error(&e))
    }

    /// The issuer's `users/me` object, fetched with the profile's token.
    pub async fn whoami(&self, profile: Option<&str>) -> Result<WhoamiReply, EngineError> {
        let reply = self.token(profile, WHOAMI_MIN_TTL).await?;
        let entry = self.lookup(Some(&reply.profile))?;
        let s = &entry.profile;
        let client = self.http.for_profile(s).map_err(|e| api_error(&e))?;
        let user = oauth::users_me(&client, &s.api_url, &reply.access_token)
            .await
            .map_err(|e| api_error(&e))?;
        Ok(WhoamiReply {
            profile: reply.profile,
            user,
        })
    }

    /// The tutorial's bootstrap: password grant, then `POST /api/v1/clients/`.
    /// Not tied to any profile; `token_url` defaults to Climate Engine's.
    pub async fn login(
        &self,
        token_url: Option<&str>,
        email: &str,
        password: &Secret,
    ) -> Result<LoginReply, EngineError> {
        let token_url = token_url.unwrap_or(CLIMATE_ENGINE_TOKEN_URL);
        let url = crate::daemon::config::validate_url(token_url).map_err(|m| EngineError {
            code: ErrorCode::ConfigError,
            message: format!("token_url: {m}"),
        })?;
        if email.trim().is_empty() || password.is_empty() {
            return Err(EngineError {
                code: ErrorCode::BadRequest,
                message: "login needs an e-mail and a password".into(),
            });
        }
        let client = self
            .http
            .get(
                None,
                crate::daemon::config::DEFAULT_CONNECT_TIMEOUT,
                crate::daemon::config::DEFAULT_TIMEOUT,
            )
            .map_err(|e| api_error(&e))?;
        let token =
            oauth::password_token(&client, token_url, email, password, self.ctx.clock.now())
                .await
                .map_err(|e| api_error(&e))?;
        let api_url = url.origin().ascii_serialization();
        let created = oauth::create_client(&client, &api_url, &token.access_token)
            .await
            .map_err(|e| api_error(&e))?;
        tracing::info!(client_id = %created.client_id, "created an API client");
        Ok(LoginReply {
            client_id: created.client_id,
            client_secret: created.client_secret,
            user_id: created.user_id,
        })
    }

    /// Stops background refreshes and drops every secret.
    pub async fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        let tasks: Vec<JoinHandle<()>> = {
            let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
            let mut p = self.write();
            for e in p.map.values() {
                e.stop();
            }
            p.map.clear();
            p.default = None;
            p.tasks.drain().map(|(_, t)| t).collect()
        };
        for t in tasks {
            t.abort();
            // the aborted task drops its handle on the profile (and its secret)
            let _ = t.await;
        }
    }
}

/// The profile used when a request names none: the configured default, else
/// the only profile there is (a one-profile setup needs no `default_profile`).
fn effective_default(p: &Profiles) -> Option<&str> {
    match (&p.default, p.map.len()) {
        (Some(d), _) => Some(d.as_str()),
        (None, 1) => p.map.keys().next().map(String::as_str),
        (None, _) => None,
    }
}

fn known(p: &Profiles) -> String {
    if p.map.is_empty() {
        "; no profiles are configured (add one with `ce-auth add` or in the config file)".into()
    } else {
        let mut names: Vec<&str> = p.map.keys().map(String::as_str).collect();
        names.sort_unstable();
        format!("; known profiles: {}", names.join(", "))
    }
}

/// The `config_error` for going past [`MAX_PROFILES`]: `what` says how, `fix` what to do.
pub fn too_many_profiles(what: String, fix: &str) -> EngineError {
    EngineError {
        code: ErrorCode::ConfigError,
        message: format!("{what}; at most {MAX_PROFILES} profiles are allowed ({fix})"),
    }
}

fn shutting_down() -> EngineError {
    EngineError {
        code: ErrorCode::ShuttingDown,
        message: "the daemon is shutting down".into(),
    }
}

fn api_error(e: &TokenError) -> EngineError {
    let code = match (e.class, e.status) {
        (ErrorClass::Transient, _) => ErrorCode::IssuerUnavailable,
        (ErrorClass::Permanent, Some(401 | 403)) => ErrorCode::CredentialsRejected,
        (ErrorClass::Permanent, _) if e.oauth_error.is_some() => ErrorCode::CredentialsRejected,
        (ErrorClass::Permanent, _) => ErrorCode::IssuerUnavailable,
    };
    EngineError {
        code,
        message: e.message.clone(),
    }
}
