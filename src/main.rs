//! The `callgate` command: `serve` (the default), `check`, `normalize`, the operator commands
//! (`tail` among them), `store migrate` and `vendors`.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use callgate::{
    admin_client,
    canonical::Vendor,
    config::{self, Auth, Config, StorageUrl},
    server::{self, Listeners},
    store::{migrate, postgres},
    telemetry,
    vendors::{self, Origin},
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Call-event webhook gateway: vendor webhooks in, canonical CloudEvents out.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve {
        /// Configuration file.
        #[arg(long, env = "CALLGATE_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration and print the sources and routes it defines.
    Check {
        #[arg(long, env = "CALLGATE_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate one vendor payload and print its canonical events as JSON lines.
    Normalize {
        #[arg(long, help = format!("The vendor: {}", Vendor::NAMES))]
        vendor: String,
        /// Source name to map with (defaults to the vendor name).
        #[arg(long)]
        source: Option<String>,
        /// Region for national phone numbers, e.g. KR.
        #[arg(long)]
        phone_region: Option<String>,
        /// The payload file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Run a local receiver that prints every request it gets (for trying routes).
    Receive {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
    /// List, inspect and replay dead letters (through the admin API).
    DeadLetters {
        #[command(subcommand)]
        action: Action,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, inspect and replay quarantined payloads (through the admin API).
    Quarantine {
        #[command(subcommand)]
        action: Action,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The vendor drift report: fields, values and shapes vendors send that the mapping does
    /// not know (through the admin API).
    Drift {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only what was last seen since then (RFC 3339, or a duration back from now: 24h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the running gateway read its configuration file again (as SIGHUP does) and print
    /// what changed, or every error of a file it rejected (through the admin API).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The delivery log: every attempt of every delivery, and test sends (through the admin API).
    Deliveries {
        #[command(subcommand)]
        action: DeliveriesAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one stored event with each route's delivery state and attempts (through the admin API).
    Events {
        #[command(subcommand)]
        action: EventsAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List calls, or show one call's merged record, events and delivery state (through the
    /// admin API).
    Calls {
        #[command(subcommand)]
        action: CallAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List routes with their backlog, pause and resume one, send it a test event, or discard
    /// the backlog of a route no longer configured (through the admin API).
    Routes {
        #[command(subcommand)]
        action: RouteAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print accepted events and delivery outcomes as they happen (the live tail, through the
    /// admin API), one line each, until stopped; on PostgreSQL every replica's.
    Tail {
        /// Only these routes (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        route: Vec<String>,
        /// Only these sources.
        #[arg(long, value_delimiter = ',')]
        source: Vec<String>,
        /// Only these canonical types (globs such as `call.*`).
        #[arg(long = "type", value_delimiter = ',')]
        kind: Vec<String>,
        /// Print each message as the JSON the gateway sent: {"event": ..., "data": {...}}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Work on a store directly (with the gateway stopped).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Make a vendor send a source's webhooks to this gateway: through the vendor's API
    /// (OneInbox, Utel; the API key from ONEINBOX_API_KEY / UTEL_API_TOKEN), or as printed
    /// console steps (Salpre, vox).
    Vendors {
        #[command(subcommand)]
        action: VendorAction,
        /// Configuration that defines the source (its vendor and auth).
        #[arg(long, global = true, env = "CALLGATE_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print secrets (a query secret in a URL, a header value) instead of hiding them.
        #[arg(long, global = true)]
        show_secrets: bool,
    },
    /// Erase every call whose events carry a phone number, and every payload, quarantined
    /// body and drift row that holds it (through the admin API); prints the counts.
    Erase {
        /// The number, in E.164 or as the vendor sent it; `-` reads it from standard input
        /// (keeping it out of the process list and the shell history).
        #[arg(long)]
        number: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the admin API's OpenAPI 3.1 document (the one served at
    /// `GET /v1/admin/openapi.json`), e.g. to generate a client.
    Openapi,
}

#[derive(Subcommand)]
enum VendorAction {
    /// Add callgate's webhook for SOURCE at its vendor (or bring it up to date).
    Register {
        source: String,
        /// The gateway's public base URL, e.g. https://hooks.example.com.
        #[arg(long)]
        public_url: String,
        /// Vendor events to subscribe (comma-separated or repeated); default: all of them.
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        events: Option<Vec<String>>,
    },
    /// Change callgate's existing webhook for SOURCE (URL, events).
    Update {
        source: String,
        #[arg(long)]
        public_url: String,
        /// Vendor events to subscribe; default: keep the current ones.
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        events: Option<Vec<String>>,
    },
    /// Remove callgate's webhook for SOURCE, and nothing else.
    Unregister { source: String },
    /// List the webhooks of SOURCE's vendor account, callgate's marked.
    List { source: String },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Copy a stopped gateway's SQLite store into an empty PostgreSQL database: pending
    /// deliveries in their order, dead letters, quarantine, paused routes and the dedup window.
    Migrate {
        /// The SQLite store, sqlite://PATH (opened read-only).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, postgres://user[:password]@host:port/db (leave the password
        /// out to take it from PGPASSWORD).
        #[arg(long, env = "CALLGATE_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
}

/// How to reach a running gateway's admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// Configuration to read the admin address and token from.
    #[arg(long, global = true, env = "CALLGATE_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Admin API base URL (overrides the configuration), e.g. http://127.0.0.1:9090.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Admin token (overrides `[admin] token`).
    #[arg(long, global = true, env = "CALLGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Action {
    /// List, newest first.
    List {
        /// Only this route (dead letters) or source (quarantine).
        #[arg(long, alias = "source")]
        route: Option<String>,
        /// Only since this RFC 3339 time or duration ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one, with everything kept about it.
    Show { id: i64 },
    /// Replay one (by id), or all of a route/source, or all since a time, or all.
    Replay {
        id: Option<i64>,
        #[arg(long, alias = "source")]
        route: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum CallAction {
    /// List calls, newest first (by their first event).
    List {
        #[arg(long)]
        source: Option<String>,
        /// Only calls first accepted since this RFC 3339 time or duration ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// completed, no_answer, busy, canceled, failed, or in_progress (no terminal event yet).
        #[arg(long)]
        status: Option<String>,
        /// The next page: the `--before-id` the previous page printed.
        #[arg(long)]
        before_id: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one call by subject (`{source}:{call_id}`), as JSON.
    Show { subject: String },
    /// Erase everything stored of one call (`{source}:{call_id}`): its pending deliveries,
    /// dead letters, delivery log, events, summary and payloads; prints the counts.
    Erase { subject: String },
}

#[derive(Subcommand)]
enum RouteAction {
    List,
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Delete the waiting deliveries of a route removed from the configuration (or disabled).
    DiscardBacklog {
        name: String,
    },
    /// Send a sample event (marked `data.test = true`) to the route now, outside the queue,
    /// and print what the receiver answered.
    Test {
        name: String,
        /// Canonical type of the sample, e.g. call.ended; default: the first the route takes.
        #[arg(long = "type")]
        kind: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeliveriesAction {
    /// List a route's attempts, newest first.
    List {
        #[arg(long)]
        route: String,
        /// Only since this RFC 3339 time or duration ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only of this subject (`{source}:{call_id}`).
        #[arg(long)]
        subject: Option<String>,
        /// Only success, failed or dead.
        #[arg(long)]
        outcome: Option<String>,
        /// Only test sends (true) or only deliveries (false).
        #[arg(long)]
        test: Option<bool>,
        /// Only ids below this (the previous page's last id).
        #[arg(long)]
        before_id: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Show one event by its id (`ce_…`).
    Show { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Serve {
        config: std::env::var_os("CALLGATE_CONFIG").map_or_else(|| PathBuf::from(config::DEFAULT_PATH), PathBuf::from),
    });
    match command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Normalize { vendor, source, phone_region, file } => normalize(&vendor, source, phone_region, &file),
        Command::Receive { listen } => receive(listen),
        Command::DeadLetters { action, admin } => operate(admin, Target::DeadLetters(action)),
        Command::Quarantine { action, admin } => operate(admin, Target::Quarantine(action)),
        Command::Routes { action, admin } => operate(admin, Target::Routes(action)),
        Command::Drift { source, since, limit, admin } => operate(admin, Target::Drift { source, since, limit }),
        Command::Reload { admin } => operate(admin, Target::Reload),
        Command::Tail { route, source, kind, json, admin } => tail(admin, &route, &source, &kind, json),
        Command::Deliveries { action, admin } => operate(admin, Target::Deliveries(action)),
        Command::Events { action, admin } => operate(admin, Target::Events(action)),
        Command::Calls { action, admin } => operate(admin, Target::Calls(action)),
        Command::Erase { number, admin } => match number_argument(number) {
            Ok(number) => operate(admin, Target::Erase { number }),
            Err(code) => code,
        },
        Command::Store { action: StoreAction::Migrate { from, to } } => store_migrate(&from, &to),
        Command::Vendors { action, config, show_secrets } => vendors_command(action, &config, show_secrets),
        Command::Openapi => {
            println!("{}", callgate::admin::openapi_json());
            ExitCode::SUCCESS
        }
    }
}

/// `callgate vendors …`: wires a vendor to this gateway (see `vendor_client`).
fn vendors_command(action: VendorAction, path: &std::path::Path, show_secrets: bool) -> ExitCode {
    use callgate::vendor_client::{self, Request};
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("callgate: {errors}");
            return ExitCode::from(2);
        }
    };
    let (source, request) = match action {
        VendorAction::Register { source, public_url, events } => (source, Request::Register { public_url, events }),
        VendorAction::Update { source, public_url, events } => (source, Request::Update { public_url, events }),
        VendorAction::Unregister { source } => (source, Request::Unregister),
        VendorAction::List { source } => (source, Request::List),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    printed(runtime.block_on(vendor_client::run(&config, &source, request, show_secrets, &env)))
}

/// `callgate store migrate`: the move from SQLite to PostgreSQL, with counts of what it copied.
fn store_migrate(from: &str, to: &str) -> ExitCode {
    let from = match StorageUrl::parse(from) {
        Ok(StorageUrl::Sqlite(path)) => path,
        Ok(_) | Err(_) => {
            eprintln!("callgate: --from must be sqlite://PATH");
            return ExitCode::from(2);
        }
    };
    let to = match StorageUrl::parse(to) {
        Ok(StorageUrl::Postgres(url)) => url,
        Ok(_) | Err(_) => {
            // Not echoed: it may hold a password.
            eprintln!("callgate: --to must be postgres://user@host:port/database");
            return ExitCode::from(2);
        }
    };
    let shown = postgres::redact(to.expose());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(migrate::sqlite_to_postgres(&from, to.expose())) {
        Ok(copied) => {
            print!("moved sqlite://{} to {shown}:\n{copied}", from.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("callgate: {errors}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listeners =
            Listeners::bind(&config).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.server.listen))?;
        server::run(config, listeners, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "callgate failed.");
            eprintln!("callgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Target {
    DeadLetters(Action),
    Quarantine(Action),
    Routes(RouteAction),
    Drift { source: Option<String>, since: Option<String>, limit: usize },
    Reload,
    Deliveries(DeliveriesAction),
    Events(EventsAction),
    Calls(CallAction),
    Erase { number: String },
}

/// `callgate erase --number`: the number itself, or (`-`) the first line of standard input.
fn number_argument(number: String) -> Result<String, ExitCode> {
    if number != "-" {
        return Ok(number);
    }
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(_) => Ok(line.trim().to_owned()),
        Err(e) => {
            eprintln!("callgate: reading the number from standard input: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The admin API client and a runtime for an operator command, or how it failed.
fn admin_client(args: AdminArgs) -> Result<(admin_client::Client, tokio::runtime::Runtime), ExitCode> {
    let config = if args.url.is_some() && args.token.is_some() {
        None
    } else {
        match Config::load(&args.config) {
            Ok(config) => Some(config),
            Err(errors) => {
                eprint!("callgate: {errors}");
                return Err(ExitCode::from(2));
            }
        }
    };
    let client = match admin_client::Client::new(args.url, args.token, config.as_ref()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("callgate: {e}");
            return Err(ExitCode::from(2));
        }
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Ok((client, rt)),
        Err(e) => {
            eprintln!("callgate: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Runs an operator command against the admin API and prints the answer.
fn operate(args: AdminArgs, target: Target) -> ExitCode {
    match admin_client(args) {
        Ok((client, runtime)) => printed(runtime.block_on(run_operation(&client, target))),
        Err(code) => code,
    }
}

/// `callgate tail`: exits 3 when the gateway dropped this reader (it fell behind), 1 when the
/// stream ended otherwise (shutdown, a cut connection) or could not start.
fn tail(args: AdminArgs, routes: &[String], sources: &[String], kinds: &[String], json: bool) -> ExitCode {
    let (client, runtime) = match admin_client(args) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let mut query = Vec::new();
    for (key, values) in [("route", routes), ("source", sources), ("type", kinds)] {
        if !values.is_empty() {
            query.push((key, values.join(",")));
        }
    }
    let mut out = std::io::stdout().lock();
    match runtime.block_on(client.tail(&query, json, &mut out)) {
        Ok(admin_client::TailEnd::Dropped(message)) => {
            eprintln!("callgate: the gateway dropped this tail: {message}");
            ExitCode::from(3)
        }
        Ok(admin_client::TailEnd::Closed(message)) => {
            eprintln!("callgate: the tail ended: {message}");
            ExitCode::FAILURE
        }
        Ok(admin_client::TailEnd::Cut) => {
            eprintln!("callgate: the connection to the gateway ended without a word");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command's outcome: its text on stdout, or its error on stderr.
fn printed(outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_operation(client: &admin_client::Client, target: Target) -> Result<String, String> {
    use reqwest::Method;
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    let (path, key) = match &target {
        Target::DeadLetters(_) => ("/v1/admin/dead-letters", "route"),
        Target::Quarantine(_) => ("/v1/admin/quarantine", "source"),
        Target::Routes(_) | Target::Deliveries(_) => ("/v1/admin/routes", ""),
        Target::Events(_) => ("/v1/admin/events", ""),
        Target::Drift { .. } => ("/v1/admin/drift", "source"),
        Target::Reload => ("/v1/admin/reload", ""),
        Target::Calls(_) => ("/v1/calls", ""),
        Target::Erase { .. } => ("/v1/admin/erase", ""),
    };
    match target {
        Target::DeadLetters(action) | Target::Quarantine(action) => match action {
            Action::List { route, since, limit } => {
                let mut query = vec![("limit", limit.to_string())];
                query.extend(route.map(|r| (key, r)));
                query.extend(since.map(|s| ("since", s)));
                let answer = client.call(Method::GET, path, &query).await?;
                let (items, columns): (&str, &[(&str, &str)]) = if key == "route" {
                    (
                        "dead_letters",
                        &[
                            ("ID", "id"),
                            ("ROUTE", "route"),
                            ("TYPE", "type"),
                            ("SUBJECT", "subject"),
                            ("ATTEMPTS", "attempts"),
                            ("DEAD AT", "dead_at"),
                            ("LAST ERROR", "last_error"),
                        ],
                    )
                } else {
                    (
                        "quarantine",
                        &[
                            ("ID", "id"),
                            ("SOURCE", "source"),
                            ("STATUS", "status"),
                            ("REASON", "reason"),
                            ("RECEIVED AT", "received_at"),
                            ("FIRST PROBLEM", "details.0.message"),
                        ],
                    )
                };
                let rows = answer[items].as_array().cloned().unwrap_or_default();
                Ok(admin_client::table(&rows, columns))
            }
            Action::Show { id } => client.call(Method::GET, &format!("{path}/{id}"), &[]).await.map(pretty),
            Action::Replay { id: Some(id), .. } => {
                client.call(Method::POST, &format!("{path}/{id}/replay"), &[]).await.map(pretty)
            }
            Action::Replay { id: None, route, since, all } => {
                let mut query = Vec::new();
                query.extend(route.map(|r| (key, r)));
                query.extend(since.map(|s| ("since", s)));
                if all {
                    query.push(("all", "true".to_owned()));
                }
                let mut answer = client.call(Method::POST, &format!("{path}/replay"), &query).await?;
                // A quarantine replay answers in parts when very many match: go on until done.
                while answer["more"] == true {
                    let Some(after) = answer["next_after_id"].as_i64() else { break };
                    let mut next_query = query.clone();
                    next_query.push(("after_id", after.to_string()));
                    let next = client.call(Method::POST, &format!("{path}/replay"), &next_query).await?;
                    answer = admin_client::merge_replays(answer, next);
                }
                Ok(pretty(answer))
            }
        },
        Target::Drift { source, since, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(source.map(|s| (key, s)));
            query.extend(since.map(|s| ("since", s)));
            let answer = client.call(Method::GET, path, &query).await?;
            let rows = answer["drift"].as_array().cloned().unwrap_or_default();
            Ok(admin_client::table(
                &rows,
                &[
                    ("SOURCE", "source"),
                    ("EVENT", "vendor_event"),
                    ("KIND", "kind"),
                    ("PATH", "path"),
                    ("VALUE", "value"),
                    ("COUNT", "count"),
                    ("FIRST SEEN", "first_seen"),
                    ("LAST SEEN", "last_seen"),
                    ("EXAMPLE", "example"),
                ],
            ))
        }
        Target::Calls(CallAction::List { source, since, status, before_id, limit }) => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(source.map(|s| ("source", s)));
            query.extend(since.map(|s| ("since", s)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(before_id.map(|id| ("before_id", id.to_string())));
            let answer = client.call(Method::GET, path, &query).await?;
            let rows = answer["calls"].as_array().cloned().unwrap_or_default();
            let mut text = admin_client::table(
                &rows,
                &[
                    ("ID", "id"),
                    ("SUBJECT", "subject"),
                    ("STATUS", "status"),
                    ("EVENTS", "events"),
                    ("FIRST AT", "first_at"),
                    ("LAST AT", "last_at"),
                ],
            );
            if let Some(next) = answer["next_before_id"].as_i64() {
                text.push_str(&format!("(more: --before-id {next})\n"));
            }
            Ok(text)
        }
        Target::Calls(CallAction::Show { subject }) => {
            client.call(Method::GET, &format!("{path}/{}", admin_client::path_segment(&subject)), &[]).await.map(pretty)
        }
        Target::Calls(CallAction::Erase { subject }) => client
            .call(Method::DELETE, &format!("/v1/admin/calls/{}", admin_client::path_segment(&subject)), &[])
            .await
            .map(pretty),
        Target::Erase { number } => {
            client.call_with(Method::POST, path, &serde_json::json!({ "number": number })).await.map(pretty)
        }
        Target::Routes(RouteAction::List) => {
            let answer = client.call(Method::GET, path, &[]).await?;
            let rows = answer["routes"].as_array().cloned().unwrap_or_default();
            Ok(admin_client::table(
                &rows,
                &[
                    ("ROUTE", "name"),
                    ("ENABLED", "enabled"),
                    ("PAUSED", "paused"),
                    ("BACKLOG", "backlog"),
                    ("ORPHANED", "orphaned"),
                    ("DEAD LETTERS", "dead_letters"),
                    ("PAUSED REASON", "paused_reason"),
                ],
            ))
        }
        Target::Routes(RouteAction::Pause { name }) => {
            client.call(Method::POST, &format!("{path}/{name}/pause"), &[]).await.map(pretty)
        }
        Target::Routes(RouteAction::Resume { name }) => {
            client.call(Method::POST, &format!("{path}/{name}/resume"), &[]).await.map(pretty)
        }
        Target::Routes(RouteAction::DiscardBacklog { name }) => {
            client.call(Method::DELETE, &format!("{path}/{name}/backlog"), &[]).await.map(pretty)
        }
        Target::Reload => client.call(Method::POST, path, &[]).await.map(pretty),
        Target::Routes(RouteAction::Test { name, kind }) => {
            let query: Vec<(&str, String)> = kind.map(|k| ("type", k)).into_iter().collect();
            client.call(Method::POST, &format!("{path}/{name}/test"), &query).await.map(pretty)
        }
        Target::Deliveries(DeliveriesAction::List { route, since, subject, outcome, test, before_id, limit }) => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(since.map(|s| ("since", s)));
            query.extend(subject.map(|s| ("subject", s)));
            query.extend(outcome.map(|o| ("outcome", o)));
            query.extend(test.map(|t| ("test", t.to_string())));
            query.extend(before_id.map(|b| ("before_id", b.to_string())));
            let answer = client.call(Method::GET, &format!("{path}/{route}/deliveries"), &query).await?;
            let rows = answer["deliveries"].as_array().cloned().unwrap_or_default();
            let mut text = admin_client::table(
                &rows,
                &[
                    ("ID", "id"),
                    ("AT", "at"),
                    ("EVENT", "event_id"),
                    ("TYPE", "type"),
                    ("SUBJECT", "subject"),
                    ("ATTEMPT", "attempt"),
                    ("OUTCOME", "outcome"),
                    ("TEST", "test"),
                    ("STATUS", "status"),
                    ("MS", "duration_ms"),
                    ("ERROR", "error"),
                ],
            );
            if let Some(next) = answer["next_before_id"].as_i64() {
                text.push_str(&format!("(more: --before-id {next})\n"));
            }
            Ok(text)
        }
        Target::Events(EventsAction::Show { id }) => {
            client.call(Method::GET, &format!("{path}/{id}"), &[]).await.map(pretty)
        }
    }
}

fn receive(listen: std::net::SocketAddr) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("callgate receive: listening on http://{listen}");
            callgate::receiver::serve(listener).await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callgate receive: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
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
}

fn check(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("callgate: {errors}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "configuration {} is valid", path.display());
    let _ = writeln!(out, "ingress  http://{}/v1/ingest/{{source}}", config.server.listen);
    match config.admin.listen {
        Some(addr) => {
            let _ = writeln!(out, "admin    http://{addr} (/metrics, /healthz, /readyz)");
        }
        None => {
            let _ = writeln!(out, "admin    on the ingress listener (/metrics, /healthz, /readyz)");
        }
    }
    let _ = writeln!(out, "storage  {}", config.storage_url.redacted());
    let _ = writeln!(out, "sources ({}):", config.sources.len());
    for (name, source) in &config.sources {
        let auth = match &source.auth {
            Auth::None => "none".to_owned(),
            Auth::Query { name, .. } => format!("query parameter `{name}`"),
            Auth::Header { name, .. } => format!("header `{name}`"),
            Auth::Bearer { .. } => "bearer token".to_owned(),
            Auth::Basic { username, .. } => format!("basic (user `{username}`)"),
            Auth::Hmac { header, encoding, .. } => format!("hmac-sha256 ({encoding:?}) in `{header}`"),
            Auth::Retell { .. } => "retell signature in `x-retell-signature`".to_owned(),
        };
        let region = source.phone_region.map(|r| format!(", phone_region {}", r.as_ref())).unwrap_or_default();
        let _ = writeln!(out, "  {name:<12} vendor {}, auth {auth}{region}  -> POST /v1/ingest/{name}", source.vendor);
        if let Some(inbound) = &source.inbound {
            let _ = writeln!(
                out,
                "    inbound POST /v1/inbound/{name} -> lookup {}, timeout {}, signed {}, fallback {} variable(s)",
                config::redact_url(&inbound.url),
                humantime::format_duration(inbound.timeout),
                if inbound.signing_secrets.is_empty() { "no" } else { "yes" },
                inbound.fallback.variables.len(),
            );
        }
    }
    let _ = writeln!(out, "routes ({}):", config.routes.len());
    for (name, route) in &config.routes {
        let sources = route.sources.as_ref().map_or_else(|| "all".to_owned(), |s| s.join(", "));
        let headers: Vec<&str> = route.headers.iter().map(|(h, _)| h.as_str()).collect();
        let schedule: Vec<String> =
            route.retry_schedule.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        let _ = writeln!(
            out,
            "  {name:<12} {} {}\n    events [{}], sources [{sources}], include_test {}, timeout {}, signed {}\n    filter {}\n    {}\n    headers [{}]\n    retry [{}] then dead letter",
            if route.enabled { "enabled " } else { "DISABLED" },
            config::redact_url(&route.url),
            route.events.join(", "),
            route.include_test,
            humantime::format_duration(route.timeout),
            if route.signing_secrets.is_empty() {
                "no".to_owned()
            } else {
                format!("yes ({} secret(s))", route.signing_secrets.len())
            },
            route.filter.as_ref().map_or_else(|| "none (every event)".to_owned(), ToString::to_string),
            route.minimise,
            headers.join(", "),
            schedule.join(", "),
        );
    }
    ExitCode::SUCCESS
}

fn normalize(vendor: &str, source: Option<String>, region: Option<String>, file: &str) -> ExitCode {
    let Some(vendor) = Vendor::parse(vendor) else {
        eprintln!("callgate: unknown vendor `{vendor}` ({})", Vendor::NAMES);
        return ExitCode::from(2);
    };
    let phone_region = match region.as_deref().map(str::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            eprintln!("callgate: unknown phone region `{}`", region.unwrap_or_default());
            return ExitCode::from(2);
        }
    };
    let mut body = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut body).map(drop)
    } else {
        std::fs::read(file).map(|b| body = b)
    };
    if let Err(e) = read {
        eprintln!("callgate: cannot read {file}: {e}");
        return ExitCode::from(2);
    }
    let source = source.unwrap_or_else(|| vendor.as_str().to_owned());
    let origin = Origin { source: &source, vendor, phone_region };
    match vendors::normalize(&origin, &body, chrono::Utc::now()) {
        Ok(normalized) => {
            let mut out = std::io::stdout().lock();
            for event in normalized.events {
                let _ = writeln!(out, "{}", serde_json::to_string(&event).unwrap_or_default());
            }
            // Accepted all the same: the unread values are in vendor_extra.
            for d in normalized.degraded {
                eprintln!("callgate: degraded {} at {}: {}", d.field, d.pointer, d.problem);
            }
            // What the drift report would count (degraded fields are listed above).
            for d in normalized.drift.iter().filter(|d| d.kind != vendors::DriftKind::Degraded) {
                eprintln!("callgate: drift {} at {}: {}", d.kind.as_str(), d.path, d.example);
            }
            ExitCode::SUCCESS
        }
        Err(rejection) => {
            eprintln!("callgate: {rejection}");
            for v in rejection.violations() {
                eprintln!("  {}: {}", if v.path.is_empty() { "/" } else { &v.path }, v.message);
            }
            ExitCode::FAILURE
        }
    }
}
