#!/usr/bin/env python3
"""Write the wire fixtures that prove crewq reads and writes the seed's JSON.

The seed (shared/baselines/seed_python) is the first article's Python code;
its pydantic models `AgentTask` and `TaskResult` define the wire format crewq
keeps. This script imports those models and writes, into the fixture folder:

  task_<name>.json, result_<name>.json
      exactly `model_dump_json()` of tasks and results the seed builds
      (the bytes a seed producer puts in a stream entry's `data` field);
  dlq_seed.json
      the fields of a DLQ entry as the seed's consumer writes it (values as
      redis-py sends them: an int becomes its decimal text);
  verdicts.json
      raw stream fields, each with what the seed's decoding
      (`task_from_stream`, `TaskResult.model_validate_json`) made of it:
      accepted, JSON error, validation error, or (JSON that is not an
      object, which `AgentTask(**json.loads(raw))` cannot take) type error;
  timestamps.json
      microseconds since the epoch and Python's `isoformat()` of that time;

and then checks every `crewq_*.json` in the folder (pinned by crewq's
`wire_compat` tests: what crewq itself emits) with the seed's rules: it must
validate, and pydantic must re-emit it byte for byte.

The fixtures are committed, so crewq's tests need no Python. Run it again
after changing the cases (and with `--check` to only check crewq's files):

    pip install pydantic
    python3 scripts/gen_seed_fixtures.py [--seed DIR] [--out DIR] [--check]

`--seed` defaults to ../shared/baselines/seed_python beside the repository
(where CI and the developers have shared/); `--out` to
core/tests/fixtures/seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CREATED = "2026-11-22T08:00:00.123456+00:00"
COMPLETED = "2026-11-22T08:00:01.654321+00:00"


def tasks(AgentTask):
    """The seed's tasks, named; created_at pinned so reruns give the same bytes."""
    return {
        # payload, priority, max_retries and trace_id left to their defaults
        "defaults": AgentTask(
            task_id="t-defaults", agent_type="research", action="analyze",
            created_at=CREATED,
        ),
        "full": AgentTask(
            task_id="research-1a2b3c4d", agent_type="research",
            action="analyze_codebase",
            payload={"repo": "https://example.invalid/r.git", "depth": "security"},
            priority=7, max_retries=5, created_at=CREATED,
            trace_id="0123456789ab",
        ),
        "unicode": AgentTask(
            task_id="t-ünï-😀", agent_type="recherche", action="résumer",
            payload={
                "text": "héllo wörld — 日本語 😀",
                "escapes": "quote \" backslash \\ slash / tab \t newline \n",
                "control": "\x00\x01\x1f\x7f",
                "separators": "\u2028\u2029",
                "html": "</script><b>&amp;</b>",
                "ключ": "значение",
            },
            created_at=CREATED, trace_id="trace-ß",
        ),
        "nested": AgentTask(
            task_id="t-nested", agent_type="report", action="generate_summary",
            payload={
                "zeta": 1,
                "alpha": {"list": [1, "two", None, True, False, {"deep": [[], {}]}]},
                "findings": [
                    {"files_analyzed": 47, "ratio": 0.25},
                    {"sources": ["docs/page1.md", "docs/page2.md"]},
                ],
                "empty_list": [],
                "empty_obj": {},
                "negative": -42,
                "i64_max": 2**63 - 1,
                "i64_min": -(2**63),
                "u64_max": 2**64 - 1,
            },
            priority=3, created_at=CREATED, trace_id="wf-1700000000",
        ),
        "null_trace_bounds": AgentTask(
            task_id="t-bounds", agent_type="review", action="check",
            payload={"a": 1}, priority=10, max_retries=0, created_at=CREATED,
            trace_id=None,
        ),
        "priority_zero_whole_second": AgentTask(
            task_id="t-whole", agent_type="research", action="search_docs",
            priority=0, created_at="2026-11-22T08:00:00+00:00",
        ),
        # Where pydantic's formatting differs from serde_json's (exponents).
        "floats": AgentTask(
            task_id="t-floats", agent_type="research", action="score",
            payload={
                "plain": [0.1, 2.5, 3.0, -0.0, 123456.789],
                "exponents": [1e-7, 1e21, 1e300, 5e-324, 1.7976931348623157e308],
            },
            created_at=CREATED,
        ),
        # An integer wider than 64 bits: Python keeps it exact.
        "big_int": AgentTask(
            task_id="t-bigint", agent_type="research", action="count",
            payload={"n": 2**70, "u64_overflow": 2**64}, created_at=CREATED,
        ),
    }


def results(TaskResult):
    return {
        "defaults": TaskResult(
            task_id="t-defaults", agent_type="research", status="success",
            completed_at=COMPLETED,
        ),
        "success_output": TaskResult(
            task_id="research-1a2b3c4d", agent_type="research", status="success",
            output={
                "findings": ["Found 3 security issues", "2 performance bottlenecks"],
                "files_analyzed": 47,
            },
            duration_ms=2003, completed_at=COMPLETED,
        ),
        "failure": TaskResult(
            task_id="t-fail", agent_type="research", status="failure",
            error="Unknown action: dance", duration_ms=12, completed_at=COMPLETED,
        ),
        "skipped": TaskResult(
            task_id="t-skip", agent_type="review", status="skipped",
            output={}, completed_at=COMPLETED,
        ),
        "unicode": TaskResult(
            task_id="t-ü", agent_type="recherche", status="failure",
            output={"partiel": "données 😀"}, error="échec: «timeout»\n",
            duration_ms=1, completed_at=COMPLETED,
        ),
    }


def task_verdict_inputs():
    """Stream fields a worker may find: what does the seed make of each?"""
    base = {"task_id": "t1", "agent_type": "research", "action": "analyze"}

    def data(**over):
        obj = dict(base)
        for k, v in over.items():
            if v is DROP:
                obj.pop(k)
            else:
                obj[k] = v
        return {"data": json.dumps(obj)}

    return {
        "minimal": data(),
        "missing_data_field": {"other": "x"},
        "bad_json": {"data": "{not json"},
        "truncated_json": {"data": '{"task_id": "t1", "agent_type"'},
        "not_an_object": {"data": "[1, 2]"},
        "json_string": {"data": '"t1"'},
        "empty_data": {"data": ""},
        "missing_task_id": data(task_id=DROP),
        "missing_action": data(action=DROP),
        "task_id_not_string": data(task_id=1),
        "priority_10": data(priority=10),
        "priority_11": data(priority=11),
        "priority_negative": data(priority=-1),
        "priority_fraction": data(priority=10.5),
        "priority_string": data(priority="5"),
        "priority_bool": data(priority=True),
        "priority_whole_float": data(priority=5.0),
        "payload_null": data(payload=None),
        "payload_list": data(payload=[1, 2]),
        "payload_string": data(payload="x"),
        "trace_id_number": data(trace_id=5),
        "max_retries_negative": data(max_retries=-1),
        "unknown_field": data(extra="ignored"),
        "duplicate_key": {"data": '{"task_id": "a", "task_id": "b", '
                                  '"agent_type": "research", "action": "x"}'},
        "nan_in_payload": {"data": '{"task_id": "t1", "agent_type": "research", '
                                   '"action": "x", "payload": {"v": NaN}}'},
    }


def result_verdict_inputs():
    base = {"task_id": "t1", "agent_type": "research", "status": "success"}

    def data(**over):
        obj = dict(base)
        obj.update(over)
        return {"data": json.dumps(obj)}

    return {
        "minimal": data(),
        "status_failure": data(status="failure", error="x"),
        "status_unknown": data(status="done"),
        "status_uppercase": data(status="SUCCESS"),
        "status_trailing_newline": data(status="success\n"),
        "output_list": data(output=[1]),
        "duration_negative": data(duration_ms=-5),
    }


class _Drop:
    pass


DROP = _Drop()


def verdict(fn, fields):
    """What the seed's decoding does with these stream fields."""
    from pydantic import ValidationError

    try:
        fn(fields)
    except json.JSONDecodeError as e:
        return {"seed": "json_error", "detail": str(e)}
    except TypeError as e:
        # task_from_stream does AgentTask(**json.loads(raw)): JSON that is not
        # an object fails before pydantic sees it.
        return {"seed": "type_error", "detail": str(e)}
    except ValidationError as e:
        return {"seed": "validation_error",
                "detail": [err["type"] + " at " + ".".join(map(str, err["loc"]))
                           for err in e.errors()]}
    return {"seed": "accepted"}


def timestamps():
    micros = [
        0,
        1_000_000,  # whole second: isoformat drops the fraction
        1_704_067_200_000_000,  # 2024-01-01T00:00:00
        1_709_164_800_000_001,  # 2024-02-29, leap day, one microsecond
        1_795_334_400_123_456,
        1_795_334_400_001_000,  # a whole millisecond keeps six digits
        4_102_444_799_999_999,  # 2099-12-31T23:59:59.999999
        951_782_400_500_000,  # 2000-02-29T00:00:00.5
        253_402_300_799_000_000,  # 9999-12-31T23:59:59
    ]
    return [[m, (EPOCH + timedelta(microseconds=m)).isoformat()] for m in micros]


def write(path: Path, text: str):
    # Exactly the text: no trailing newline, so the file is the wire bytes.
    path.write_bytes(text.encode("utf-8"))


def check_crewq(out: Path, AgentTask, TaskResult, task_from_stream) -> int:
    failures = 0
    for path in sorted(out.glob("crewq_*.json")):
        text = path.read_bytes().decode("utf-8")
        try:
            if path.name.startswith("crewq_task_"):
                model = task_from_stream({"data": text})
            elif path.name.startswith("crewq_result_"):
                model = TaskResult.model_validate_json(text)
            else:
                continue
        except Exception as e:  # noqa: BLE001 - report any rejection
            print(f"FAIL {path.name}: the seed rejects it: {e}")
            failures += 1
            continue
        again = model.model_dump_json()
        if again != text:
            print(f"FAIL {path.name}: pydantic re-emits different bytes:\n"
                  f"  crewq:  {text}\n  seed:   {again}")
            failures += 1
        else:
            print(f"ok   {path.name}: the seed accepts it and re-emits the same bytes")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=Path,
                        default=REPO.parent / "shared" / "baselines" / "seed_python")
    parser.add_argument("--out", type=Path,
                        default=REPO / "core" / "tests" / "fixtures" / "seed")
    parser.add_argument("--check", action="store_true",
                        help="only check crewq_*.json; write nothing")
    args = parser.parse_args()

    if not (args.seed / "agent_queue" / "models.py").is_file():
        print(f"no seed models at {args.seed}/agent_queue/models.py: pass --seed",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.seed))
    from agent_queue.models import AgentTask, TaskResult, task_from_stream, task_to_stream

    out: Path = args.out
    if not args.check:
        out.mkdir(parents=True, exist_ok=True)
        for name, task in tasks(AgentTask).items():
            # task_to_stream is the seed's own encoding: {"data": model_dump_json()}
            write(out / f"task_{name}.json", task_to_stream(task)["data"])
        for name, result in results(TaskResult).items():
            write(out / f"result_{name}.json", result.model_dump_json())

        failed = tasks(AgentTask)["full"]
        # As consumer.py's _handle_failure writes it; redis-py sends an int
        # field value as its decimal text.
        dlq = {"task": failed.model_dump_json(), "error": "boom", "retries": str(3)}
        write(out / "dlq_seed.json", json.dumps(dlq, ensure_ascii=False, indent=1))

        verdicts = {
            "task": {name: {"fields": fields, **verdict(task_from_stream, fields)}
                     for name, fields in task_verdict_inputs().items()},
            "result": {name: {"fields": fields,
                              **verdict(lambda f: TaskResult.model_validate_json(
                                  f["data"]), fields)}
                       for name, fields in result_verdict_inputs().items()},
        }
        write(out / "verdicts.json",
              json.dumps(verdicts, ensure_ascii=False, indent=1) + "\n")
        write(out / "timestamps.json", json.dumps(timestamps(), indent=1) + "\n")
        print(f"wrote fixtures to {out}")

    failures = check_crewq(out, AgentTask, TaskResult, task_from_stream)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
