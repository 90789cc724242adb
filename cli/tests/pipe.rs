//! Output to a reader that goes away (`crewq ... | head -2`) ends the
//! command quietly and successfully, never with a panic (exit 101).

mod common;

#[test]
fn sim_trace_into_a_closed_pipe_exits_cleanly() {
    // The read end closes before the seed has run.
    let output = common::into_a_closed_pipe(&["sim", "--seed", "1", "--trace"]);
    common::succeeded(&output);
}

#[test]
fn demo_tables_into_a_closed_pipe_exit_cleanly() {
    let output = common::into_a_closed_pipe(&["demo"]);
    common::succeeded(&output);
}

#[test]
fn bench_text_into_a_closed_pipe_exits_cleanly() {
    let output = common::into_a_closed_pipe(&["bench", "--tasks", "200"]);
    common::succeeded(&output);
}
