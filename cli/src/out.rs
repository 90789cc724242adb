//! Writing to stdout when the reader may go away: `crewq ... | head -2`
//! closes the pipe early, and `println!` would panic (exit 101) on the
//! broken pipe. A reader that stopped reading wanted no more: that is not
//! an error.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write found the reader gone.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes; a closed pipe is quietly fine (see
/// [`closed`]).
///
/// # Errors
///
/// Any other write error (a full disk under a redirect).
pub fn emit(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Whether the reader of stdout went away: printing more with `println!`
/// would panic, so a caller stops writing.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `value` as one line of JSON.
pub fn json_line(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(value)? + "\n")
}
