//! Kernel timestamps (CLOCK_BOOTTIME) -> wall-clock time.

use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot_ns_at_start: u64,
    wall_at_start: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            boot_ns_at_start: boot_ns(),
            wall_at_start: SystemTime::now(),
        }
    }

    pub fn wall(&self, event_boot_ns: u64) -> SystemTime {
        if event_boot_ns >= self.boot_ns_at_start {
            self.wall_at_start + Duration::from_nanos(event_boot_ns - self.boot_ns_at_start)
        } else {
            self.wall_at_start - Duration::from_nanos(self.boot_ns_at_start - event_boot_ns)
        }
    }
}

/// CLOCK_BOOTTIME now, the clock `bpf_ktime_get_boot_ns` reads.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_BOOTTIME exists on every supported kernel.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_boot_time_to_wall_time() {
        let clock = Clock {
            boot_ns_at_start: 10_000_000_000,
            wall_at_start: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        };
        assert_eq!(
            clock.wall(10_500_000_000),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_500)
        );
        assert_eq!(
            clock.wall(9_000_000_000),
            SystemTime::UNIX_EPOCH + Duration::from_secs(999)
        );
        assert!(boot_ns() > 0);
    }
}
