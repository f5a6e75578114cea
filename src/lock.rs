//! The one way likeboard takes a mutex: a lock whose holder panicked still
//! guards whole data, because nothing done under our locks can stop half-way
//! (each critical section is a push, a take, or a few field writes). So a
//! panic in one thread never turns into panics in every thread after it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering it if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
