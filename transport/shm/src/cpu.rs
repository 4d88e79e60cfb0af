//! Which CPU this thread runs on: the two sides of the shared-memory path compare theirs to
//! decide whether to spin while they wait for each other or to give the CPU way (see
//! `docs/shm-layout.md`, "Sharing a CPU").

use veddb_wire::shm::layout::data_segment::CPU_UNKNOWN;

/// The CPU the calling thread runs on now, or [`CPU_UNKNOWN`] where the system does not say.
/// On Linux with glibc 2.35 or later this reads the kernel's restartable-sequences area (a
/// few nanoseconds, no system call). The answer may be stale as soon as it is returned (the
/// thread may move): use it as a hint.
#[inline]
pub fn current_cpu() -> u32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
        let cpu = unsafe { libc::sched_getcpu() };
        u32::try_from(cpu).unwrap_or(CPU_UNKNOWN)
    }
    #[cfg(not(target_os = "linux"))]
    {
        CPU_UNKNOWN
    }
}

/// Whether two CPU numbers name the same, known CPU.
#[inline]
pub fn same_cpu(a: u32, b: u32) -> bool {
    a == b && a != CPU_UNKNOWN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_cpu_is_one_this_thread_may_run_on() {
        let cpu = current_cpu();
        #[cfg(target_os = "linux")]
        {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            // Not necessarily below the count (a cpuset may hold high numbers), but known.
            assert_ne!(cpu, CPU_UNKNOWN, "{cpus} CPUs available");
        }
        assert!(!same_cpu(CPU_UNKNOWN, CPU_UNKNOWN));
        assert_eq!(same_cpu(cpu, cpu), cpu != CPU_UNKNOWN);
    }
}
