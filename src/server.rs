//! Wiring: the shared [`App`] state, the routers, and [`run`], which serves until shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    admin,
    completion::Completions,
    config::{Config, StorageUrl},
    delivery::Dispatcher,
    drift::DriftRecorder,
    http::{error_response, json_errors, panic_response},
    ingress::{self, Admission, Offload},
    store::{
        Store,
        postgres::{PgOptions, PostgresStore},
        sqlite::SqliteStore,
    },
    tail::Tail,
    telemetry, vendors,
};

/// State shared by every request handler.
pub struct App {
    /// The running configuration: each request takes one snapshot (`load_full`) and keeps it
    /// to the end; a reload (`reload::reload`) swaps in a whole new one.
    pub config: ArcSwap<Config>,
    /// Held by the reload in progress: two reloads never interleave.
    pub reloading: tokio::sync::Mutex<()>,
    /// Where accepted payloads, deliveries and the quarantine live.
    pub store: Arc<dyn Store>,
    /// Wakes route workers after a commit adds deliveries.
    pub dispatcher: Dispatcher,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bounds ingress requests in flight; a request that finds no slot is shed with 503.
    pub admission: Admission,
    /// Where large bodies are validated and mapped, off the runtime's worker threads.
    pub offload: Offload,
    /// The lookups of the sources that answer an inbound webhook (`/v1/inbound`).
    pub lookups: ingress::inbound::Lookups,
    /// Drift of accepted payloads, summed in memory until it is written to the store.
    pub drift: Arc<DriftRecorder>,
    /// The live tail (`/v1/admin/stream`): fed by ingress and the delivery workers.
    pub tail: Arc<Tail>,
    /// Calls' `call.completed`: checked after each commit of a terminal event or a later
    /// piece, and swept once settled.
    pub completions: Arc<Completions>,
}

/// The listeners a gateway serves on.
pub struct Listeners {
    pub ingress: TcpListener,
    /// Separate listener for `/metrics`, health and admin (`[admin] listen`); `None` serves
    /// them on the ingress listener.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let ingress = TcpListener::bind(config.server.listen).await?;
        let admin = match config.admin.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Listeners { ingress, admin })
    }
}

/// Opens the store from the configuration.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.storage_url {
        StorageUrl::Sqlite(path) => {
            let store = SqliteStore::open(path, config.storage.busy_timeout)
                .map_err(|e| anyhow::anyhow!("opening the store at {}: {e}", path.display()))?
                .with_min_free_bytes(config.storage.min_free_bytes);
            Ok(Arc::new(store))
        }
        StorageUrl::Postgres(url) => {
            let options = PgOptions {
                pool_size: config.storage.pool_size,
                writers: config.storage.writers,
                statement_timeout: config.storage.statement_timeout,
                acquire_timeout: config.storage.acquire_timeout,
                ..PgOptions::default()
            };
            let store = PostgresStore::open(url.expose(), options)
                .await
                .map_err(|e| anyhow::anyhow!("opening the store at {}: {e}", config.storage_url.redacted()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs the gateway until `shutdown` resolves, then stops accepting, lets in-flight requests
/// and deliveries finish within `server.shutdown_grace`, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    vendors::init().map_err(|e| anyhow::anyhow!(e))?;
    let config = Arc::new(config);
    let store = open_store(&config).await?;
    let metrics = telemetry::metrics_handle();
    let tail = Tail::start(&config, store.clone());
    let dispatcher = Dispatcher::start(&config, store.clone(), tail.clone()).await?;
    let drift = Arc::new(DriftRecorder::new(store.clone()));
    let (drift_stop, drift_stopped) = tokio::sync::oneshot::channel::<()>();
    let drift_writer = tokio::spawn(drift.clone().run(async move { drop(drift_stopped.await) }));
    let app = Arc::new(App {
        config: ArcSwap::new(config.clone()),
        reloading: tokio::sync::Mutex::new(()),
        store: store.clone(),
        dispatcher,
        metrics: metrics.clone(),
        admission: Admission::new(&config),
        offload: Offload::per_core(),
        lookups: ingress::inbound::Lookups::new(&config)?,
        drift,
        tail: tail.clone(),
        completions: Completions::new(store.clone(), Some(tail.clone())),
    });

    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });
    let pruner = tokio::spawn(prune_forever(store.clone(), config.clone()));
    let hangups = tokio::spawn(reload_on_sighup(app.clone())?);
    let sweeper = {
        let (completions, app) = (app.completions.clone(), app.clone());
        // The sweeper reads the running configuration (a reload changes `[calls] settle`).
        tokio::spawn(async move { completions.run(&app.config).await })
    };

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let limits = crate::http::Limits {
        header_read_timeout: config.server.header_read_timeout,
        max_header_bytes: config.server.max_header_bytes,
        max_connections: config.server.max_connections,
    };
    let ops = ops_router(app.clone());
    let ingress_router = ingress_router(app.clone());
    // Outermost on every listener: a panic answers 500, and every error is the JSON body.
    let finish =
        |router: Router| router.layer(middleware::from_fn(json_errors)).layer(CatchPanicLayer::custom(panic_response));
    let mut servers = tokio::task::JoinSet::new();
    let ingress_addr = listeners.ingress.local_addr()?;
    let (public, admin_addr) = match listeners.admin {
        Some(admin) => {
            let addr = admin.local_addr()?;
            let mut stop = stop_tx.subscribe();
            let ops = finish(ops.fallback(not_found));
            servers.spawn(crate::http::serve(admin, ops, limits, async move { drop(stop.recv().await) }));
            (ingress_router, Some(addr))
        }
        None => (ingress_router.merge(ops), None),
    };
    // Counted outside the time limit, so a 408 is counted too.
    let public = finish(public.fallback(not_found).layer(middleware::from_fn_with_state(app.clone(), ingress::count)));
    let mut stop = stop_tx.subscribe();
    servers.spawn(crate::http::serve(listeners.ingress, public, limits, async move { drop(stop.recv().await) }));
    // A machine-readable line on stdout: tests and scripts read the bound addresses here.
    match admin_addr {
        Some(admin) => println!("callgate listening ingress={ingress_addr} admin={admin}"),
        None => println!("callgate listening ingress={ingress_addr}"),
    }
    tracing::info!(ingress = %ingress_addr, admin = ?admin_addr, sources = config.sources.len(), routes = config.routes.len(), "callgate started.");

    shutdown.await;
    tracing::info!(grace = ?config.server.shutdown_grace, "Shutting down: no new requests; finishing in-flight work.");
    let _ = stop_tx.send(());
    // Open live tails end now, or they would hold the drain for the whole grace period.
    tail.close();
    let grace = config.server.shutdown_grace;
    let servers_done = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, servers_done).await.is_err() {
        tracing::warn!("Requests still open at the end of the grace period were cut off.");
    }
    upkeep.abort();
    pruner.abort();
    sweeper.abort();
    let _ = sweeper.await; // drops its `App`
    // After the requests: their drift is in memory now, and is written once more.
    let _ = drift_stop.send(());
    if tokio::time::timeout(grace, drift_writer).await.is_err() {
        tracing::warn!("The last vendor drift counts were not written within the grace period.");
    }
    hangups.abort();
    let _ = hangups.await; // drops its `App`, so the dispatcher below can be taken
    match Arc::try_unwrap(app) {
        Ok(app) => app.dispatcher.shutdown(grace).await,
        Err(_) => tracing::warn!("Request handlers outlived the grace period; deliveries stop with the process."),
    }
    tracing::info!("callgate stopped.");
    Ok(())
}

/// Reloads the configuration on every SIGHUP. Installed before the gateway says it listens,
/// so a SIGHUP from then on never takes the default action (ending the process).
#[cfg(unix)]
fn reload_on_sighup(app: Arc<App>) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("listening for SIGHUP: {e}"))?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            // The outcome is logged and counted by the reload itself.
            let _ = crate::reload::reload(&app, "SIGHUP").await;
        }
    })
}

/// Without SIGHUP, `POST /v1/admin/reload` is the only way to reload.
#[cfg(not(unix))]
fn reload_on_sighup(app: Arc<App>) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    drop(app);
    Ok(std::future::pending())
}

/// Deletes what retention and the redelivery window allow, at start and then every
/// `storage.prune_interval`, in chunks so the writer is never held for long.
async fn prune_forever(store: Arc<dyn Store>, config: Arc<Config>) {
    let mut tick = tokio::time::interval(config.storage.prune_interval);
    loop {
        tick.tick().await;
        let now = crate::store::now_ms();
        let retention = now - config.storage.retention.as_millis() as i64;
        let dedup = now - config.storage.dedup_window.as_millis() as i64;
        let mut total = crate::store::Pruned::default();
        loop {
            match store.prune(retention, dedup).await {
                Ok(p) => {
                    let more = p.events + p.payloads + p.attempts + p.quarantine > 0;
                    total.events += p.events;
                    total.payloads += p.payloads;
                    total.attempts += p.attempts;
                    total.quarantine += p.quarantine;
                    total.drift += p.drift;
                    if !more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Pruning failed; will try again.");
                    break;
                }
            }
        }
        if total != crate::store::Pruned::default() {
            tracing::info!(
                events = total.events,
                payloads = total.payloads,
                attempts = total.attempts,
                quarantine = total.quarantine,
                drift = total.drift,
                "Pruned old records."
            );
        }
    }
}

fn ingress_router(app: Arc<App>) -> Router {
    // `[server]` needs a restart: the snapshot taken at start is the one in force.
    let timeout = app.config.load().server.request_timeout;
    Router::new()
        .route("/v1/ingest/{source}", post(ingress::ingest))
        .route("/v1/inbound/{source}", post(ingress::inbound::inbound))
        .layer(middleware::from_fn_with_state(timeout, ingress::time_limit))
        .with_state(app)
}

fn ops_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app.clone())
        .merge(admin::router(app))
        // The dashboard: static files beside the admin API, outside its document.
        .merge(crate::ui::router())
}

async fn not_found() -> Response {
    error_response::<()>(StatusCode::NOT_FOUND, "not_found", "no such endpoint", &[])
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => error_response::<()>(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &format!("store: {e}"), &[]),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    if let Ok(counts) = app.store.counts().await {
        telemetry::set_store_gauges(app.config.load().routes.keys(), &counts);
    }
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
