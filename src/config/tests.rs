use super::*;

struct Vars(&'static [(&'static str, &'static str)]);

impl Environment for Vars {
    fn var(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

fn load(toml: &str) -> Config {
    Config::from_toml(toml, &Vars(&[("TOKEN", "t0k"), ("SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")])).unwrap()
}

fn errors(toml: &str) -> Vec<String> {
    Config::from_toml(toml, &Vars(&[])).unwrap_err().errors.iter().map(ToString::to_string).collect()
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let config = load("");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.max_body_bytes, 1_048_576);
    assert_eq!(config.storage.url.expose(), "sqlite://data/callgate.db");
    assert_eq!(config.storage_url, StorageUrl::Sqlite(PathBuf::from("data/callgate.db")));
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(config.admin.listen.is_none());
    assert!(config.sources.is_empty() && config.routes.is_empty());
    assert_eq!(config.delivery.lease_margin, Duration::from_secs(5));
    assert_eq!((config.storage.pool_size, config.storage.writers), (16, 2));
    assert_eq!(errors("[delivery]\nlease_margin = \"10ms\"\n"), ["delivery.lease_margin: must be at least 1s"]);
}

#[test]
fn a_route_gets_defaults_and_the_standard_retry_schedule() {
    let config = load("[routes.r]\nurl = \"http://127.0.0.1:9/x\"\n");
    let r = &config.routes["r"];
    assert_eq!(r.events, ["*"]);
    assert!(r.sources.is_none() && !r.include_test && r.enabled);
    assert_eq!(r.timeout, Duration::from_secs(10));
    assert_eq!(r.retry_schedule, DEFAULT_SCHEDULE);
    assert!(r.matches("call.ended", "vox", false));
    assert!(!r.matches("call.ended", "vox", true), "test events are excluded by default");
}

#[test]
fn unknown_keys_and_bad_values_are_all_reported_with_their_keys() {
    let e = errors(
        "colour = 1\n[server]\nshade = 1\n[sources.vox]\nvendor = \"vox\"\nbogus = 2\n[sources.x]\nvendor = \"nokia\"\n\
         [routes.r]\nurl = \"http://x\"\ntimeout = 5\n[routes.s]\nurl = \"http://x\"\n[routes.s.retry]\nschedule = [\"5 parsecs\"]\n",
    );
    let keys: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "colour",
            "routes.r.timeout",
            "routes.s.retry.schedule",
            "server.shade",
            "sources.vox.bogus",
            "sources.x.vendor"
        ],
        "{e:#?}"
    );
}

#[test]
fn missing_environment_variables_are_named() {
    let e =
        errors("[routes.r]\nurl = \"http://x/${HOST_VAR}\"\nheaders = { Authorization = \"Bearer ${TOKEN_VAR}\" }\n");
    assert!(e.iter().any(|e| e.starts_with("routes.r.url") && e.contains("HOST_VAR")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("routes.r.headers.Authorization") && e.contains("TOKEN_VAR")), "{e:?}");
}

#[test]
fn environment_variables_are_substituted_and_secrets_never_shown() {
    let config = load(
        "[sources.s]\nvendor = \"salpre\"\nauth = { type = \"bearer\", token = \"${TOKEN}\" }\n\
         [routes.r]\nurl = \"http://user:pw-in-url@x/?token=tok-in-query\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\nsigning_secret = \"${SECRET}\"\n",
    );
    assert_eq!(config.sources["s"].auth, Auth::Bearer { token: Secret::new("t0k") });
    let event = serde_json::json!({});
    assert_eq!(config.routes["r"].headers[0].1.render(&event), "Bearer t0k");
    let shown = format!("{config:?}");
    for secret in ["t0k", "MfKQ9r8", "pw-in-url", "tok-in-query"] {
        assert!(!shown.contains(secret), "`{secret}` in {shown}");
    }
}

#[test]
fn routes_are_checked_against_sources_and_reserved_headers() {
    let e = errors(
        "[sources.vox]\nvendor = \"vox\"\n[routes.r]\nurl = \"ftp://x\"\nsources = [\"vox\", \"nope\"]\nevents = [\"Call Ended\"]\n\
         headers = { User-Agent = \"me\", \"bad header\" = \"x\", X-T = \"{{unclosed\" }\nsigning_secret = \"whsec_!!\"\n",
    );
    let text = e.join("\n");
    for needle in [
        "routes.r.url: must be an http or https URL",
        "routes.r.sources: no source named `nope`",
        "routes.r.events: `Call Ended`",
        "routes.r.headers.User-Agent: this header is set by callgate",
        "routes.r.headers.bad header: not a valid header name",
        "routes.r.headers.X-T: unclosed",
        "routes.r.signing_secret",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from\n{text}");
    }
}

#[test]
fn header_templates_render_fields_and_missing_ones_as_empty() {
    let t =
        HeaderTemplate::parse("{{type}}:{{data.call_id}}:{{data.metadata.campaign}}:{{data.none}}:{{data.n}}").unwrap();
    let event =
        serde_json::json!({"type": "call.ended", "data": {"call_id": "c1", "metadata": {"campaign": "봄"}, "n": 5}});
    assert_eq!(t.render(&event).as_bytes(), "call.ended:c1:봄::5".as_bytes());
    assert!(HeaderTemplate::parse("{{}}").is_err());
    assert!(HeaderTemplate::parse("{{a..b}}").is_err());
}

#[test]
fn glob_patterns_match_canonical_types() {
    let config =
        load("[routes.r]\nurl = \"http://x\"\nevents = [\"call.*\", \"transcript.final\"]\ninclude_test = true\n");
    let r = &config.routes["r"];
    assert!(r.matches("call.ended", "a", false) && r.matches("call.recording.ready", "a", true));
    assert!(r.matches("transcript.final", "a", false) && !r.matches("transcript.partial", "a", false));
    assert!(!r.matches("sms.received", "a", false));
}

#[test]
fn call_completed_is_received_only_by_routes_that_name_it_and_settle_is_checked() {
    let config = load(
        "[routes.all]\nurl = \"http://x\"\nevents = [\"*\"]\n[routes.calls]\nurl = \"http://x\"\nevents = [\"call.*\"]\n\
         [routes.done]\nurl = \"http://x\"\nevents = [\"call.completed\"]\n",
    );
    assert!(!config.routes["all"].matches("call.completed", "a", false), "a wildcard written before it existed");
    assert!(!config.routes["calls"].matches("call.completed", "a", false));
    assert!(config.routes["calls"].matches("call.ended", "a", false));
    assert!(config.routes["done"].matches("call.completed", "a", false));
    assert!(!config.routes["done"].matches("call.ended", "a", false));
    assert_eq!(load("").calls.settle, Duration::from_secs(600), "10m by default");
    assert_eq!(load("[calls]\nsettle = \"90s\"\n").calls.settle, Duration::from_secs(90));
    assert_eq!(errors("[calls]\nsettle = \"0s\"\n"), ["calls.settle: must be greater than 0"]);
    assert!(errors("[calls]\nwait = \"1m\"\n")[0].starts_with("calls"), "unknown keys are named");
}

#[test]
fn an_empty_admin_token_is_rejected_like_an_empty_source_secret() {
    assert_eq!(
        errors("[admin]\ntoken = \"\"\n"),
        ["admin.token: the token is empty (remove the key to turn the admin API off)"]
    );
    let e = Config::from_toml("[admin]\ntoken = \"${EMPTY}\"\n", &Vars(&[("EMPTY", " ")])).unwrap_err();
    assert_eq!(e.errors[0].key, "admin.token");
}

#[test]
fn the_live_tail_buffer_defaults_to_a_thousand_messages_within_bounds() {
    assert_eq!(load("").admin.stream_buffer, 1000);
    assert_eq!(load("[admin]\nstream_buffer = 2\n").admin.stream_buffer, 2);
    for bad in ["1", "100001"] {
        assert_eq!(
            errors(&format!("[admin]\nstream_buffer = {bad}\n")),
            ["admin.stream_buffer: must be between 2 and 100000"]
        );
    }
}

#[test]
fn sources_that_read_bodies_unauthenticated_share_a_bounded_part_of_the_slots() {
    let two_open = "[server]\nmax_concurrent_requests = 300\n[sources.a]\nvendor = \"vox\"\n[sources.b]\nvendor = \"vox\"\n\
                    [sources.c]\nvendor = \"vox\"\nauth = { type = \"bearer\", token = \"${TOKEN}\" }\n";
    assert_eq!(load(two_open).unverified_share(), 100, "300 slots / (2 unverified sources + 1)");
    let fixed = two_open
        .replace("max_concurrent_requests = 300", "max_concurrent_requests = 300\nmax_unverified_per_source = 7");
    assert_eq!(load(&fixed).unverified_share(), 7);
    assert_eq!(load("[server]\nmax_concurrent_requests = 1\n[sources.a]\nvendor = \"vox\"\n").unverified_share(), 1);
    assert_eq!(
        errors("[server]\nmax_unverified_per_source = 0\n"),
        ["server.max_unverified_per_source: must be greater than 0"]
    );
}

#[test]
fn the_storage_url_names_a_backend_and_never_shows_its_password() {
    let pg = load("[storage]\nurl = \"postgres://gw:${TOKEN}@db.internal:5432/callgate\"\n");
    assert!(matches!(&pg.storage_url, StorageUrl::Postgres(url) if url.expose().contains(":t0k@")));
    let shown = format!("{:?} {:?} {}", pg.storage, pg.storage_url, pg.storage_url.redacted());
    assert!(!shown.contains("t0k"), "{shown}");
    assert!(shown.contains("db.internal"), "{shown}");
    for bad in ["mysql://x/y", "sqlite://", "postgres://"] {
        let e = errors(&format!("[storage]\nurl = \"{bad}\"\n"));
        assert!(e.len() == 1 && e[0].starts_with("storage.url: "), "{bad}: {e:?}");
    }
}

#[test]
fn a_retell_source_takes_its_api_key_from_the_environment_and_shares_the_unverified_slots() {
    let config = load(
        "[server]\nmax_concurrent_requests = 300\n[sources.r]\nvendor = \"retell\"\n\
         auth = { type = \"retell\", api_key = \"${TOKEN}\" }\n[sources.a]\nvendor = \"vox\"\n",
    );
    assert_eq!(config.sources["r"].auth, Auth::Retell { api_key: Secret::new("t0k") });
    assert_eq!(config.unverified_share(), 100, "the retell source reads its body before it is verified");
    assert!(!format!("{config:?}").contains("t0k"));
    let e = errors("[sources.r]\nvendor = \"retell\"\nauth = { type = \"retell\", api_key = \"\" }\n");
    assert_eq!(e, ["sources.r.auth: the secret is empty"]);
    let e = errors("[sources.r]\nvendor = \"retell\"\nauth = { type = \"retell\", api_key = \"k\", header = \"x\" }\n");
    assert!(e.iter().any(|e| e.starts_with("sources.r") && e.contains("header")), "{e:?}");
}

#[test]
fn an_inbound_lookup_gets_defaults_and_shares_the_routes_header_and_signing_rules() {
    let config = load(
        "[sources.vox]\nvendor = \"vox\"\n[sources.vox.inbound]\nurl = \"http://127.0.0.1:9/lookup\"\n\
         signing_secret = \"${SECRET}\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n\
         fallback = { variables = { customer_name = \"there\" } }\n",
    );
    let inbound = config.sources["vox"].inbound.as_ref().unwrap();
    assert_eq!(inbound.timeout, DEFAULT_INBOUND_TIMEOUT);
    assert_eq!(inbound.signing_secrets.len(), 1);
    assert_eq!(inbound.headers[0].1.render(&serde_json::Value::Null), "Bearer t0k");
    assert_eq!(inbound.fallback.variables["customer_name"], "there");
    assert!(inbound.fallback.metadata.is_empty());
    assert!(!format!("{inbound:?}").contains("t0k"), "secrets stay out of Debug");
    assert!(load("[sources.vox]\nvendor = \"vox\"\n").sources["vox"].inbound.is_none());

    let e = errors(
        "[sources.oi]\nvendor = \"oneinbox\"\n[sources.oi.inbound]\nurl = \"http://x/l\"\n\
         [sources.vox]\nvendor = \"vox\"\n[sources.vox.inbound]\nurl = \"ftp://x\"\ntimeout = \"10s\"\n\
         signing_secret = \"nope\"\nheaders = { Webhook-Id = \"x\" }\nfallback = { colour = 1 }\n",
    );
    let keys: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(keys, ["sources.oi.inbound", "sources.vox.inbound.fallback.colour"], "{e:#?}");
    let e = errors(
        "[sources.vox]\nvendor = \"vox\"\n[sources.vox.inbound]\nurl = \"ftp://x\"\ntimeout = \"10s\"\n\
         signing_secret = \"nope\"\nheaders = { Webhook-Id = \"x\" }\n",
    );
    let keys: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        ["sources.vox.inbound.headers.Webhook-Id", "sources.vox.inbound.signing_secret", "sources.vox.inbound.url",],
        "{e:#?}"
    );
    let e = errors("[sources.vox]\nvendor = \"vox\"\n[sources.vox.inbound]\nurl = \"http://x/l\"\ntimeout = \"10s\"\n");
    assert_eq!(e, ["sources.vox.inbound.timeout: must be shorter than server.request_timeout"]);
}

#[test]
fn dedup_defaults_to_body_and_other_values_are_named_errors() {
    let config = load(
        "[sources.a]\nvendor = \"vox\"\n[sources.b]\nvendor = \"vox\"\ndedup = \"event\"\n[sources.c]\nvendor = \"vox\"\ndedup = \"body\"\n",
    );
    assert_eq!(config.sources["a"].dedup, crate::vendors::Dedup::Body);
    assert_eq!(config.sources["b"].dedup, crate::vendors::Dedup::Event);
    assert_eq!(config.sources["c"].dedup, crate::vendors::Dedup::Body);
    assert_eq!(
        errors("[sources.a]\nvendor = \"vox\"\ndedup = \"Event\"\n[sources.b]\nvendor = \"vox\"\ndedup = \"fuzzy\"\n"),
        [
            "sources.a.dedup: unknown value `Event` (use `body` or `event`)",
            "sources.b.dedup: unknown value `fuzzy` (use `body` or `event`)"
        ]
    );
    assert_eq!(errors("[sources.a]\nvendor = \"vox\"\ndedup = 1\n").len(), 1);
}

#[test]
fn a_route_filter_is_read_from_toml_in_every_dialect() {
    let config = load(
        r#"
[routes.crm]
url = "http://127.0.0.1:9/x"
filter = { all = [ { exact = { "data.direction" = "inbound" } }, { prefix = { "data.metadata.campaign" = "spring_" } } ] }

[routes.dotted]
url = "http://127.0.0.1:9/x"
filter = { any = [ { suffix = { type = ".final" } }, { not = { exact = { data.end.reason = "busy", data.test = "false" } } } ] }
"#,
    );
    assert_eq!(
        config.routes["crm"].filter.as_ref().unwrap().to_string(),
        r#"all(exact(data.direction = "inbound"), prefix(data.metadata.campaign = "spring_"))"#
    );
    // TOML's bare dotted keys are nested tables; they name the same paths as quoted ones.
    assert_eq!(
        config.routes["dotted"].filter.as_ref().unwrap().to_string(),
        r#"any(suffix(type = ".final"), not(exact(data.end.reason = "busy", data.test = "false")))"#
    );
    let inbound = serde_json::json!({"type": "call.ended", "data": {"direction": "inbound", "metadata": {"campaign": "spring_1"}}});
    let outbound = serde_json::json!({"type": "call.ended", "data": {"direction": "outbound", "metadata": {"campaign": "spring_1"}}});
    assert!(config.routes["crm"].passes(&inbound) && !config.routes["crm"].passes(&outbound));
    assert!(load("[routes.r]\nurl = \"http://x\"\n").routes["r"].passes(&outbound), "no filter passes everything");
}

#[test]
fn every_filter_problem_is_reported_at_once_with_the_full_key_of_its_expression() {
    let e = errors(
        r#"
[routes.crm]
url = "http://127.0.0.1:9/x"
filter = { all = [
  { exact = { "data.direction" = "inbound" } },
  { prefix = { "data.directon" = "in" } },
  { regex = { type = "call.*" } },
  { any = [] },
  { not = { exact = { "data.duration_ms" = 42, "data.test" = true, "type" = "" } } },
  { exact = { dataschema = "x", "data.metadata" = "x", "data.transcript" = "x", "data.direction.more" = "x" } },
  { exact = { type = "call.ended" }, prefix = { type = "call." } },
  {},
  { sql = "type = 'x'" },
  { all = { exact = { type = "call.ended" } } },
  { suffix = {} },
  "type = call.ended",
] }

[routes.bare]
url = "http://127.0.0.1:9/x"
filter = "data.direction == inbound"

[routes.anyone]
url = "http://127.0.0.1:9/x"
filter = { any = [] }
"#,
    );
    let want = [
        "routes.anyone.filter.any: needs at least one filter expression",
        "routes.bare.filter: must be a table with one dialect: exact, prefix, suffix, all, any or not",
        "routes.crm.filter.all[11]: must be a table with one dialect: exact, prefix, suffix, all, any or not",
        "routes.crm.filter.all[10].suffix: needs at least one attribute = \"value\"",
        "routes.crm.filter.all[1].prefix: no canonical event has `data.directon`",
        "routes.crm.filter.all[2].regex: unknown filter dialect (use exact, prefix, suffix, all, any or not)",
        "routes.crm.filter.all[3].any: needs at least one filter expression",
        "routes.crm.filter.all[4].not.exact: `data.duration_ms`: values are strings (write \"42\"; it matches 42 in the event)",
        "routes.crm.filter.all[4].not.exact: `data.test`: values are strings (write \"true\"; it matches true in the event)",
        "routes.crm.filter.all[4].not.exact: `type`: the value must not be empty",
        "routes.crm.filter.all[5].exact: `data.direction` is a single value: nothing is below it",
        "routes.crm.filter.all[5].exact: `data.metadata` is an object: filter on a value inside it",
        "routes.crm.filter.all[5].exact: `data.transcript` is an array: it cannot be compared with a string",
        "routes.crm.filter.all[6]: one dialect per expression (found exact, prefix); combine them with `all`",
        "routes.crm.filter.all[7]: an expression needs a dialect: exact, prefix, suffix, all, any or not",
        "routes.crm.filter.all[8].sql: the CloudEvents SQL dialect is not supported (use exact, prefix, suffix, all, any or not)",
        "routes.crm.filter.all[9].all: must be an array of filter expressions",
    ];
    for line in want {
        assert!(e.iter().any(|e| e == line), "missing `{line}` in {e:#?}");
    }
    assert!(
        e.iter().any(|e| e
            .starts_with("routes.crm.filter.all[5].exact: `dataschema` is not an attribute of a canonical event (")),
        "{e:#?}"
    );
    assert_eq!(e.len(), want.len() + 1, "nothing else, nothing twice: {e:#?}");
}

#[test]
fn omit_and_mask_numbers_are_read_and_checked() {
    let config = load(
        "[routes.analytics]\nurl = \"http://x\"\nomit = [\"data.vendor_extra\", \"data.transcript\", \"subject\", \"data.metadata.email\", \"data.transcript\"]\nmask_numbers = true\n",
    );
    let route = &config.routes["analytics"];
    assert_eq!(route.minimise.omit, ["data.metadata.email", "data.transcript", "data.vendor_extra", "subject"]);
    assert!(route.minimise.mask_numbers && !route.minimise.is_empty());
    assert!(load("[routes.r]\nurl = \"http://x\"\n").routes["r"].minimise.is_empty(), "the default sends events whole");

    let e = errors(
        "[routes.r]\nurl = \"http://x\"\nomit = [\"id\", \"type\", \"source\", \"specversion\", \"data.transcript.text\", \"data.nope\", \"\", \"traceparent\"]\n",
    );
    let want = [
        "routes.r.omit: `traceparent` is not an attribute of a canonical event",
        "routes.r.omit: `id` is required by CloudEvents and cannot be omitted",
        "routes.r.omit: `type` is required by CloudEvents and cannot be omitted",
        "routes.r.omit: `source` is required by CloudEvents and cannot be omitted",
        "routes.r.omit: `specversion` is required by CloudEvents and cannot be omitted",
        "routes.r.omit: `data.transcript` is an array: address it whole",
        "routes.r.omit: no canonical event has `data.nope`",
        "routes.r.omit: `` is not a dotted path such as `data.direction`",
    ];
    for line in want {
        assert!(e.iter().any(|e| e.starts_with(line)), "missing `{line}` in {e:#?}");
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
    let e = errors("[routes.r]\nurl = \"http://x\"\nmask_numbers = \"yes\"\n");
    assert!(e.len() == 1 && e[0].starts_with("routes.r.mask_numbers: "), "{e:?}");
}
