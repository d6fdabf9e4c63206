//! The `callgate` command line: `check` and `normalize`.

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
