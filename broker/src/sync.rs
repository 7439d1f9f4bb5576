//! [`Watch`]: a value that tasks wait on, woken in a deterministic order.
//!
//! tokio's `watch` channel spreads its waiters over eight `Notify`s chosen by a thread-local
//! random number, so the order in which waiters wake (and therefore the order in which
//! producers are acknowledged and long-poll fetches answered) changes from run to run. The
//! simulator must replay a seed byte for byte, so the broker's hot wakeups (acknowledgements,
//! high-watermark advances) use this instead: one `Notify`, whose waiters wake in the order
//! they started waiting.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// A value plus the tasks waiting for it to satisfy some condition.
#[derive(Debug, Default)]
pub struct Watch<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Watch<T> {
    pub fn new(value: T) -> Self {
        Watch {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.lock().clone()
    }

    /// Changes the value with `modify`; if it reports a change, wakes every waiter.
    pub fn modify(&self, modify: impl FnOnce(&mut T) -> bool) {
        let changed = modify(&mut self.lock());
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Wakes every waiter so it re-checks its condition (and whatever else it watches).
    pub fn wake_all(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until `ready` holds for the value (checked at once, then after each change or
    /// [`wake_all`](Self::wake_all)), and returns the value it held for. `ready` may also look
    /// at other state, such as a closed flag set before `wake_all`.
    pub async fn wait_for(&self, mut ready: impl FnMut(&T) -> bool) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change between the check and the await is
            // not missed.
            notified.as_mut().enable();
            {
                let value = self.lock();
                if ready(&value) {
                    return value.clone();
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_see_changes_and_wake_in_order() {
        let w = Arc::new(Watch::new(0i64));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (w, order) = (Arc::clone(&w), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let v = w.wait_for(|v| *v >= 10).await;
                order.lock().unwrap().push((i, v));
            }));
            tokio::task::yield_now().await;
        }
        w.modify(|v| {
            *v = 5;
            true
        });
        tokio::task::yield_now().await;
        assert!(order.lock().unwrap().is_empty(), "5 is not ready");
        w.modify(|v| {
            *v = 10;
            true
        });
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![(0, 10), (1, 10), (2, 10), (3, 10)]
        );
        assert_eq!(w.wait_for(|v| *v == 10).await, 10, "ready at once");
    }
}
