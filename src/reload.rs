//! Hot reload: `SIGHUP` and `POST /v1/admin/reload` read the configuration file again and,
//! when it is valid, swap it in while the gateway runs.
//!
//! Sources (authentication included), routes and `admin.token` take effect at once; the keys
//! that shape what was built at start (`[server]`, `[storage]`, `[log]`, `[delivery]`,
//! `admin.listen`) keep their running values, and a reload that changes one says so and names
//! it (`restart_required`). A file with errors is rejected with every error, and nothing of it
//! is applied.
//!
//! **Invariant:** a reload swaps whole values: a request keeps the configuration snapshot it
//! started with, an attempt in flight the route settings it was claimed with, so nothing ever
//! runs with half of one configuration and half of another.
//! **Invariant:** a reload never touches the store: a removed route's deliveries stay in the
//! outbox (an orphaned backlog) until the route returns or an operator discards them.

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::{
    config::{
        AdminConfig, CallsConfig, Config, ConfigError, ConfigErrors, DeliveryConfig, LogConfig, ServerConfig,
        StorageConfig,
    },
    server::App,
    telemetry::{self, ReloadOutcome},
};

/// What an applied reload changed (names only: never a value, so never a secret).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Changes {
    pub sources: Diff,
    pub routes: Diff,
    /// Whether `admin.token` changed (the new one is in force from now on).
    pub admin_token_changed: bool,
    /// Keys whose new value needs a restart: their running values stay until then.
    pub restart_required: Vec<String>,
}

/// Names added, removed and changed between two tables (`[sources]`, `[routes]`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Diff {
    fn between<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Diff {
        let mut diff = Diff::default();
        for (name, value) in new {
            match old.get(name) {
                None => diff.added.push(name.clone()),
                Some(before) if before != value => diff.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        diff.removed = old.keys().filter(|name| !new.contains_key(*name)).cloned().collect();
        diff
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Pushes `section.field` for each listed field that differs. The pattern lists every field
/// of the section, so a key added to it does not compile until it is listed here too (and so
/// decided: restart-only, or reloadable and compared elsewhere).
macro_rules! restart_keys {
    ($out:ident, $section:literal, $ty:ident, $old:expr, $new:expr, [$($field:ident),* $(,)?]) => {{
        let $ty { $($field: _),* } = $old;
        $(
            if $old.$field != $new.$field {
                $out.push(concat!($section, ".", stringify!($field)).to_owned());
            }
        )*
    }};
}

/// What running `loaded` instead of `current` means: the configuration to run (the file's,
/// with the running values of every restart-only key) and what changed. Pure, so it is tested
/// without a gateway.
pub fn plan(current: &Config, loaded: Config) -> Result<(Config, Changes), ConfigErrors> {
    let mut restart = Vec::new();
    restart_keys!(
        restart,
        "server",
        ServerConfig,
        &current.server,
        &loaded.server,
        [
            listen,
            max_body_bytes,
            request_timeout,
            max_concurrent_requests,
            max_unverified_per_source,
            header_read_timeout,
            max_header_bytes,
            max_connections,
            shutdown_grace,
        ]
    );
    restart_keys!(
        restart,
        "storage",
        StorageConfig,
        &current.storage,
        &loaded.storage,
        [
            url,
            busy_timeout,
            retention,
            dedup_window,
            prune_interval,
            min_free_bytes,
            pool_size,
            writers,
            statement_timeout,
            acquire_timeout,
        ]
    );
    restart_keys!(restart, "log", LogConfig, &current.log, &loaded.log, [format, filter]);
    restart_keys!(
        restart,
        "delivery",
        DeliveryConfig,
        &current.delivery,
        &loaded.delivery,
        [concurrency, connect_timeout, lease_margin,]
    );
    // `token` is reloadable (a rotation needs no restart); `listen` is bound at start.
    let AdminConfig { listen: _, token: _, stream_buffer: _ } = &current.admin;
    // `[calls] settle` is reloadable (the sweeper reads it at each pass).
    let CallsConfig { settle: _ } = &current.calls;
    if current.admin.listen != loaded.admin.listen {
        restart.push("admin.listen".to_owned());
    }
    // Each live tail reader's buffer is sized when the tail starts.
    if current.admin.stream_buffer != loaded.admin.stream_buffer {
        restart.push("admin.stream_buffer".to_owned());
    }

    let next = Config {
        path: current.path.clone(),
        server: current.server.clone(),
        storage: current.storage.clone(),
        storage_url: current.storage_url.clone(),
        admin: AdminConfig {
            listen: current.admin.listen,
            token: loaded.admin.token,
            stream_buffer: current.admin.stream_buffer,
        },
        log: current.log.clone(),
        delivery: current.delivery.clone(),
        // Read by the completion sweeper at each pass: reloadable.
        calls: loaded.calls,
        sources: loaded.sources,
        routes: loaded.routes,
    };
    // The file was valid against its own `[server]`; what depends on it must also hold
    // against the running one, which stays.
    let errors: Vec<ConfigError> = next
        .sources
        .iter()
        .filter(|(_, s)| s.inbound.as_ref().is_some_and(|i| i.timeout >= next.server.request_timeout))
        .map(|(name, _)| ConfigError {
            key: format!("sources.{name}.inbound.timeout"),
            message: "must be shorter than the running server.request_timeout (a change of it needs a restart)".into(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ConfigErrors { path: current.path.clone(), errors });
    }
    let changes = Changes {
        sources: Diff::between(&current.sources, &next.sources),
        routes: Diff::between(&current.routes, &next.routes),
        admin_token_changed: current.admin.token != next.admin.token,
        restart_required: restart,
    };
    Ok((next, changes))
}

/// Reads the configuration file again and applies it: the new snapshot for every request from
/// now on, the admission shares of its sources, and the route workers (started, retired,
/// re-dressed). A file with errors changes nothing. Logged and counted either way.
pub async fn reload(app: &App, trigger: &'static str) -> Result<Changes, ConfigErrors> {
    let _one_at_a_time = app.reloading.lock().await;
    let current = app.config.load_full();
    let path = current.path.clone();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await.unwrap_or_else(|e| {
        Err(ConfigErrors {
            path: current.path.clone(),
            errors: vec![ConfigError { key: String::new(), message: format!("reading the file failed: {e}") }],
        })
    });
    let (next, changes) = match loaded.and_then(|loaded| plan(&current, loaded)) {
        Ok(planned) => planned,
        Err(errors) => {
            telemetry::config_reload(ReloadOutcome::Rejected);
            let listed: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
            tracing::error!(
                trigger,
                path = %errors.path.display(),
                problems = errors.errors.len(),
                errors = %listed.join("; "),
                "Configuration reload rejected; the running configuration stays."
            );
            return Err(errors);
        }
    };
    let next = Arc::new(next);
    app.config.store(next.clone());
    app.admission.reconfigure(&next);
    let workers = app.dispatcher.reconfigure(&next).await;
    log_changes(&changes);
    for route in &workers.retired {
        tracing::info!(route = %route, "Reload: the route's worker stops once its attempts in flight are recorded; its backlog stays in the store (GET /v1/admin/routes).");
    }
    for route in &workers.started {
        tracing::info!(route = %route, "Reload: the route's worker started.");
    }
    if !changes.restart_required.is_empty() {
        tracing::warn!(keys = ?changes.restart_required, "Reload: these keys changed but take effect only after a restart; their running values stay.");
    }
    telemetry::config_reload(ReloadOutcome::Applied);
    let nothing = changes.sources.is_empty() && changes.routes.is_empty() && !changes.admin_token_changed;
    tracing::info!(
        trigger,
        sources = next.sources.len(),
        routes = next.routes.len(),
        unchanged = nothing,
        "Configuration reloaded."
    );
    Ok(changes)
}

fn log_changes(changes: &Changes) {
    let tables = [("source", &changes.sources), ("route", &changes.routes)];
    for (kind, diff) in tables {
        for (what, names) in [("added", &diff.added), ("removed", &diff.removed), ("changed", &diff.changed)] {
            for name in names {
                tracing::info!(kind, name = %name, change = what, "Reload: {kind} {name} {what}.");
            }
        }
    }
    if changes.admin_token_changed {
        tracing::info!("Reload: the admin token changed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessEnv;

    fn config(text: &str) -> Config {
        Config::from_toml(text, &ProcessEnv).unwrap()
    }

    const BASE: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        [admin]
        token = "one"
        [sources.vox]
        vendor = "vox"
        [sources.old]
        vendor = "salpre"
        [routes.a]
        url = "http://127.0.0.1:1/a"
        [routes.b]
        url = "http://127.0.0.1:1/b"
    "#;

    #[test]
    fn sources_and_routes_are_diffed_by_name_and_value() {
        let current = config(BASE);
        let loaded = config(
            r#"
            [server]
            listen = "127.0.0.1:8080"
            [admin]
            token = "two"
            [sources.vox]
            vendor = "vox"
            auth = { type = "bearer", token = "t" }
            [sources.new]
            vendor = "utel"
            [routes.a]
            url = "http://127.0.0.1:1/a"
            [routes.b]
            url = "http://127.0.0.1:1/b2"
            [routes.c]
            url = "http://127.0.0.1:1/c"
        "#,
        );
        let (next, changes) = plan(&current, loaded).unwrap();
        assert_eq!(
            changes.sources,
            Diff { added: vec!["new".into()], removed: vec!["old".into()], changed: vec!["vox".into()] }
        );
        assert_eq!(changes.routes, Diff { added: vec!["c".into()], removed: vec![], changed: vec!["b".into()] });
        assert!(changes.admin_token_changed);
        assert!(changes.restart_required.is_empty());
        assert_eq!(next.admin.token.as_ref().map(|t| t.expose()), Some("two"));
        assert_eq!(next.routes["b"].url.as_str(), "http://127.0.0.1:1/b2");
    }

    #[test]
    fn restart_only_keys_are_named_and_keep_their_running_values() {
        let current = config(BASE);
        let loaded = config(&BASE.replace("127.0.0.1:8080", "127.0.0.1:9090").replace(
            "[admin]",
            "[delivery]\nconcurrency = 3\n[log]\nformat = \"json\"\n[storage]\nurl = \"sqlite://elsewhere.db\"\n[admin]\nlisten = \"127.0.0.1:9191\"",
        ));
        let (next, changes) = plan(&current, loaded).unwrap();
        assert_eq!(
            changes.restart_required,
            ["server.listen", "storage.url", "log.format", "delivery.concurrency", "admin.listen"]
        );
        assert_eq!(next.server.listen, current.server.listen);
        assert_eq!(next.storage_url, current.storage_url);
        assert_eq!(next.delivery.concurrency, current.delivery.concurrency);
        assert_eq!(next.admin.listen, None);
        assert!(changes.routes.is_empty() && changes.sources.is_empty());
    }

    #[test]
    fn the_settle_time_is_reloaded() {
        let current = config(BASE);
        let loaded = config(&BASE.replace("[admin]", "[calls]\nsettle = \"2m\"\n[admin]"));
        let (next, changes) = plan(&current, loaded).unwrap();
        assert!(changes.restart_required.is_empty(), "{changes:?}");
        assert_eq!(next.calls.settle, std::time::Duration::from_secs(120));
    }

    #[test]
    fn what_depends_on_the_running_server_section_is_checked_against_it() {
        let current = config(BASE);
        let loaded = config(
            r#"
            [server]
            listen = "127.0.0.1:8080"
            request_timeout = "30s"
            [sources.vox]
            vendor = "vox"
            [sources.vox.inbound]
            url = "http://127.0.0.1:1/lookup"
            timeout = "15s"
        "#,
        );
        let errors = plan(&current, loaded).unwrap_err();
        assert_eq!(errors.errors.len(), 1);
        assert_eq!(errors.errors[0].key, "sources.vox.inbound.timeout");
    }
}
