//! Connections that want a server thread: being polled on one now, or woken and not yet
//! polled. A connection is woken when a server thread polling for I/O finds its socket
//! readable (on a busy worker that happens between tasks, so the connections whose requests
//! arrived meanwhile are woken together), when one of its timers fires, or when a plugin
//! call it handed off finishes.
//!
//! The inline rule of the plugin runtime (`runtime.inline_calls`, [`crate::runtime`]) starts
//! a call on the server thread that asked for it only while the server's threads are not
//! all wanted elsewhere. The count of requests in flight cannot tell. On a server with one
//! worker under steady load from several connections, a request that never waits is
//! answered within the one poll that read it, so no two are ever in flight together, and
//! the next connection's request, already read by the kernel, waits behind every inline call
//! while the plugin threads idle (BENCHMARKS.md, "Connections waiting for a server thread").
//! The other way round, requests in flight that wait on the database or on a plugin thread
//! hold no server thread, yet counting them sent every call to the plugin threads, a
//! hand-off each way per order (BENCHMARKS.md, "Requests in flight no longer count"). So
//! every connection task is wrapped in [`Tracked`]: its poll counts it as running while it
//! lasts, and its waker marks it as waiting until the next poll.
//!
//! A task woken during its own poll (the connection's idle timer is told of the request it
//! starts and ends, for one) is not counted as waiting until that poll ends: it is not
//! waiting for a thread while it runs on one. It is counted then, until its next poll, like
//! any task queued for the worker.
//!
//! Written here rather than taken from a crate: a waker wrapper specific to this count.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// How many tracked connections want a server thread now: waiting for one, or on one.
#[derive(Debug, Clone, Default)]
pub struct Waiting(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Woken and not yet polled.
    waiting: AtomicUsize,
    /// Being polled now.
    running: AtomicUsize,
}

impl Waiting {
    /// Counts of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections woken and not yet polled.
    pub fn get(&self) -> usize {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// Connections being polled now, each on a server thread.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::Relaxed)
    }

    /// Connections that want a server thread now: running on one plus waiting for one.
    pub fn wanting(&self) -> usize {
        self.running() + self.get()
    }

    /// Wrap a connection's task so its polls and wake-ups are counted here.
    pub fn track<F: Future>(&self, inner: F) -> Tracked<F> {
        let mark = Arc::new(Mark {
            state: Mutex::new(State::default()),
            counts: self.0.clone(),
        });
        Tracked {
            inner: Box::pin(inner),
            waker: Waker::from(mark.clone()),
            mark,
        }
    }
}

#[derive(Default)]
struct State {
    /// Counted in [`Waiting`]: woken, not polled since.
    counted: bool,
    /// Being polled now.
    polling: bool,
    /// Woken during the current poll: counted when it ends.
    woken_while_polled: bool,
    /// The task is gone: later wake-ups count nothing.
    gone: bool,
    /// The waker of the task's latest poll, set under the same lock as `polling`: a
    /// wake-up counted is always passed on to the task.
    waker: Option<Waker>,
}

struct Mark {
    state: Mutex<State>,
    counts: Arc<Counts>,
}

impl Mark {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, state: &mut State) {
        if !state.counted && !state.gone {
            state.counted = true;
            self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn uncount(&self, state: &mut State) {
        if state.counted {
            state.counted = false;
            self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = {
            let mut state = self.state();
            if state.polling {
                state.woken_while_polled = true;
            } else {
                self.count(&mut state);
            }
            state.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A connection's task, counted in [`Waiting`] as running while it is polled and as waiting
/// from a wake-up until its next poll.
pub struct Tracked<F> {
    inner: Pin<Box<F>>,
    mark: Arc<Mark>,
    /// The waker handed to `inner`: wakes `mark`, which wakes the task.
    waker: Waker,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut state = self.mark.state();
            self.mark.uncount(&mut state);
            state.polling = true;
            state.woken_while_polled = false;
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
        }
        let this = &mut *self;
        let polled = {
            let _running = Running::start(&this.mark.counts);
            this.inner
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker))
        };
        let mut state = self.mark.state();
        state.polling = false;
        if std::mem::take(&mut state.woken_while_polled) && polled.is_pending() {
            self.mark.count(&mut state);
        }
        polled
    }
}

/// A poll in progress, counted in [`Counts::running`] until dropped (a panicking poll too).
struct Running<'a>(&'a Counts);

impl<'a> Running<'a> {
    fn start(counts: &'a Counts) -> Self {
        counts.running.fetch_add(1, Ordering::Relaxed);
        Self(counts)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        let mut state = self.mark.state();
        self.mark.uncount(&mut state);
        state.gone = true;
        // Wakers held elsewhere (a timer, a handed-off call) no longer keep the task alive.
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Counts the wake-ups it gets: the task's own waker, as the executor gave it.
    #[derive(Default)]
    struct Executor(AtomicUsize);

    impl Wake for Executor {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls `f` once with a waker that does nothing.
    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A future that stays pending, keeping the waker of its latest poll for the test.
    fn parked(slot: Arc<Mutex<Option<Waker>>>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            *slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    #[test]
    fn a_woken_task_is_counted_once_until_it_is_polled() {
        let waiting = Waiting::new();
        let slot = Arc::new(Mutex::new(None));
        let mut task = waiting.track(parked(slot.clone()));
        assert!(poll_once(&mut task).is_pending());
        assert_eq!(waiting.get(), 0, "polled and pending: not waiting");
        let waker = slot.lock().unwrap().clone().unwrap();
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(waiting.get(), 1, "woken twice, one connection waiting");
        assert!(poll_once(&mut task).is_pending());
        assert_eq!(waiting.get(), 0, "polled: no longer waiting");
        // Every wake-up counted reaches the task's own waker (of its latest poll).
        let executor = Arc::new(Executor::default());
        let own = Waker::from(executor.clone());
        assert!(
            Pin::new(&mut task)
                .poll(&mut Context::from_waker(&own))
                .is_pending()
        );
        slot.lock().unwrap().clone().unwrap().wake();
        assert_eq!(waiting.get(), 1);
        assert_eq!(
            executor.0.load(Ordering::Relaxed),
            1,
            "the task was not woken"
        );
        drop(task);
        assert_eq!(waiting.get(), 0, "a dropped task is not waiting");
        waker.wake_by_ref();
        assert_eq!(waiting.get(), 0, "a wake-up after the drop counts nothing");
    }

    #[test]
    fn a_task_is_running_while_polled_and_only_then() {
        let waiting = Waiting::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen_in_poll, counter) = (seen.clone(), waiting.clone());
        let mut polls = 0;
        let mut task = waiting.track(std::future::poll_fn(move |_| {
            seen_in_poll.lock().unwrap().push(counter.running());
            polls += 1;
            if polls == 1 {
                Poll::<()>::Pending
            } else {
                panic!("a connection's poll panicked")
            }
        }));
        assert_eq!(waiting.running(), 0, "not polled yet");
        assert!(poll_once(&mut task).is_pending());
        assert_eq!(waiting.running(), 0, "its poll over");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = poll_once(&mut task);
        }));
        assert!(unwound.is_err());
        assert_eq!(*seen.lock().unwrap(), [1, 1], "running during each poll");
        assert_eq!(waiting.running(), 0, "a panicking poll is not left running");
        assert_eq!(waiting.wanting(), 0);
    }

    #[test]
    fn a_task_waking_itself_is_counted_only_once_its_poll_ends() {
        let waiting = Waiting::new();
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let seen_in_poll = seen.clone();
        let counter = waiting.clone();
        let mut first = true;
        let mut task = waiting.track(std::future::poll_fn(move |cx| {
            cx.waker().wake_by_ref();
            seen_in_poll.store(counter.get(), Ordering::Relaxed);
            if std::mem::take(&mut first) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        assert!(poll_once(&mut task).is_pending());
        assert_eq!(
            seen.load(Ordering::Relaxed),
            0,
            "counted during its own poll"
        );
        assert_eq!(
            waiting.get(),
            1,
            "woken during its poll: waiting once it ends"
        );
        assert!(poll_once(&mut task).is_ready());
        assert_eq!(
            waiting.get(),
            0,
            "finished: not waiting, though it woke itself"
        );
    }

    /// On a runtime with one worker, the way a server sees it: while one connection's task
    /// holds the worker, another connection woken from another thread is counted; the
    /// running one is not.
    #[test]
    fn a_connection_woken_while_another_holds_the_worker_is_counted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waiting = Waiting::new();
        let (send, receive) = tokio::sync::oneshot::channel::<()>();
        let observed = rt.block_on(async {
            let other = tokio::spawn(waiting.track(async move { receive.await.unwrap() }));
            // Let the other connection's task run up to its wait.
            tokio::task::yield_now().await;
            assert_eq!(waiting.get(), 0);
            let counter = waiting.clone();
            let running = waiting.track(async move {
                let before = counter.get();
                // The other connection is woken from another thread while this one runs.
                std::thread::spawn(move || send.send(()).unwrap());
                let deadline = Instant::now() + Duration::from_secs(10);
                while counter.get() == before {
                    assert!(
                        Instant::now() < deadline,
                        "the other connection was never counted as waiting"
                    );
                    std::hint::spin_loop();
                }
                (before, counter.get())
            });
            let observed = running.await;
            other.await.unwrap();
            observed
        });
        assert_eq!(observed, (0, 1), "(before the wake-up, after it)");
        assert_eq!(waiting.get(), 0, "both polled to the end");
    }
}
