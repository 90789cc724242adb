//! Wire compatibility with the first seed's Python agents, proven against
//! the JSON its pydantic models emitted.
//!
//! `tests/fixtures/seed/` was written by `scripts/gen_seed_fixtures.py`,
//! which imports the seed's own `agent_queue/models.py`:
//!
//! - `task_*.json`, `result_*.json`: `model_dump_json()` of the seed's
//!   tasks and results, byte for byte. Each must decode here, and crewq's
//!   re-encoding must be the same JSON tree (field names, types, values).
//! - `verdicts.json`: stream fields with what the seed's decoding made of
//!   them. crewq must agree, except where it is knowingly stricter, and it
//!   must never accept what the seed refuses.
//! - `crewq_*.json`: what crewq emits, pinned here; the script checked that
//!   the seed accepts each and that pydantic re-emits it byte for byte.
//!   `CREWQ_BLESS=1 cargo test --test wire_compat` rewrites them; then run
//!   `python3 scripts/gen_seed_fixtures.py --check`.
//! - `dlq_seed.json`, `timestamps.json`: a DLQ entry as the seed's consumer
//!   writes it, and Python's `isoformat()` of some times.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crewq_core::{
    DeadLetter, DeadLetterReason, Fields, Origin, StreamId, Task, TaskResult, TaskStatus,
    WireCodec, WireError, WireErrorKind, result_from_fields, result_to_fields, task_from_fields,
    task_to_fields, utc_isoformat,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed")
}

fn read(name: &str) -> String {
    let path = fixtures().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fixture whose name starts with `prefix`: (name, exact text).
fn all(prefix: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = fs::read_dir(fixtures())
        .expect("fixture folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(prefix) && name.ends_with(".json"))
        .map(|name| {
            let text = read(&name);
            (name, text)
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {prefix}*.json fixtures");
    found
}

fn data(json: impl Into<String>) -> Fields {
    Fields::new().with("data", json.into())
}

fn tree(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn text_of(fields: &Fields) -> &str {
    fields.get_str("data").expect("data field")
}

// --- the seed's JSON decodes, and crewq writes the same JSON back ----------

#[test]
fn every_seed_task_decodes_and_reencodes_to_the_same_json_tree() {
    for (name, text) in all("task_") {
        let task: Task = task_from_fields(&data(text.clone()))
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        let again = task_to_fields(&task).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tree(text_of(&again)), tree(&text), "{name}");
    }
}

#[test]
fn every_seed_result_decodes_and_reencodes_to_the_same_json_tree() {
    for (name, text) in all("result_") {
        let result = result_from_fields(&data(text.clone()))
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        let again = result_to_fields(&result).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tree(text_of(&again)), tree(&text), "{name}");
    }
}

/// Where no payload key order or float exponent is involved, crewq's bytes
/// are pydantic's: same field order, separators, escapes, `null`s and
/// timestamps. (A `Value` payload's keys come back sorted, where pydantic
/// keeps insertion order; both read the same.)
#[test]
fn crewq_writes_pydantics_exact_bytes_where_no_key_order_is_involved() {
    for name in [
        "task_defaults.json",
        "task_null_trace_bounds.json",
        "task_priority_zero_whole_second.json",
        "result_defaults.json",
        "result_failure.json",
        "result_skipped.json",
        "result_unicode.json",
    ] {
        let text = read(name);
        let again = if name.starts_with("task_") {
            task_to_fields(&task_from_fields::<Value>(&data(text.clone())).expect("decodes"))
        } else {
            result_to_fields(&result_from_fields(&data(text.clone())).expect("decodes"))
        };
        assert_eq!(text_of(&again.expect("encodes")), text, "{name}");
    }
}

#[test]
fn seed_fields_have_the_expected_values_and_types() {
    let full: Task = task_from_fields(&data(read("task_full.json"))).expect("decodes");
    assert_eq!(full.task_id, "research-1a2b3c4d");
    assert_eq!(full.agent_type, "research");
    assert_eq!(full.action, "analyze_codebase");
    assert_eq!(
        full.payload,
        json!({"repo": "https://example.invalid/r.git", "depth": "security"})
    );
    assert_eq!((full.priority.get(), full.max_retries), (7, 5));
    assert_eq!(full.created_at, "2026-11-22T08:00:00.123456+00:00");
    assert_eq!(full.trace_id.as_deref(), Some("0123456789ab"));

    let defaults: Task = task_from_fields(&data(read("task_defaults.json"))).expect("decodes");
    assert_eq!(defaults.payload, json!({}));
    assert_eq!((defaults.priority.get(), defaults.max_retries), (0, 3));
    assert_eq!(defaults.trace_id, None);

    let unicode: Task = task_from_fields(&data(read("task_unicode.json"))).expect("decodes");
    assert_eq!(unicode.task_id, "t-ünï-😀");
    assert_eq!(unicode.payload["control"], json!("\u{0}\u{1}\u{1f}\u{7f}"));
    assert_eq!(unicode.payload["separators"], json!("\u{2028}\u{2029}"));

    let result = result_from_fields(&data(read("result_success_output.json"))).expect("decodes");
    assert_eq!(result.status, TaskStatus::Success);
    assert_eq!(
        result.output.as_ref().map(|o| &o["files_analyzed"]),
        Some(&json!(47))
    );
    assert_eq!((result.error, result.duration_ms), (None, 2003));
    let skipped = result_from_fields(&data(read("result_skipped.json"))).expect("decodes");
    assert_eq!(
        (skipped.status, skipped.output),
        (TaskStatus::Skipped, Some(json!({})))
    );
}

#[test]
fn seed_payloads_decode_into_typed_structs() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct Analyze {
        repo: String,
        depth: String,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Nested {
        zeta: u8,
        negative: i64,
        i64_min: i64,
        u64_max: u64,
        findings: Vec<BTreeMap<String, Value>>,
    }
    let full: Task<Analyze> = task_from_fields(&data(read("task_full.json"))).expect("typed");
    assert_eq!(full.payload.depth, "security");
    assert!(full.payload.repo.ends_with("r.git"));
    let nested: Task<Nested> = task_from_fields(&data(read("task_nested.json"))).expect("typed");
    assert_eq!((nested.payload.zeta, nested.payload.negative), (1, -42));
    assert_eq!(
        (nested.payload.i64_min, nested.payload.u64_max),
        (i64::MIN, u64::MAX)
    );
    assert_eq!(nested.payload.findings[0]["ratio"], json!(0.25));
    // A payload that does not fit the struct is an invalid task, not a panic.
    let err = task_from_fields::<Analyze>(&data(read("task_defaults.json"))).expect_err("{}");
    assert_eq!(err.kind(), WireErrorKind::InvalidTask);
}

/// Numbers are written as pydantic writes them (serde_json's shortest
/// round-trip form with `e+21` exponents, and its `float_roundtrip` parsing
/// so that a float read from Python is the same float), with one known
/// divergence: integers wider than 64 bits, which serde_json (without its
/// `arbitrary_precision` feature) reads as the nearest f64 and writes back
/// as a float.
#[test]
fn numbers_read_and_write_as_in_python_except_integers_over_64_bits() {
    let floats = read("task_floats.json");
    let task: Task = task_from_fields(&data(floats.clone())).expect("decodes");
    for key in ["plain", "exponents"] {
        let text = serde_json::to_string(&task.payload[key]).expect("encodes");
        assert!(
            floats.contains(&format!(r#""{key}":{text}"#)),
            "{key}: {text}"
        );
    }
    assert!(floats.contains("[1e-7,1e+21,1e+300,5e-324,1.7976931348623157e+308]"));

    let big = read("task_big_int.json");
    assert!(big.contains(r#""n":1180591620717411303424"#));
    let task: Task = task_from_fields(&data(big)).expect("decodes");
    assert!(task.payload["n"].is_f64(), "2**70 fits neither u64 nor i64");
    let again = task_to_fields(&task).expect("encodes");
    assert!(
        text_of(&again).contains(r#""n":1.1805916207174113e+21"#),
        "{}",
        text_of(&again)
    );
}

// --- the seed's verdicts: crewq agrees, or is knowingly stricter -----------

/// How crewq decides a case, as text comparable with the seed's verdicts.
fn crewq_verdict(outcome: Result<(), WireError>) -> &'static str {
    match outcome.map_err(|e| e.kind()) {
        Ok(()) => "accepted",
        Err(WireErrorKind::MissingData) => "missing_data",
        Err(WireErrorKind::InvalidJson) => "invalid_json",
        Err(WireErrorKind::InvalidTask) => "invalid_task",
        Err(WireErrorKind::InvalidResult) => "invalid_result",
        Err(kind) => panic!("unexpected {kind}"),
    }
}

/// What crewq must do with a case the seed decided this way.
fn agreeing(seed: &str, invalid: &'static str) -> &'static str {
    match seed {
        "accepted" => "accepted",
        "json_error" => "invalid_json",
        // `AgentTask(**json.loads(raw))` on JSON that is not an object.
        "type_error" | "validation_error" => invalid,
        other => panic!("unknown seed verdict {other}"),
    }
}

fn check_verdicts(
    model: &str,
    invalid: &'static str,
    decode: impl Fn(&Fields) -> Result<(), WireError>,
    stricter: &[(&str, &str)],
) {
    let verdicts = tree(&read("verdicts.json"));
    let cases = verdicts[model].as_object().expect("cases");
    for (name, case) in cases {
        let fields: Fields = case["fields"]
            .as_object()
            .expect("fields")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned()))
            .collect();
        let seed = case["seed"].as_str().expect("verdict");
        let got = crewq_verdict(decode(&fields));
        let want = stricter
            .iter()
            .find(|(case, _)| case == name)
            .map_or_else(|| agreeing(seed, invalid), |(_, want)| want);
        assert_eq!(got, want, "{model} case {name}: the seed says {seed}");
        if seed != "accepted" {
            assert_ne!(got, "accepted", "{model} case {name}: the seed refuses it");
        }
    }
    for (case, _) in stricter {
        assert!(cases.contains_key(*case), "no verdict {case}");
    }
}

#[test]
fn crewq_decides_task_entries_as_the_seed_does_or_more_strictly() {
    check_verdicts(
        "task",
        "invalid_task",
        |f| task_from_fields::<Value>(f).map(drop),
        &[
            // The seed reads a missing `data` as "{}" and fails validation.
            ("missing_data_field", "missing_data"),
            // pydantic's lax mode coerces these; it never writes them.
            ("priority_string", "invalid_task"),
            ("priority_bool", "invalid_task"),
            ("priority_whole_float", "invalid_task"),
            // pydantic's `int` takes any; crewq's max_retries is a u32.
            ("max_retries_negative", "invalid_task"),
            // Python's json keeps the last of two equal keys; serde refuses.
            ("duplicate_key", "invalid_task"),
            // Python's json reads NaN, which is not JSON.
            ("nan_in_payload", "invalid_json"),
        ],
    );
}

#[test]
fn crewq_decides_result_entries_as_the_seed_does_or_more_strictly() {
    check_verdicts(
        "result",
        "invalid_result",
        |f| result_from_fields(f).map(drop),
        // pydantic's `int` takes any; crewq's duration_ms is a u64.
        &[("duration_negative", "invalid_result")],
    );
}

// --- poison entries ---------------------------------------------------------

#[test]
fn poison_task_entries_get_the_kind_a_worker_dead_letters_them_with() {
    let valid = read("task_full.json");
    let kind = |fields: &Fields| task_from_fields::<Value>(fields).err().map(|e| e.kind());
    assert_eq!(kind(&data(valid.clone())), None);
    assert_eq!(
        kind(&Fields::new().with("task", valid.clone())),
        Some(WireErrorKind::MissingData)
    );
    assert_eq!(kind(&data(&valid[..40])), Some(WireErrorKind::InvalidJson));
    assert_eq!(kind(&data("{not json")), Some(WireErrorKind::InvalidJson));
    let priority_11 = valid.replace(r#""priority":7"#, r#""priority":11"#);
    assert_eq!(kind(&data(priority_11)), Some(WireErrorKind::InvalidTask));
    let no_task_id = valid.replace(r#""task_id":"research-1a2b3c4d","#, "");
    assert_eq!(kind(&data(no_task_id)), Some(WireErrorKind::InvalidTask));

    let padding = "x".repeat(WireCodec::DEFAULT_MAX_BYTES);
    let oversized = valid.replace("security", &padding);
    let err = task_from_fields::<Value>(&data(oversized.clone())).expect_err("oversized");
    match err {
        WireError::Oversized { size, limit } => {
            assert_eq!((size, limit), (oversized.len(), 524_288));
        }
        other => panic!("{other}"),
    }
    // The limit is configurable, and the same entry passes a larger one.
    let roomy = WireCodec::with_max_bytes(1 << 20);
    assert!(roomy.decode_task::<Value>(&data(oversized)).is_ok());
}

#[test]
fn error_messages_say_what_is_wrong() {
    let valid = read("task_full.json");
    let msg = |json: String| {
        task_from_fields::<Value>(&data(json))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let priority = msg(valid.replace(r#""priority":7"#, r#""priority":11"#));
    assert!(
        priority.starts_with("invalid task: priority 11 is out of range 0..=10"),
        "{priority}"
    );
    let missing = msg(valid.replace(r#""task_id":"research-1a2b3c4d","#, ""));
    assert!(
        missing.starts_with("invalid task: missing field `task_id`"),
        "{missing}"
    );
    let json = msg("{not json".into());
    assert!(json.starts_with("`data` is not valid JSON"), "{json}");
    let missing_data = task_from_fields::<Value>(&Fields::new()).expect_err("no data");
    assert_eq!(missing_data.to_string(), "entry has no `data` field");
}

// --- what crewq emits, checked by the seed ----------------------------------

#[derive(Serialize)]
struct Analyze {
    repo: String,
    depth: String,
    files: Vec<String>,
}

/// Tasks and results as crewq builds them, with fixed ids and times.
fn crewq_emitted() -> Vec<(&'static str, String)> {
    let created = utc_isoformat(1_795_334_400_123_456);
    let task = |name: &'static str, fields: Result<Fields, WireError>| {
        (name, text_of(&fields.expect("encodes")).to_owned())
    };
    let defaults = Task::new("research", "analyze", json!({}))
        .task_id("t-crewq-defaults")
        .created_at(utc_isoformat(1_795_334_400_000_000))
        .build()
        .expect("builds");
    let full = Task::new(
        "research",
        "analyze_codebase",
        Analyze {
            repo: "https://example.invalid/r.git".into(),
            depth: "security".into(),
            files: vec!["a.rs".into(), "b/ü.py".into()],
        },
    )
    .task_id("research-0f8e0c5a3b9d4e6f8a7b6c5d4e3f2a1b")
    .created_at(created.clone())
    .priority(10)
    .max_retries(5)
    .trace_id("wf-42")
    .build()
    .expect("builds");
    let unicode = Task::new(
        "recherche",
        "résumer",
        json!({
            "text": "héllo wörld — 日本語 😀",
            "escapes": "quote \" backslash \\ slash / tab \t newline \n",
            "control": "\u{0}\u{1}\u{1f}\u{7f}",
            "separators": "\u{2028}\u{2029}",
            "html": "</script><b>&amp;</b>",
        }),
    )
    .task_id("t-ünï-😀")
    .created_at(created.clone())
    .build()
    .expect("builds");
    let numbers = Task::new(
        "research",
        "score",
        json!({
            "ints": [0, -1, i64::MIN, i64::MAX, u64::MAX],
            "floats": [0.1, 2.5, 3.0, -0.0, 1e-7, 123456.789, 1e15, 1e16, 1e21, 5e-324],
            "nested": {"list": [null, true, false, {"deep": [[], {}]}]},
        }),
    )
    .task_id("t-crewq-numbers")
    .created_at(created)
    .priority(3)
    .build()
    .expect("builds");
    let completed = utc_isoformat(1_795_334_401_654_321);
    let success = TaskResult::success(&full, json!({"findings": ["x"], "n": 47}))
        .duration_ms(2003)
        .completed_at(completed.clone());
    let failure =
        TaskResult::failure(&unicode, "échec: «timeout»\n").completed_at(completed.clone());
    let skipped = TaskResult::skipped(&defaults).completed_at(completed);
    vec![
        task("crewq_task_defaults.json", task_to_fields(&defaults)),
        task("crewq_task_full.json", task_to_fields(&full)),
        task("crewq_task_unicode.json", task_to_fields(&unicode)),
        task("crewq_task_numbers.json", task_to_fields(&numbers)),
        task("crewq_result_success.json", result_to_fields(&success)),
        task("crewq_result_failure.json", result_to_fields(&failure)),
        task("crewq_result_skipped.json", result_to_fields(&skipped)),
    ]
}

#[test]
fn crewq_emits_the_bytes_the_seed_was_shown_to_accept() {
    let bless = std::env::var_os("CREWQ_BLESS").is_some();
    for (name, text) in crewq_emitted() {
        let path = fixtures().join(name);
        if bless {
            fs::write(&path, &text).expect("write fixture");
            continue;
        }
        assert_eq!(
            text,
            read(name),
            "{name}: crewq's encoding changed; if on purpose, rerun with CREWQ_BLESS=1 and \
             check with `python3 scripts/gen_seed_fixtures.py --check`"
        );
    }
}

// --- dead letters -----------------------------------------------------------

#[test]
fn a_seed_dlq_entry_reads_as_a_dead_letter_without_metadata() {
    let entry: BTreeMap<String, String> =
        serde_json::from_str(&read("dlq_seed.json")).expect("fields");
    let fields: Fields = ["task", "error", "retries"]
        .into_iter()
        .map(|k| (k, entry[k].clone()))
        .collect();
    let letter = DeadLetter::from_fields(&fields).expect("reads");
    assert_eq!((letter.error.as_str(), letter.retries), ("boom", 3));
    assert_eq!(
        (&letter.reason, &letter.origin, &letter.dead_lettered_at),
        (&None, &None, &None)
    );
    let task: Task = letter.decode_task().expect("replayable");
    assert_eq!(task.task_id, "research-1a2b3c4d");
}

#[test]
fn crewq_dlq_entries_keep_the_seeds_fields_first_and_the_task_verbatim() {
    // recovery.py replays with AgentTask(**json.loads(msg_data["task"])):
    // `task` must be the task entry's JSON, untouched.
    let original = read("task_full.json");
    let letter = DeadLetter::new(original.clone(), "handler failed", 5)
        .reason(DeadLetterReason::MaxRetries)
        .origin(Origin {
            stream: "agent:tasks:research".into(),
            entry_id: StreamId::new(1_795_334_400_123, 7),
            group: "research-workers".into(),
            consumer: "worker-1".into(),
        })
        .dead_lettered_at(utc_isoformat(1_795_334_402_000_001));
    let fields = letter.to_fields();
    let names: Vec<&str> = fields
        .iter()
        .map(|(n, _)| std::str::from_utf8(n).expect("utf-8"))
        .collect();
    assert_eq!(
        names,
        [
            "task",
            "error",
            "retries",
            "reason",
            "origin_stream",
            "entry_id",
            "group",
            "consumer",
            "dead_lettered_at"
        ]
    );
    assert_eq!(fields.get_str("task"), Some(original.as_str()));
    assert_eq!(fields.get_str("retries"), Some("5"));
    assert_eq!(fields.get_str("entry_id"), Some("1795334400123-7"));
    assert_eq!(
        fields.get_str("dead_lettered_at"),
        Some("2026-11-22T08:00:02.000001+00:00")
    );
    assert_eq!(DeadLetter::from_fields(&fields).expect("reads"), letter);

    // A poison entry goes to the DLQ as it came, bad JSON and all.
    let poison = DeadLetter::new("{not json", "`data` is not valid JSON", 0)
        .reason(DeadLetterReason::Poison(WireErrorKind::InvalidJson));
    assert_eq!(
        poison.to_fields().get_str("reason"),
        Some("poison:invalid_json")
    );
    assert_eq!(poison.to_fields().get_str("task"), Some("{not json"));
}

// --- timestamps ------------------------------------------------------------

#[test]
fn timestamps_are_written_as_python_isoformat_writes_them() {
    let pairs: Vec<(u64, String)> = serde_json::from_str(&read("timestamps.json")).expect("pairs");
    assert!(pairs.len() >= 5);
    for (micros, python) in pairs {
        assert_eq!(utc_isoformat(micros), python, "{micros}");
    }
}
