//! The threads that serve client connections.
//!
//! Each worker is one thread with its own single-threaded tokio runtime and
//! its own listening socket on every listener (SO_REUSEPORT; the kernel
//! spreads new connections over them). A connection lives on one thread
//! from accept to close: no cross-thread wake-ups, locks or work stealing on
//! the data path, as in nginx's workers. Against one multi-threaded runtime
//! this measured 5-10% less CPU per keep-alive request and per short
//! connection on 2 cores. Probes, the admin endpoint, signals and reloads
//! stay on the caller's runtime.

use std::future::Future;
use std::io;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub struct Workers {
    handles: Vec<Handle>,
    /// Cancelled to end every worker; its runtime then drops what is left.
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` workers, or one per core when `None`.
    pub fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count.unwrap_or_else(default_count).max(1);
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
            threads: Mutex::new(Vec::with_capacity(count)),
        };
        for i in 0..count {
            let (handle, thread) = start_one(i, workers.stop.clone())?;
            workers.handles.push(handle);
            workers.threads_mut().push(thread);
        }
        Ok(workers)
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Each worker's runtime, by index.
    pub(crate) fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }

    /// Runs `task` on worker `index`.
    pub fn spawn<F>(&self, index: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[index].spawn(task);
    }

    /// Ends every worker, dropping whatever still runs on it (connections
    /// past the drain timeout), and waits for the threads to exit.
    pub async fn shut_down(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads_mut());
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }

    fn threads_mut(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Threads not joined by `shut_down` end on their own.
        self.stop.cancel();
    }
}

fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The runtime is built and dropped on its own thread: dropping a runtime
/// inside another one's async context would panic.
fn start_one(index: usize, stop: CancellationToken) -> io::Result<(Handle, JoinHandle<()>)> {
    let (handle_tx, handle_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("tcplb-worker-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(stop.cancelled());
                }
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                }
            }
        })?;
    let handle = handle_rx
        .recv()
        .map_err(|_| io::Error::other("worker thread ended before starting"))??;
    Ok((handle, thread))
}
