//! Peak resident memory, as Linux reports it in `/proc/<pid>/status`.

/// This process's peak resident memory (`VmHWM`) in bytes; `None` where
/// `/proc` is not there (not Linux).
pub fn own_peak_rss_bytes() -> Option<u64> {
    peak_rss_bytes("/proc/self/status")
}

/// `VmHWM` of the status file at `path`, in bytes.
pub fn peak_rss_bytes(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    vm_hwm_bytes(&status)
}

/// The `VmHWM:   1234 kB` line of a status file, in bytes.
fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_a_status_file() {
        let status = "Name:\tcrewq\nVmPeak:\t  99999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_hwm_bytes("Name:\tcrewq\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_peak() {
        assert!(own_peak_rss_bytes().is_some_and(|bytes| bytes > 0));
    }
}
