//! The `callgate` command line: `check`, `normalize` and `store migrate`.

use std::process::Command;

use crate::support::{binary, fixture, temp_dir};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.args(args).env_remove("CALLGATE_CONFIG").current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_prints_what_the_shipped_config_defines() {
    let (code, out, err) = run(&["check"], &[]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "oneinbox",
        "vox",
        "salpre",
        "utel",
        "phone_region KR",
        "example",
        "http://127.0.0.1:9000/events",
        "POST /v1/ingest/vox",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
}

#[test]
fn check_reports_every_problem_at_once_with_its_key_and_no_secret() {
    let dir = temp_dir();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "127.0.0.1:0"
colour = "blue"

[sources.vox]
vendor = "vox"
phone_region = "XX"

[sources.salpre]
vendor = "salpre"
auth = { type = "header", name = "X-Salpre-Key", value = "${IT_MISSING_SECRET}" }

[routes.crm]
url = "not a url"
sources = ["nosuch"]
headers = { Authorization = "Bearer ${IT_ALSO_MISSING}", Content-Type = "text/plain" }

[routes.signed]
url = "http://127.0.0.1:9/x"
signing_secret = "plain-text"
timeout = "soon"
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    for needle in [
        "server.colour",
        "sources.vox.phone_region",
        "IT_MISSING_SECRET",
        "sources.salpre.auth.value",
        "routes.crm.url",
        "routes.crm.sources",
        "no source named `nosuch`",
        "IT_ALSO_MISSING",
        "routes.crm.headers.Content-Type",
        "routes.signed",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
    assert!(err.contains(path.to_str().unwrap()), "names the file:\n{err}");
}

#[test]
fn check_never_prints_secrets() {
    let dir = temp_dir();
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        r#"
[sources.salpre]
vendor = "salpre"
auth = { type = "header", name = "X-Salpre-Key", value = "${IT_SALPRE_SECRET}" }

[routes.crm]
url = "https://user:pw-in-url@crm.example/hook?token=tok-in-query"
headers = { Authorization = "Bearer ${IT_CRM_TOKEN}" }
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#,
    )
    .unwrap();
    let (code, out, err) = run(
        &["check", "--config", path.to_str().unwrap()],
        &[("IT_SALPRE_SECRET", "salpre-s3cret"), ("IT_CRM_TOKEN", "crm-t0ken")],
    );
    assert_eq!(code, 0, "{err}");
    for secret in ["salpre-s3cret", "crm-t0ken", "pw-in-url", "tok-in-query", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!out.contains(secret) && !err.contains(secret), "`{secret}` printed:\n{out}{err}");
    }
    assert!(out.contains("X-Salpre-Key") && out.contains("authorization") && out.contains("signed yes"), "{out}");
}

#[test]
fn check_prints_each_route_filter_and_what_it_omits_and_masks() {
    let dir = temp_dir();
    let path = dir.path().join("filters.toml");
    std::fs::write(
        &path,
        r#"
[routes.analytics]
url = "http://127.0.0.1:9/analytics"
filter = { all = [ { exact = { "data.direction" = "inbound" } }, { not = { prefix = { "data.metadata.campaign" = "spring_" } } } ] }
omit = ["data.transcript", "data.vendor_extra"]
mask_numbers = true

[routes.plain]
url = "http://127.0.0.1:9/plain"
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    for line in [
        r#"    filter all(exact(data.direction = "inbound"), not(prefix(data.metadata.campaign = "spring_")))"#,
        "    omit [data.transcript, data.vendor_extra], mask_numbers yes",
        "    filter none (every event)",
        "    omit [], mask_numbers no",
    ] {
        assert!(out.lines().any(|l| l == line), "`{line}` missing from:\n{out}");
    }

    // Every problem at once, each under the key of its expression.
    std::fs::write(
        &path,
        r#"
[routes.analytics]
url = "http://127.0.0.1:9/analytics"
filter = { any = [ { exact = { "data.directon" = "inbound" } }, { glob = { type = "call.*" } }, { all = [] } ] }
omit = ["id", "data.nope"]
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    for needle in [
        "routes.analytics.filter.any[0].exact: no canonical event has `data.directon`",
        "routes.analytics.filter.any[1].glob: unknown filter dialect",
        "routes.analytics.filter.any[2].all: needs at least one filter expression",
        "routes.analytics.omit: `id` is required by CloudEvents and cannot be omitted",
        "routes.analytics.omit: no canonical event has `data.nope`",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}

#[test]
fn normalize_prints_json_lines_or_the_schema_errors() {
    let dir = temp_dir();
    let good = dir.path().join("good.json");
    std::fs::write(&good, fixture("vox/doc-call_ended.json")).unwrap();
    let (code, out, err) = run(&["normalize", "--vendor", "vox", good.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let types: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["call.ended", "transcript.final", "call.recording.ready", "call.analyzed"]);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"event":"call_started","call":{}}"#).unwrap();
    let (code, out, err) = run(&["normalize", "--vendor", "vox", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("/call") && err.contains("call_id"), "{err}");
}

/// A PostgreSQL database, dropped on drop.
struct PgDatabase(String);

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = crate::support::psql(
            &crate::support::pg_admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0),
        );
    }
}

/// A database of its own on `CALLGATE_TEST_PG_URL`, or `None` (after one clear line) when
/// PostgreSQL cannot be reached outside CI; under `CI=true` that is a failure.
fn pg_database(name: &str) -> Option<PgDatabase> {
    let admin = crate::support::pg_admin_url();
    let database = format!("cg_cli_{}_{name}", std::process::id());
    match crate::support::psql(&admin, &format!("DROP DATABASE IF EXISTS {database}"))
        .and_then(|_| crate::support::psql(&admin, &format!("CREATE DATABASE {database}")))
    {
        Ok(_) => Some(PgDatabase(database)),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but PostgreSQL is unreachable at {admin}: {e}")
        }
        Err(e) => {
            eprintln!("PostgreSQL part of the CLI test skipped: {e} (set CALLGATE_TEST_PG_URL)");
            None
        }
    }
}

#[test]
fn store_migrate_moves_a_sqlite_store_into_postgres_once_and_never_prints_the_password() {
    let Some(db) = pg_database("migrate") else { return };
    let database = db.0.clone();
    let admin = crate::support::pg_admin_url();
    let dir = temp_dir();
    let path = dir.path().join("callgate.db");
    // A stopped gateway's store: one pending delivery, one quarantined body.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use callgate::store::{Ingest, NewEvent, Quarantined, Store, sqlite::SqliteStore};
        let store = SqliteStore::open(&path, std::time::Duration::from_secs(5)).unwrap();
        let body = b"{\"call\":1}".to_vec();
        store
            .ingest(Ingest {
                source: "vox".into(),
                digest: callgate::canonical::body_digest(&body),
                body,
                received_at: 1_000,
                events: vec![NewEvent {
                    id: "ev-1".into(),
                    kind: "call.ended".into(),
                    subject: "vox:c1".into(),
                    json: "{\"id\":\"ev-1\"}".into(),
                    routes: vec!["crm".into()],
                    status: None,
                }],
            })
            .await
            .unwrap();
        store
            .quarantine(Quarantined {
                source: "vox".into(),
                vendor: "vox".into(),
                received_at: 1_000,
                status: 400,
                reason: "invalid_json".into(),
                details: "[]".into(),
                body: b"not json".to_vec(),
            })
            .await
            .unwrap();
    });
    // Trust auth ignores the password; it must not show anywhere all the same.
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_password(Some("s3cret-pw")).unwrap();
    url.set_path(&database);
    let from = format!("sqlite://{}", path.display());
    let args = ["store", "migrate", "--from", &from, "--to", url.as_str()];

    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&database) && !out.contains("s3cret-pw") && !err.contains("s3cret-pw"), "{out}{err}");
    for (what, n) in [("payloads", 1), ("events", 1), ("deliveries", 1), ("dead letters", 0), ("quarantined", 1)] {
        let line = out.lines().find(|l| l.trim_start().starts_with(what)).unwrap_or_default();
        assert_eq!(line.split_whitespace().find_map(|w| w.parse::<u64>().ok()), Some(n), "{what}: {out}");
    }
    let rows = crate::support::psql(url.as_str(), "SELECT id, route, subject FROM outbox").unwrap();
    assert_eq!(rows, [["1", "crm", "vox:c1"]]);

    // Again: the target is no longer empty, and nothing is added.
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not empty") && err.contains("payloads"), "{err}");
    assert!(!out.contains("s3cret-pw") && !err.contains("s3cret-pw"), "{out}{err}");

    let (code, _, err) = run(&["store", "migrate", "--from", "postgres://x@h/db", "--to", url.as_str()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--from must be sqlite://PATH") && !err.contains("s3cret-pw"), "{err}");
}
