//! Client-side limits that cap how many connections the benchmark can open: the soft open-file
//! limit (`ulimit -n`) and the ephemeral port range. Read once at start from `/proc`, checked
//! against the plan (a warning names the limit that will be the bottleneck and what to do), and
//! used to explain `EMFILE` / `EADDRNOTAVAIL` failures in the report. The realtime mode, which
//! holds thousands of sockets at once, first raises the soft open-file limit to the hard one.

use serde::{Deserialize, Serialize};

/// File descriptors the process needs besides its sockets (stdio, the runtime, reports).
const FD_HEADROOM: u64 = 64;

/// The limits in force when the run started; `None` when unknown (or unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientLimits {
    /// Soft `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// `net.ipv4.ip_local_port_range`, both ends included.
    pub ephemeral_ports: Option<(u32, u32)>,
}

impl ClientLimits {
    /// Reads `/proc/self/limits` and `/proc/sys/net/ipv4/ip_local_port_range`.
    pub fn read() -> ClientLimits {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        ClientLimits {
            open_files: read("/proc/self/limits").as_deref().and_then(parse_open_files),
            ephemeral_ports: read("/proc/sys/net/ipv4/ip_local_port_range")
                .as_deref()
                .and_then(parse_port_range),
        }
    }

    /// The report's wording of an `EMFILE` failure.
    pub fn open_files_message(&self) -> String {
        match self.open_files {
            Some(limit) => format!("client limit: open files (ulimit -n = {limit})"),
            None => "client limit: open files (ulimit -n)".to_string(),
        }
    }

    /// The report's wording of an `EADDRNOTAVAIL` failure.
    pub fn ephemeral_ports_message(&self) -> String {
        match self.ephemeral_ports {
            Some((low, high)) => format!(
                "client limit: ephemeral ports (range {low}-{high} per source IP; use --source-ips)"
            ),
            None => "client limit: ephemeral ports (per source IP; use --source-ips)".to_string(),
        }
    }

    /// Warnings for a run that may open `connections` sockets spread over `source_ips`
    /// addresses (0: the system's choice, one address).
    pub fn warnings(&self, connections: usize, source_ips: usize) -> Vec<String> {
        let mut warnings = Vec::new();
        let wanted = connections as u64;
        if let Some(limit) = self.open_files
            && wanted + FD_HEADROOM > limit
        {
            warnings.push(format!(
                "up to {wanted} connections, but the open-file limit is {limit} (ulimit -n): \
                 the client will run out of file descriptors first; raise it with \
                 `ulimit -n {}` in this shell, or use fewer connections",
                wanted + FD_HEADROOM
            ));
        }
        if let Some((low, high)) = self.ephemeral_ports {
            let ports = u64::from(high.saturating_sub(low)) + 1;
            let ips = source_ips.max(1) as u64;
            let per_ip = wanted.div_ceil(ips);
            if per_ip > ports {
                let needed = wanted.div_ceil(ports);
                warnings.push(format!(
                    "up to {wanted} connections to one server address, but each source IP has only \
                     {ports} ephemeral ports ({low}-{high}): the client will run out of ports \
                     first; spread them with --source-ips 127.0.0.1-127.0.0.{needed} (loopback \
                     server) or use fewer connections"
                ));
            }
        }
        warnings
    }
}

/// Raises the soft open-file limit of this process to its hard limit, when it is below.
/// Returns a warning when that was needed and failed.
pub(crate) fn raise_open_files() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let (soft, hard) = parse_open_file_limits(&limits)?;
    let (Some(soft), Some(hard)) = (soft, hard) else {
        // Either end unlimited: nothing to raise, or nothing to raise it to.
        return None;
    };
    if soft >= hard {
        return None;
    }
    let why = match rlimit::increase_nofile_limit(hard) {
        Ok(now) if now >= hard => return None,
        Ok(now) => format!("it stayed at {now}"),
        Err(error) => error.to_string(),
    };
    Some(format!(
        "the open-file limit is {soft} and could not be raised to the hard limit {hard} ({why}); \
         run `ulimit -n {hard}` in this shell first"
    ))
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn parse_open_files(text: &str) -> Option<u64> {
    parse_open_file_limits(text)?.0
}

/// The soft and hard limits of "Max open files" in `/proc/self/limits` (`None`: unlimited).
fn parse_open_file_limits(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let mut limit = || -> Option<Option<u64>> {
        match values.next()? {
            "unlimited" => Some(None),
            value => value.parse().ok().map(Some),
        }
    };
    Some((limit()?, limit()?))
}

/// `low high` as in `/proc/sys/net/ipv4/ip_local_port_range`.
fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
";

    #[test]
    fn reads_the_soft_open_file_limit() {
        assert_eq!(parse_open_files(LIMITS), Some(1024));
        assert_eq!(parse_open_files("Max open files  unlimited  unlimited  files\n"), None);
    }

    #[test]
    fn reads_both_open_file_limits() {
        assert_eq!(parse_open_file_limits(LIMITS), Some((Some(1024), Some(524288))));
        assert_eq!(
            parse_open_file_limits("Max open files  4096  unlimited  files\n"),
            Some((Some(4096), None))
        );
        assert_eq!(parse_open_file_limits("Max cpu time  1  2  seconds\n"), None);
    }

    #[test]
    fn raising_the_open_file_limit_leaves_it_at_the_hard_one() {
        // Whatever the limits of the test process, afterwards the soft one is the hard one (or
        // a warning says why not).
        let warning = raise_open_files();
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let (soft, hard) = parse_open_file_limits(&text).unwrap();
        assert!(soft == hard || warning.is_some(), "{soft:?} {hard:?} {warning:?}");
    }

    #[test]
    fn reads_the_port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("junk"), None);
    }

    #[test]
    fn warns_about_the_limit_that_binds() {
        let limits = ClientLimits { open_files: Some(1024), ephemeral_ports: Some((32768, 60999)) };
        assert!(limits.warnings(900, 0).is_empty());
        let files = limits.warnings(2000, 0);
        assert_eq!(files.len(), 1);
        assert!(
            files[0].contains("open-file limit is 1024") && files[0].contains("ulimit -n 2064")
        );
        let roomy = ClientLimits { open_files: Some(1_000_000), ..limits };
        let ports = roomy.warnings(50_000, 1);
        assert_eq!(ports.len(), 1);
        assert!(ports[0].contains("28232 ephemeral ports") && ports[0].contains("127.0.0.2"));
        assert!(roomy.warnings(50_000, 2).is_empty());
    }

    #[test]
    fn failure_messages_name_the_limit() {
        let limits = ClientLimits { open_files: Some(1024), ephemeral_ports: Some((32768, 60999)) };
        assert_eq!(limits.open_files_message(), "client limit: open files (ulimit -n = 1024)");
        assert_eq!(
            limits.ephemeral_ports_message(),
            "client limit: ephemeral ports (range 32768-60999 per source IP; use --source-ips)"
        );
    }
}
