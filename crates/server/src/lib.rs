//! keyplane-server: the HTTP surface of Keyplane, wiring only.
//!
//! Owns: the axum routers (data plane under /v1beta etc., control plane under Google's
//! paths, the OAuth token endpoint), bootstrap of a data directory, and `serve`.
//! Must not touch: SQL (that is keyplane-store), domain rules (keyplane-core), model
//! execution (keyplane-backends).

pub mod app;
pub mod audit;
pub mod authz;
pub mod bootstrap;
pub mod controlplane;
pub mod dataplane;
mod front;
pub mod identity;
pub mod meter;
pub mod oauth;
pub mod settings;
pub mod tls;

use anyhow::Context;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use keyplane_backends::local::{LocalBackend, LocalOptions};
use keyplane_backends::upstream::UpstreamClient;
use keyplane_backends::Backend;
use keyplane_store::{SqliteStore, Store};
use keyplane_wire::ApiError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::app::{App, AppState, ModelRouter, Route, RoutedModel};
use crate::settings::{Settings, LOCAL_MODEL_ID};

/// How `keyplane serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (the chosen address is printed).
    pub listen: SocketAddr,
    /// Holds the database, the server secret and owner-credentials.json.
    pub data_dir: PathBuf,
    /// Optional TOML file (model aliases, backend settings).
    pub config_file: Option<PathBuf>,
    /// The local model's GGUF file; when `None` it is looked up in the usual places.
    pub model_path: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<tls::TlsFiles>,
}

/// Where the local model is looked for when `--model` is not given: `KEYPLANE_MODEL`,
/// then the cache directory `scripts/setup.sh` fills, then the data directory.
pub fn find_model(config: &Config) -> anyhow::Result<PathBuf> {
    const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    if let Some(p) = &config.model_path {
        anyhow::ensure!(p.is_file(), "the model file {} does not exist", p.display());
        return Ok(p.clone());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("KEYPLANE_MODEL").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    let cache = std::env::var_os("KEYPLANE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("keyplane")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/keyplane")));
    if let Some(c) = cache {
        candidates.push(c.join("models").join(FILE));
    }
    candidates.push(config.data_dir.join("models").join(FILE));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the local model was not found (looked at: {}); run scripts/setup.sh or pass --model PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The routing table: the local model under its own id, the upstream's models under
/// theirs, and every configured alias (an alias never hides an upstream model).
pub fn build_models(
    settings: &Settings,
    backend: Arc<dyn Backend>,
    upstream: Option<Arc<UpstreamClient>>,
) -> anyhow::Result<ModelRouter> {
    let mut router = ModelRouter::default();
    for info in backend.models() {
        router.models.insert(
            info.id.clone(),
            RoutedModel {
                id: info.id.clone(),
                backend_model: info.id.clone(),
                display_name: info.display_name.clone(),
                description: info.description.clone(),
                route: Route::Local(backend.clone()),
                info,
            },
        );
    }
    let upstream_models: &[String] = match (&settings.upstream, &upstream) {
        (Some(u), Some(_)) => &u.models,
        _ => &[],
    };
    if let Some(client) = &upstream {
        for id in upstream_models {
            anyhow::ensure!(
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "[upstream] models: {id:?} is not a model id (letters, digits, '-', '.', '_')"
            );
            let info = upstream_model_info(id);
            router.models.insert(
                id.clone(),
                RoutedModel {
                    id: id.clone(),
                    backend_model: id.clone(),
                    display_name: info.display_name.clone(),
                    description: info.description.clone(),
                    route: Route::Upstream(client.clone()),
                    info,
                },
            );
        }
    }
    for (alias, target) in &settings.aliases {
        if upstream_models.contains(alias) {
            continue;
        }
        let target_model = router
            .models
            .get(target)
            .cloned()
            .with_context(|| format!("alias {alias} names an unknown model {target}"))?;
        router.models.insert(
            alias.clone(),
            RoutedModel {
                id: alias.clone(),
                ..target_model
            },
        );
    }
    Ok(router)
}

/// What models.get says of an upstream model. The upstream is not asked (it may be down
/// at start); the limits are those of Gemini 2.5's models.
fn upstream_model_info(id: &str) -> keyplane_backends::ModelInfo {
    keyplane_backends::ModelInfo {
        id: id.to_owned(),
        display_name: id.to_owned(),
        description: format!("models/{id}, answered by the upstream Gemini API."),
        input_token_limit: 1_048_576,
        output_token_limit: 65_536,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 64,
        max_temperature: 2.0,
    }
}

/// The upstream client `[upstream]` asks for, with its key from the environment; `None`
/// without an `[upstream]` table.
pub fn upstream_client(settings: &Settings) -> anyhow::Result<Option<Arc<UpstreamClient>>> {
    let Some(u) = &settings.upstream else {
        return Ok(None);
    };
    let key = u.api_key()?;
    let client =
        UpstreamClient::new(&u.base_url, &key).map_err(|e| anyhow::anyhow!("[upstream] {e}"))?;
    Ok(Some(Arc::new(client)))
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(dataplane::router())
        .merge(controlplane::projects::router())
        .merge(controlplane::serviceusage::router())
        .merge(controlplane::apikeys::router())
        .merge(controlplane::iampolicy::router())
        .merge(controlplane::iam::router())
        .merge(controlplane::orgpolicy::router())
        .merge(controlplane::users::router())
        .merge(controlplane::quotas::router())
        .merge(audit::router())
        .merge(oauth::router())
        .fallback(not_found)
        // A path served with another method: Google's 404 as a google.rpc.Status, never
        // axum's bare 405.
        .method_not_allowed_fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // One layer, one boxed future per request: the audit entry (outermost, so a
        // panicking mutation is recorded as failed), then panics, then framework errors.
        .layer(Guard {
            state: state.clone(),
        })
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(state)
}

async fn not_found(req: Request) -> axum::response::Response {
    ApiError::not_found(format!(
        "The requested URL {} was not found on this server.",
        req.uri().path()
    ))
    .into_response()
}

/// Largest request body accepted (Google's inline-request limit for the Gemini API).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// The layer every route sits behind: records audited requests ([`audit::Pending`]),
/// turns a panicking handler into a google.rpc.Status 500 and rewrites the framework's
/// plain-text errors into google.rpc.Status ([`google_errors`]). One tower layer calling
/// its route directly, where three `from_fn` layers each cloned the route and boxed a
/// future.
#[derive(Clone)]
struct Guard {
    state: AppState,
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        use futures::FutureExt;
        use std::panic::AssertUnwindSafe;
        let audit = audit::Pending::begin(&mut req).map(|p| (p, self.state.clone()));
        // The route's future owns what it needs: no clone of the route per request.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let resp = match called {
                Ok(fut) => settle(fut.map(|r| r.unwrap_or_else(|never| match never {}))).await,
                Err(_) => google_errors(panicked()).await,
            };
            if let Some((pending, state)) = audit {
                pending.finish(&state, resp.status().as_u16()).await;
            }
            Ok(resp)
        })
    }
}

/// A handler's answer as clients get it: a panic as a google.rpc.Status 500, framework
/// errors rewritten by [`google_errors`]. For the router ([`Guard`]) and for the calls that
/// skip it (front.rs).
async fn settle(
    handler: impl std::future::Future<Output = axum::response::Response>,
) -> axum::response::Response {
    use futures::FutureExt;
    let resp = match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => panicked(),
    };
    google_errors(resp).await
}

/// A request body over [`MAX_BODY_BYTES`], as Google words it.
fn payload_too_large() -> ApiError {
    ApiError::invalid_argument(format!(
        "Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
    ))
}

/// A handler that panics answers a google.rpc.Status 500, never a dropped connection.
fn panicked() -> axum::response::Response {
    ApiError::internal_from("a request handler panicked").into_response()
}

/// Errors produced by the framework rather than a handler (body too large, a malformed
/// query string, a wrong content type) are plain text; clients of Google's APIs expect a
/// google.rpc.Status, so they are rewritten into one. Handler errors are already JSON and
/// pass through untouched.
async fn google_errors(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::not_found("The requested URL was not found on this server.")
        }
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated(text, "CREDENTIALS_MISSING"),
        s if s.is_client_error() => ApiError::invalid_argument(if text.is_empty() {
            "Invalid request.".to_owned()
        } else {
            text
        }),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::unavailable("The service is currently unavailable.")
        }
        _ => ApiError::internal_from(text),
    };
    err.into_response()
}

/// Keys handed from the store to the snapshot at a time when it is built.
const SNAPSHOT_PAGE: u32 = 10_000;

/// Opens the data directory and builds the state every handler shares.
pub async fn build_state(
    config: &Config,
    base_url: &str,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<AppState> {
    let settings = Settings::load(config.config_file.as_deref())?;
    bootstrap::ensure_data_dir(&config.data_dir)?;
    let secret = bootstrap::load_or_create_secret(&config.data_dir)?;
    let store = SqliteStore::open(&config.data_dir.join(bootstrap::DATABASE_FILE))
        .await
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let boot = bootstrap::bootstrap(store.as_ref(), &config.data_dir, base_url).await?;

    // The request path's in-memory view.
    let snapshot = keyplane_auth::Snapshot::new();
    load_snapshot_keys(store.as_ref(), &snapshot).await?;
    let quotas = keyplane_auth::quota::Quotas::new(settings.quota_table()?);
    let mut page = keyplane_store::PageRequest::default();
    loop {
        let projects = store
            .list_projects(false, &page)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for p in &projects.items {
            if p.state != keyplane_core::ProjectState::Active {
                continue;
            }
            quotas.set_tier(p.number, &p.tier);
            for s in store
                .list_services(p.number)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                snapshot.set_service(&s);
            }
        }
        match projects.next_page_token {
            Some(t) => page.page_token = Some(t),
            None => break,
        }
    }
    seed_quota_days(store.as_ref(), &quotas).await?;
    let upstream = upstream_client(&settings)?;
    let models = build_models(&settings, backend, upstream)?;
    Ok(AppState(Arc::new(App {
        store,
        secret,
        snapshot,
        directory: Default::default(),
        tokens: Default::default(),
        quotas,
        meter: Default::default(),
        models,
        organization: boot.organization,
        base_url: base_url.to_owned(),
        settings,
    })))
}

/// Today's requests per (project, model), from the stored usage buckets: a restart does not
/// give a project its day's quota again. (The minute windows start empty.)
async fn seed_quota_days(
    store: &dyn Store,
    quotas: &keyplane_auth::quota::Quotas,
) -> anyhow::Result<()> {
    let now = meter::now_ms();
    let day_start_minute = (now - now % keyplane_core::quota::DAY_MS) / 60_000;
    let totals = store
        .usage_totals_since(day_start_minute as i64)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for t in totals {
        quotas.seed_day(
            t.project_number,
            &t.model,
            now,
            u64::try_from(t.requests).unwrap_or(0),
        );
    }
    Ok(())
}

/// Loads every live key into the snapshot, page by page as the store reads them: with a
/// million keys, the whole table in one Vec (plus its rows) would double the memory
/// high-water mark. Only the columns the snapshot keeps are read (no ciphertext: nothing is
/// decrypted or hashed here), the table is sized once from the live-key count (growing it
/// would hold the old and the new table at once), and each page goes in under one lock
/// while the store reads the next.
async fn load_snapshot_keys(
    store: &dyn Store,
    snapshot: &keyplane_auth::Snapshot,
) -> anyhow::Result<()> {
    let count = store
        .live_key_count()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    snapshot.reserve_keys(usize::try_from(count).unwrap_or(0));
    store
        .live_snapshot_keys(SNAPSHOT_PAGE, &mut |keys| {
            snapshot.load_keys(keys.into_iter().map(|k| keyplane_auth::snapshot::LiveKey {
                lookup_hash: k.lookup_hash,
                project_number: k.project_number,
                key_id: k.key_id,
                restrictions: k.restrictions,
                service_account_email: k.service_account_email,
            }))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the server until SIGINT or SIGTERM. Once listening it prints one line to stdout:
/// `keyplane listening on http://ADDR` (`https://` with TLS).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let settings = Settings::load(config.config_file.as_deref())?;
    // A missing upstream key or unusable TLS files fail here, before the model is loaded.
    upstream_client(&settings)?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let model_path = find_model(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{addr}");

    let mut opts = LocalOptions::new(&model_path);
    opts.model_id = LOCAL_MODEL_ID.to_owned();
    opts.parallel = settings.local.parallel;
    opts.queue = settings.local.queue;
    opts.context_per_sequence = settings.local.context;
    let backend = tokio::task::spawn_blocking(move || LocalBackend::load(opts))
        .await?
        .map_err(|e| {
            anyhow::anyhow!("cannot load the local model {}: {e}", model_path.display())
        })?;
    let backend: Arc<dyn Backend> = Arc::new(backend);

    let state = build_state(&config, &base_url, backend).await?;
    let app = router(state.clone());
    // Usage buckets are written off the request path, and once more at shutdown.
    let (stop_meter, meter_stopped) = tokio::sync::watch::channel(false);
    let flusher = meter::spawn_flusher(
        state.clone(),
        std::time::Duration::from_secs(state.settings.usage.flush_seconds),
        meter_stopped,
    );
    // Keys deleted longer ago than the undelete window are purged: at start, then hourly.
    {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                every.tick().await;
                match controlplane::apikeys::purge_expired_keys(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged deleted API keys"),
                    Err(e) => tracing::warn!(error = %e, "purging deleted API keys failed"),
                }
                let days = state.settings.usage.retention_days;
                let cutoff = (meter::now_ms() / 60_000) as i64 - (days * 24 * 60) as i64;
                match state.store.purge_usage_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged old usage buckets"),
                    Err(e) => tracing::warn!(error = %e, "purging old usage buckets failed"),
                }
            }
        });
    }
    tracing::info!(%base_url, data_dir = %config.data_dir.display(), "keyplane is ready");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "keyplane listening on {base_url}")?;
        out.flush()?;
    }
    let served = serve_until_shutdown(listener, app, state.clone(), tls).await;
    let _ = stop_meter.send(true);
    if let Err(e) = flusher.await {
        tracing::warn!(error = %e, "the usage flusher stopped abnormally");
    }
    served
}

async fn serve_until_shutdown(
    listener: tokio::net::TcpListener,
    app: Router,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let straight = front::straight_calls();
    front::serve(listener, app, state, tls, straight, shutdown_signal()).await
}

/// The TCP peer of a connection, as handlers find it in `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The next connection on `listener`, plain or (tls.rs) before its handshake. No Nagle
/// delay: a streamed event (SSE) goes out when it is written, not after the client's delayed
/// ACK (~40 ms per event otherwise).
pub(crate) async fn accept_tcp(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
                return (tcp, addr);
            }
            // The client gave up before the accept: nothing to serve.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => {}
            // Out of file descriptors and the like: wait for some to be freed, as axum's
            // own listener does.
            Err(e) => {
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
