//! Who runs pushscan and where: the operator and the controller (jump host) names that the
//! journal's leases, the alerts and the reports carry.

/// The operator's login name.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// The jump host's name (`COMPUTERNAME` on Windows, the kernel's host name elsewhere).
pub fn controller_name() -> String {
    if let Ok(n) = std::env::var("COMPUTERNAME") {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
