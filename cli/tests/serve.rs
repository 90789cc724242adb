//! `crewq serve` on a private Redis: `/metrics` parses as the Prometheus
//! text format and its gauges are `Monitor`'s numbers; the JSON API shows
//! the same numbers, lists, inspects, replays and purges dead letters and
//! finds tasks; shared rate limits show as `crewq_rate_*` gauges and in
//! the API; requests naming another host, or posting anything but
//! JSON, are refused.

mod common;

use common::served::Served;
use common::{Crew, agent, prometheus};
use crewq_core::monitor::{AgentStats, Monitor};
use std::time::Duration;

use crewq_core::{Broker, DeadLetterReason, RateAcquire, RateLimit, WireErrorKind};
use serde_json::{Value, json};

/// The crew: research with 5 tasks (2 held by worker-1) and two dead
/// letters; review with 3 tasks undelivered and a poison dead letter;
/// report with no streams at all.
async fn crew() -> (Crew, String) {
    let crew = Crew::start();
    crew.tasks("research", 5).await;
    crew.read("research", "worker-1", 2).await;
    crew.tasks("review", 3).await;
    let replayable = crew
        .dead_letter("research", "t-dead", "wf-9", DeadLetterReason::MaxRetries)
        .await;
    crew.dead_letter("research", "t-dead-2", "wf-9", DeadLetterReason::MaxRetries)
        .await;
    crew.dead_letter(
        "review",
        "r-poison",
        "wf-9",
        DeadLetterReason::Poison(WireErrorKind::InvalidTask),
    )
    .await;
    (crew, replayable.to_string())
}

const AGENTS: [&str; 3] = ["research", "review", "report"];

async fn monitor_stats(crew: &Crew) -> Vec<AgentStats> {
    let broker = crew.server.broker().await;
    let agents: Vec<_> = AGENTS.iter().map(|a| agent(a)).collect();
    Monitor::new(&broker, crew.keyspace())
        .stats(&agents)
        .await
        .expect("stats")
}

/// Monitor's numbers as JSON without the idle times, which grow between
/// two reads.
fn without_idle(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| !key.ends_with("idle_ms"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

fn oldest_idle_ms(agent: &AgentStats) -> u128 {
    agent
        .groups
        .iter()
        .filter_map(|g| g.oldest_pending_idle)
        .max()
        .map_or(0, |idle| idle.as_millis())
}

#[tokio::test]
async fn metrics_gauges_are_monitors_numbers() {
    let (crew, _) = crew().await;
    let served = Served::start(&crew, &AGENTS);
    let before = monitor_stats(&crew).await;
    let reply = served.get("/metrics");
    let after = monitor_stats(&crew).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        without_idle(json!(before)),
        without_idle(json!(after)),
        "the crew stood still"
    );
    let scrape = prometheus::parse(&reply.body);
    for (name, kind) in [
        ("crewq_queue_length", "gauge"),
        ("crewq_queue_lag", "gauge"),
        ("crewq_queue_pending", "gauge"),
        ("crewq_queue_oldest_pending_idle_seconds", "gauge"),
        ("crewq_consumers", "gauge"),
        ("crewq_dead_letters", "gauge"),
        ("crewq_delayed", "gauge"),
        ("crewq_queue_appended_total", "counter"),
    ] {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    let mut checked = 0;
    for (old, stats) in before.iter().zip(&after) {
        let labels = [("agent_type", stats.agent_type.as_str())];
        let value = |name: &str| scrape.value(name, &labels);
        let lag = if stats.groups.is_empty() {
            stats.tasks.length
        } else {
            stats
                .groups
                .iter()
                .map(|g| g.lag.expect("Redis 7 knows the lag"))
                .sum()
        };
        let pending: u64 = stats.groups.iter().map(|g| g.pending).sum();
        let consumers: usize = stats.groups.iter().map(|g| g.consumers.len()).sum();
        assert_eq!(value("crewq_queue_length"), stats.tasks.length as f64);
        assert_eq!(value("crewq_queue_lag"), lag as f64);
        assert_eq!(value("crewq_queue_pending"), pending as f64);
        assert_eq!(value("crewq_consumers"), consumers as f64);
        assert_eq!(value("crewq_dead_letters"), stats.dlq_length as f64);
        assert_eq!(value("crewq_delayed"), stats.delayed_length as f64);
        assert_eq!(
            value("crewq_queue_appended_total"),
            stats.tasks.entries_added as f64
        );
        // Read between the two Monitor reads: between their idle times.
        let idle_ms = (value("crewq_queue_oldest_pending_idle_seconds") * 1000.0).round() as u128;
        assert!(
            (oldest_idle_ms(old)..=oldest_idle_ms(stats)).contains(&idle_ms),
            "{}: idle {idle_ms} ms, Monitor read {} then {} ms",
            stats.agent_type,
            oldest_idle_ms(old),
            oldest_idle_ms(stats)
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
    // The set-up is what the checks above claim to cover.
    let research = &after[0];
    assert_eq!(
        (
            research.tasks.length,
            research.dlq_length,
            research.groups[0].pending
        ),
        (5, 2, 2)
    );
    assert!(oldest_idle_ms(research) < 60_000);
    assert!(!after[2].tasks.exists, "report has no stream");
}

#[tokio::test]
async fn the_api_shows_the_numbers_and_replays_and_purges_dead_letters() {
    let (crew, replayable) = crew().await;
    let served = Served::start(&crew, &AGENTS);

    let stats = served.get("/api/stats").ok_json();
    let monitor = monitor_stats(&crew).await;
    let mut shown = stats.clone();
    for agent in shown.as_array_mut().expect("a list") {
        agent.as_object_mut().expect("an object").remove("summary");
    }
    assert_eq!(without_idle(shown), without_idle(json!(monitor)));
    assert_eq!(
        without_idle(stats[0]["summary"].clone()),
        json!({"lag": 3, "pending": 2, "consumers": 1})
    );
    assert_eq!(
        without_idle(stats[1]["summary"].clone()),
        json!({"lag": 3, "pending": 0, "consumers": 0})
    );

    let listed = served.get("/api/dlq?agent=research").ok_json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|l| l["task_id"].as_str())
        .collect();
    assert_eq!(ids, ["t-dead", "t-dead-2"]);
    assert_eq!(
        served.get("/api/dlq").ok_json().as_array().map(Vec::len),
        Some(3),
        "every served agent type's"
    );
    let shown = served
        .get(&format!("/api/dlq/research/{replayable}"))
        .ok_json();
    assert_eq!(shown["task_id"], "t-dead");
    assert_eq!(shown["task"]["trace_id"], "wf-9");

    // Replay moves the letter back to its task stream.
    let replayed = served
        .post(
            "/api/dlq/replay",
            &json!({"agent": "research", "id": replayable}),
        )
        .ok_json();
    assert_eq!(replayed["task_id"], "t-dead");
    let keyspace = crew.keyspace();
    assert_eq!(crew.xlen(&keyspace.dlq(&agent("research"))).await, 1);
    assert_eq!(crew.xlen(&keyspace.tasks(&agent("research"))).await, 6);
    let found = served.get("/api/task?id=t-dead").ok_json();
    assert_eq!(found[0]["place"]["state"], "waiting", "{found}");
    assert_eq!(found[0]["place"]["entry_id"], replayed["new_entry_id"]);
    let again = served.post(
        "/api/dlq/replay",
        &json!({"agent": "research", "id": replayable}),
    );
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(again.json()["error"].is_string());

    // A poison letter is not replayed; purge deletes.
    let poison = served.get("/api/dlq?agent=review").ok_json()[0]["entry_id"].clone();
    let refused = served.post("/api/dlq/replay", &json!({"agent": "review", "id": poison}));
    assert_eq!(refused.status, 409, "{}", refused.body);
    let purged = served
        .post("/api/dlq/purge", &json!({"agent": "review", "id": poison}))
        .ok_json();
    assert_eq!(purged, json!({"purged": 1}));
    assert_eq!(crew.xlen(&keyspace.dlq(&agent("review"))).await, 0);

    // Bad input is a 400, not a crash.
    let bad = served.get("/api/dlq/research/not-an-id");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let trace = served.get("/api/task?id=wf-9&trace=true").ok_json();
    assert_eq!(trace.as_array().map(Vec::len), Some(2), "{trace}");
}

#[test]
fn with_json_the_first_line_says_where_as_json() {
    let crew = Crew::start();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["serve", "research", "--json", "--listen", "127.0.0.1:0"])
        .args(["--redis", crew.server.url(), "--key-prefix", &crew.prefix])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run crewq serve");
    let mut line = String::new();
    let read = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    );
    let _ = child.kill();
    let _ = child.wait();
    read.expect("a first line");
    let started: Value = serde_json::from_str(&line).expect("a JSON line");
    let listen = started["listen"].as_str().expect("listen");
    assert!(listen.starts_with("127.0.0.1:"), "{started}");
    assert_eq!(started["metrics"], format!("http://{listen}/metrics"));
}

#[tokio::test]
async fn requests_naming_another_host_or_posting_a_form_are_refused() {
    let (crew, replayable) = crew().await;
    let served = Served::start(&crew, &AGENTS);
    assert_eq!(
        served
            .request("GET", "/api/stats", "localhost:9464", None)
            .status,
        200
    );
    // DNS rebinding: a page of evil.example re-pointed at 127.0.0.1.
    let rebound = served.request("GET", "/api/stats", "evil.example:9464", None);
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let body = json!({"agent": "research", "id": replayable}).to_string();
    let rebound = served.request(
        "POST",
        "/api/dlq/replay",
        "evil.example",
        Some(("application/json", &body)),
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    // What a cross-site form may send without a CORS preflight.
    let form = served.request(
        "POST",
        "/api/dlq/replay",
        "127.0.0.1",
        Some(("text/plain", &body)),
    );
    assert_eq!(form.status, 415, "{}", form.body);
    assert_eq!(
        crew.xlen(&crew.keyspace().dlq(&agent("research"))).await,
        2,
        "nothing was replayed"
    );
}

/// Research's workers share a rate limit (two permits running), review is
/// paused by a handler's slow-down, report has neither.
async fn rate_limited(crew: &Crew) {
    let broker = crew.server.broker().await;
    let keyspace = crew.keyspace();
    let limit = RateLimit::new()
        .starts(10, Duration::from_secs(3600))
        .running(4);
    let grant = broker
        .rate_acquire(RateAcquire {
            keys: keyspace.rate(&agent("research")),
            limit,
            permits: vec!["w1/1".to_owned(), "w1/2".to_owned()],
            lease: Duration::from_secs(3600),
        })
        .await
        .expect("acquire");
    assert_eq!(grant.granted, 2);
    broker
        .rate_pause(&keyspace.rate(&agent("review")), Duration::from_secs(600))
        .await
        .expect("pause");
}

#[tokio::test]
async fn rate_limits_show_on_metrics_and_in_the_api() {
    let (crew, _) = crew().await;
    rate_limited(&crew).await;
    let served = Served::start(&crew, &AGENTS);
    let reply = served.get("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let scrape = prometheus::parse(&reply.body);
    for name in [
        "crewq_rate_running",
        "crewq_rate_starts_in_window",
        "crewq_rate_paused_seconds",
        "crewq_rate_running_limit",
        "crewq_rate_starts_limit",
        "crewq_rate_window_seconds",
    ] {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some("gauge"),
            "{name}"
        );
    }
    let research = [("agent_type", "research")];
    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    assert_eq!(value("crewq_rate_running", &research), 2.0);
    assert_eq!(value("crewq_rate_starts_in_window", &research), 2.0);
    assert_eq!(value("crewq_rate_paused_seconds", &research), 0.0);
    assert_eq!(value("crewq_rate_running_limit", &research), 4.0);
    assert_eq!(value("crewq_rate_starts_limit", &research), 10.0);
    assert_eq!(value("crewq_rate_window_seconds", &research), 3600.0);
    let review = [("agent_type", "review")];
    let paused = value("crewq_rate_paused_seconds", &review);
    assert!(paused > 590.0 && paused <= 600.0, "{paused}");
    assert_eq!(value("crewq_rate_running", &review), 0.0);
    let limits = |agent: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.name.ends_with("_limit") && s.labels["agent_type"] == agent)
            .count()
    };
    assert_eq!(limits("review"), 0, "a pause alone has no limits");
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.name.starts_with("crewq_rate_") && s.labels["agent_type"] == "report"),
        "report has no rate limit"
    );

    // The API shows Monitor's rate numbers.
    let stats = served.get("/api/stats").ok_json();
    let monitor = monitor_stats(&crew).await;
    assert_eq!(
        stats[0]["rate"],
        json!({
            "limit": "10/3600000ms, 4 running",
            "starts_limit": 10,
            "window_ms": 3_600_000,
            "running_limit": 4,
            "starts_in_window": 2,
            "running": 2,
            "paused_ms": null,
        })
    );
    assert_eq!(stats[0]["rate"], json!(monitor[0].rate));
    let shown = stats[1]["rate"]["paused_ms"].as_u64().expect("paused");
    assert!((590_000..=600_000).contains(&shown), "{shown}");
    assert_eq!(stats[1]["rate"]["running_limit"], Value::Null);
    assert!(stats[2].get("rate").is_none(), "{}", stats[2]);
}
