//! What the benchmarks read of a process in `/proc` (Linux): resident memory and CPU time.

use std::time::Duration;

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident, KiB.
    pub peak_kib: u64,
}

/// The resident memory of process `pid` (`None`: this process).
pub fn memory(pid: Option<u32>) -> std::io::Result<Memory> {
    let status = std::fs::read_to_string(path(pid, "status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    })
}

/// User plus system CPU time of process `pid` (`None`: this process), from `/proc/PID/stat`, in clock ticks of
/// 10 ms (`CLK_TCK` is 100 on Linux).
pub fn cpu_time(pid: Option<u32>) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(path(pid, "stat"))?;
    // The command name, in parentheses, may hold spaces: the fields are counted after its closing one.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("field {} of {} is not a number", i + 3, path(pid, "stat"))))
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_burns_cpu() {
        let own = memory(None).unwrap();
        assert!(own.rss_kib > 0 && own.peak_kib >= own.rss_kib, "{own:?}");
        let before = cpu_time(None).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time(None).unwrap() > before);
        assert!(memory(Some(std::process::id())).unwrap().rss_kib > 0);
        assert!(memory(Some(u32::MAX)).is_err(), "no such process");
    }
}
