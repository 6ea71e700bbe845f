//! What the host kernel says of its CPU (/proc/cpuinfo): the oracle tests compare the executor's
//! and the library's behaviour with.

fn text() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// The host CPU is AMD's.
pub fn is_amd() -> bool {
    text().contains("AuthenticAMD")
}

/// /proc/cpuinfo lists `flag` (e.g. `cpuid_fault`: the host offers CPUID faulting).
pub fn has_flag(flag: &str) -> bool {
    text()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == flag))
}
