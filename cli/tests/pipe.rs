//! Output to a reader that goes away (`crewq ... | head -2`) ends the
//! command quietly and successfully, never with a panic (exit 101).

use std::process::{Command, Stdio};

#[test]
fn sim_trace_into_a_closed_pipe_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(["sim", "--seed", "1", "--trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crewq");
    // Close the read end before the seed has run: every write of the trace
    // finds the pipe broken, as after `head -2` exits.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("crewq ran");
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
