//! Buffers kept from one forward pass to the next.

use std::sync::Mutex;

/// Idle values kept at most: one per forward pass that may run at once, as a server's
/// batcher and a second caller might.
const KEEP: usize = 2;

/// Values (a layer stack's scratch buffers) handed from one forward pass to the next.
///
/// Why: a pass's largest buffers are tens of MB; freed, the allocator returns them to the
/// system, and the next pass's first writes fault them back in page by page and the kernel
/// zeroes every page. all-MiniLM-L6-v2 over 500 code chunks took 443k page faults (1.7 GB of
/// fresh pages, 9 % of its samples in the kernel; `/usr/bin/time`, `perf record`).
pub struct Reused<T> {
    idle: Mutex<Vec<T>>,
}

impl<T: Default> Default for Reused<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Default> Reused<T> {
    pub const fn new() -> Self {
        Reused {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle value (a fresh one when none is idle), then keeps it for the next
    /// call.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut value = idle.unwrap_or_default();
        let result = f(&mut value);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP {
                idle.push(value);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::Reused;

    #[test]
    fn a_value_is_handed_to_the_next_call_and_at_most_two_are_kept() {
        let reused: Reused<Vec<u8>> = Reused::new();
        reused.with(|v| v.extend([1, 2, 3]));
        assert_eq!(reused.with(|v| v.clone()), [1, 2, 3]);
        // Three at once: a third is made fresh, and only two stay idle after.
        reused.with(|a| {
            a.push(4);
            reused.with(|b| {
                assert!(b.is_empty());
                b.push(5);
                reused.with(|c| c.push(6));
            })
        });
        let idle = reused.idle.lock().unwrap().clone();
        assert_eq!(idle.len(), 2);
    }
}
