//! Wiring: the shared [`App`] state, the routers, and [`run`], which serves until shutdown.

use std::{future::Future, sync::Arc, time::Duration};

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
    config::{Config, StorageUrl},
    delivery::Dispatcher,
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
    /// The validated configuration, immutable while running.
    pub config: Arc<Config>,
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
    /// The live tail (`/v1/admin/stream`): fed by ingress and the delivery workers.
    pub tail: Arc<Tail>,
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
    let app = Arc::new(App {
        config: config.clone(),
        store: store.clone(),
        dispatcher,
        metrics: metrics.clone(),
        admission: Admission::new(&config),
        offload: Offload::per_core(),
        lookups: ingress::inbound::Lookups::new(&config)?,
        tail: tail.clone(),
    });

    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });
    let pruner = tokio::spawn(prune_forever(store.clone(), config.clone()));

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
    match Arc::try_unwrap(app) {
        Ok(app) => app.dispatcher.shutdown(grace).await,
        Err(_) => tracing::warn!("Request handlers outlived the grace period; deliveries stop with the process."),
    }
    tracing::info!("callgate stopped.");
    Ok(())
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
                "Pruned old records."
            );
        }
    }
}

fn ingress_router(app: Arc<App>) -> Router {
    let timeout = app.config.server.request_timeout;
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
        telemetry::set_store_gauges(app.config.routes.keys(), &counts);
    }
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
