//! The live tail across replicas: a reader on one replica sees the events another replica
//! accepts and the outcomes whichever replica delivered them recorded.

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "tail-replica-t0ken";

fn replica_config(dir: &std::path::Path, receiver: &Receiver) -> String {
    base_config(dir)
        + &format!(
            "\n[admin]\ntoken = \"{TOKEN}\"\n\n[routes.crm]\nurl = \"{}\"\ninclude_test = true\n",
            receiver.url("/crm")
        )
}

/// The messages of an SSE body read so far, as (event, data).
fn messages(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_one_replica_sees_what_another_accepts_and_delivers() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let config = replica_config(dir.path(), &receiver);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Gateway::start(&a_dir, &config).await;
    let b = Gateway::start(&b_dir, &config).await;

    let mut stream = a.http.get(a.ops_url("/v1/admin/stream")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    // B relays only once it has heard that A has a reader.
    b.wait_log("A live tail is open on another replica").await;
    let body = r#"{"event":"call.started","call_id":"across","agent_id":"agt_1","created_at":"2026-06-01T10:00:00Z"}"#;
    let (status, answer) = b.post("oneinbox", body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["ids"][0].as_str().unwrap().to_owned();
    receiver.wait_for("/crm", 1).await;

    let deadline = std::time::Instant::now() + DEADLINE;
    let mut text = String::new();
    loop {
        let seen = messages(&text);
        let accepted = seen.iter().any(|(e, d)| e == "accepted" && d["id"] == id.as_str() && d["source"] == "oneinbox");
        let delivered =
            seen.iter().any(|(e, d)| e == "outcome" && d["event_id"] == id.as_str() && d["outcome"] == "success");
        if accepted && delivered {
            break;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("A's tail never showed B's event and its outcome ({other:?}):\n{text}"),
        }
    }
}
