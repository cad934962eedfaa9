//! Restart intensity: at most `intensity` restarts within `period`, as OTP's
//! supervisor counts them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restarts a supervisor made recently.
pub struct Intensity {
    max: u32,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl Intensity {
    pub fn new(max: u32, period: Duration) -> Intensity {
        Intensity { max, period, restarts: VecDeque::new() }
    }

    /// Records a restart at `now`; false if it makes more than `max` in the
    /// last `period` (the supervisor must then give up).
    pub fn add(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        self.recent(now) <= self.max as usize
    }

    /// How many restarts were made in the last `period`, at `now`.
    pub fn recent(&mut self, now: Instant) -> usize {
        while let Some(&oldest) = self.restarts.front() {
            if now.duration_since(oldest) > self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len()
    }

    /// How many restarts `period` allows.
    pub fn max(&self) -> usize {
        self.max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_restarts_inside_the_period() {
        let t0 = Instant::now();
        let mut i = Intensity::new(2, Duration::from_secs(5));
        assert!(i.add(t0));
        assert!(i.add(t0 + Duration::from_secs(1)));
        assert!(!i.add(t0 + Duration::from_secs(2)));
        let mut i = Intensity::new(2, Duration::from_secs(5));
        assert!(i.add(t0));
        assert!(i.add(t0 + Duration::from_secs(1)));
        assert!(i.add(t0 + Duration::from_secs(6)));
        assert!(!Intensity::new(0, Duration::from_secs(5)).add(t0));
    }

    #[test]
    fn recent_forgets_what_left_the_period() {
        let t0 = Instant::now();
        let mut i = Intensity::new(3, Duration::from_secs(5));
        assert_eq!(i.recent(t0), 0);
        assert!(i.add(t0));
        assert!(i.add(t0 + Duration::from_secs(2)));
        assert_eq!(i.recent(t0 + Duration::from_secs(3)), 2);
        assert_eq!(i.recent(t0 + Duration::from_secs(6)), 1);
        assert_eq!(i.recent(t0 + Duration::from_secs(8)), 0);
        assert_eq!(i.max(), 3);
    }
}
