//! The resident memory (`VmRSS`) of the server processes named by `--server-pid`, read from
//! `/proc/PID/status` at the three moments the report compares.

/// The resident memory of `pid` in bytes; `None` when it cannot be read (no such process,
/// another user's, not Linux).
pub(crate) fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The resident memory of each pid, in order.
pub(crate) fn sample(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|pid| vm_rss(*pid)).collect()
}

/// `VmRSS:  1234 kB` in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tfloodgate\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(vm_rss(std::process::id()).is_some_and(|bytes| bytes > 0));
        assert_eq!(sample(&[u32::MAX]), [None]);
    }
}
