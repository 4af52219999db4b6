//! What `/proc` tells of a process: its resident memory (`VmRSS` in `/proc/PID/status`) and
//! the CPU time it has used (`utime` + `stime` in `/proc/PID/stat`), read for the server
//! processes of `--server-pid` and for the bench itself at the moments the report compares.

/// Clock ticks per second of `/proc/PID/stat`: the kernel's `USER_HZ`, 100 on every Linux
/// architecture (`sysconf(_SC_CLK_TCK)` is out of reach without `unsafe`).
const USER_HZ: f64 = 100.0;

/// One reading of one process; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    /// Resident memory, bytes.
    pub rss: Option<u64>,
    /// CPU time used since the process started, seconds.
    pub cpu_s: Option<f64>,
}

/// The resident memory of `pid` in bytes; `None` when it cannot be read (no such process,
/// another user's, not Linux).
pub(crate) fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// A reading of each pid, in order.
pub(crate) fn sample(pids: &[u32]) -> Vec<Sample> {
    pids.iter()
        .map(|pid| Sample {
            rss: vm_rss(*pid),
            cpu_s: std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_cpu_ticks)
                .map(|ticks| ticks as f64 / USER_HZ),
        })
        .collect()
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

/// `utime` + `stime` (fields 14 and 15) of `/proc/PID/stat`, in clock ticks. The command
/// name (field 2) is in parentheses and may hold spaces, so fields count from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first.
    let mut fields = after.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
    fn reads_cpu_ticks_past_a_name_with_spaces() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194304 900 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let [this] = sample(&[std::process::id()])[..] else { panic!("one sample") };
        assert!(this.rss.is_some_and(|bytes| bytes > 0));
        assert!(this.cpu_s.is_some());
        assert_eq!(sample(&[u32::MAX]), [Sample::default()]);
    }
}
