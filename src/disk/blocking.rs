//! Filesystem calls block; on an async worker thread they stall every
//! stream on that thread. Every blocking entry point of the cache's
//! filesystem (statvfs, opening a directory under the cache) calls
//! `blocking_call`, and test builds check it: a test marks its async
//! thread, and a blocking call made on it fails the test.

#[cfg(test)]
thread_local! {
    static ASYNC_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as one that runs async tasks (tests only).
#[cfg(test)]
pub(crate) fn mark_async_thread() {
    ASYNC_THREAD.with(|a| a.set(true));
}

/// Called by every blocking filesystem entry point.
#[inline]
pub(crate) fn blocking_call() {
    #[cfg(test)]
    ASYNC_THREAD.with(|a| {
        assert!(
            !a.get(),
            "blocking filesystem call on an async worker thread"
        )
    });
}
