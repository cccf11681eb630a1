//! Capped exponential backoff: the one delay rule of every retry loop (stage retries, store and
//! bus outages, S3 calls, webhooks, stage worker restarts). Each loop keeps its own limit (a count,
//! a time, a cancel); only how long to wait between tries lives here.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { next: base.min(cap), base, cap }
    }

    /// The wait before the next try: `base`, then twice the last, never above `cap`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        delay
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to `base` (the thing came back).
    pub fn reset(&mut self) {
        self.next = self.base.min(self.cap);
    }

    /// The wait before retry `n` (counting from 0) without keeping state: `base × 2^n`, capped.
    pub fn nth(base: Duration, cap: Duration, n: u32) -> Duration {
        base.saturating_mul(2u32.saturating_pow(n)).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(Backoff::nth(ms(500), Duration::from_secs(30), 0), ms(500));
        assert_eq!(Backoff::nth(ms(500), Duration::from_secs(30), 3), ms(4000));
        assert_eq!(Backoff::nth(ms(500), Duration::from_secs(30), 40), Duration::from_secs(30), "no overflow");
    }
}
