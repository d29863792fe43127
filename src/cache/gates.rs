//! One at a time per key: the single flight of opening a media (one
//! origin request for the players that arrive cold together) and of
//! fetching a playlist. Whoever comes while a key's gate is held waits
//! for it, then finds what the holder left (a media, a kept playlist).
//! A key's gate goes away with the last one through or waiting for it,
//! also when a waiter gives up (a player hanging up), so the map holds
//! only keys in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Gate = Arc<tokio::sync::Mutex<()>>;

/// Gates by key. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Gates {
    map: Arc<Mutex<HashMap<String, Gate>>>,
}

/// A key's gate held: the next one in waits until it is dropped.
pub(crate) struct Pass {
    // Fields drop in order: the lock before the ticket, so that the
    // ticket sees its own reference as the last besides the map's.
    _held: OwnedMutexGuard<()>,
    _ticket: Ticket,
}

/// A place in a key's queue, held from the first moment of waiting; the
/// last one dropped removes the key's gate.
struct Ticket {
    map: Arc<Mutex<HashMap<String, Gate>>>,
    key: String,
    gate: Gate,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap();
        // The map's reference and this ticket's: nobody else holds it or
        // waits for it.
        if map
            .get(&self.key)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate) && Arc::strong_count(&self.gate) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

impl Gates {
    /// Waits for `key`'s turn.
    pub async fn enter(&self, key: &str) -> Pass {
        let gate = self
            .map
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .clone();
        let ticket = Ticket {
            map: self.map.clone(),
            key: key.to_owned(),
            gate: gate.clone(),
        };
        Pass {
            _held: gate.lock_owned().await,
            _ticket: ticket,
        }
    }

    /// Keys whose gate is held or waited for.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_at_a_time_per_key_and_nothing_left_behind() {
        let gates = Gates::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gates, inside, most) = (gates.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _pass = gates.enter("k").await;
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another key is not held up by "k".
        let _other = gates.enter("other").await;
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(gates.len(), 1, "only the held key stays");
        drop(_other);
        assert_eq!(gates.len(), 0);
    }

    /// Waiters that give up (players hanging up) leave no gate behind,
    /// whether the holder leaves before or after them.
    #[tokio::test(start_paused = true)]
    async fn waiters_that_give_up_leave_nothing() {
        let gates = Gates::default();
        let held = gates.enter("a").await;
        for _ in 0..5 {
            let waited = tokio::time::timeout(Duration::from_millis(1), gates.enter("a")).await;
            assert!(waited.is_err());
        }
        assert_eq!(gates.len(), 1);
        drop(held);
        assert_eq!(gates.len(), 0);
        let held = gates.enter("b").await;
        let waiter = tokio::spawn({
            let gates = gates.clone();
            async move { gates.enter("b").await }
        });
        tokio::task::yield_now().await;
        drop(held);
        let pass = waiter.await.unwrap();
        assert_eq!(gates.len(), 1, "the waiter got through and holds it");
        drop(pass);
        assert_eq!(gates.len(), 0);
    }
}
