//! CPU time, for the bench's CPU per job: this process's, and that of its child processes
//! once they have been waited for (the kernel adds a child's time to its parent's account
//! when the child is reaped).

use nix::sys::resource::{getrusage, UsageWho};
use std::time::Duration;

/// User plus system time spent so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// This process's time, every thread.
    pub fn of_this_process() -> CpuTime {
        read(UsageWho::RUSAGE_SELF)
    }

    /// The time of every child process this one has waited for.
    pub fn of_waited_children() -> CpuTime {
        read(UsageWho::RUSAGE_CHILDREN)
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn read(who: UsageWho) -> CpuTime {
    let Ok(usage) = getrusage(who) else {
        return CpuTime::default();
    };
    let duration = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    CpuTime {
        user: duration(usage.user_time()),
        system: duration(usage.system_time()),
    }
}
