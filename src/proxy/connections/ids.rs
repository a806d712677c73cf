//! Connection ids, one sequence across binary upgrades.
//!
//! An upgrade moves open connections to the new process, which must go on
//! naming them by their ids (the control API and the access log do) and
//! must never give a new connection one of them. Both processes accept
//! during the hand-over, so a starting value passed at hand-over time
//! would not do: the old process goes on numbering until it stops
//! accepting. Instead the counter lives in a page of shared memory (a
//! memfd, mapped `MAP_SHARED`), which the old process hands to the new
//! one with the listening sockets: both take ids from the same atomic,
//! and so does every later upgrade's process. Where no memfd can be made
//! the counter is the process's own.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Where the next id comes from.
pub struct IdSequence {
    /// The counter: in the shared page, or in `local`.
    counter: NonNull<AtomicU64>,
    /// The shared page and its memfd, or `None` for a counter of this
    /// process's own.
    shared: Option<OwnedFd>,
    /// The counter when it is not shared (on its own cache line: every
    /// accept increments it).
    _local: Option<Box<Padded>>,
}

#[repr(align(64))]
struct Padded(AtomicU64);

/// The mapped size: one page holds the counter (and keeps it alone).
const PAGE: usize = 4096;

// SAFETY: the counter is an atomic in memory that lives as long as the
// sequence (the mapping or the box), so sharing it across threads is
// sharing an atomic.
unsafe impl Send for IdSequence {}
// SAFETY: as above.
unsafe impl Sync for IdSequence {}

impl IdSequence {
    /// A new sequence from 1, shared with a later upgrade's process when
    /// a memfd can be made.
    pub fn new() -> IdSequence {
        Self::create().unwrap_or_else(|_| Self::local())
    }

    /// A sequence of this process's own, from 1 (tests, and where no
    /// memfd can be made).
    pub fn local() -> IdSequence {
        let local = Box::new(Padded(AtomicU64::new(0)));
        IdSequence {
            counter: NonNull::from(&local.0),
            shared: None,
            _local: Some(local),
        }
    }

    fn create() -> std::io::Result<IdSequence> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let raw = unsafe { libc::memfd_create(c"tcplb-ids".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our memfd; a new memfd reads as zeros.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// The sequence an old process handed over in `fd` (its memfd): ids
    /// go on from where it is.
    pub fn adopt(fd: OwnedFd) -> std::io::Result<IdSequence> {
        // SAFETY: a zeroed stat is a valid one for fstat to fill.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor we own, into a stat of ours.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if (stat.st_size as usize) < PAGE {
            return Err(std::io::Error::other(
                "the id sequence's memory is too small",
            ));
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> std::io::Result<IdSequence> {
        // SAFETY: a shared read-write mapping of the first page of a memfd
        // at least that large; unmapped on drop.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let counter = NonNull::new(address.cast::<AtomicU64>())
            .ok_or_else(|| std::io::Error::other("mmap returned no address"))?;
        Ok(IdSequence {
            counter,
            shared: Some(fd),
            _local: None,
        })
    }

    /// The next id: never one this sequence gave before, in this process
    /// or in any other that shares it.
    pub fn next(&self) -> u64 {
        // SAFETY: the counter lives as long as `self` (see the struct).
        let counter = unsafe { self.counter.as_ref() };
        counter.fetch_add(1, Relaxed) + 1
    }

    /// The memfd to hand to a new process, when the sequence is shared.
    pub fn handoff(&self) -> Option<BorrowedFd<'_>> {
        self.shared.as_ref().map(AsFd::as_fd)
    }
}

impl Default for IdSequence {
    fn default() -> Self {
        IdSequence::local()
    }
}

impl Drop for IdSequence {
    fn drop(&mut self) {
        if self.shared.is_some() {
            // SAFETY: unmapping the page `map` mapped; nothing refers to
            // it after `self` is gone.
            unsafe { libc::munmap(self.counter.as_ptr().cast(), PAGE) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_over_sequence_goes_on_where_the_old_one_is_and_both_share_it() {
        let old = IdSequence::new();
        assert_eq!((old.next(), old.next()), (1, 2));
        let fd = old.handoff().expect("shared").try_clone_to_owned().unwrap();
        let new = IdSequence::adopt(fd).unwrap();
        assert_eq!(new.next(), 3);
        // Both hand out ids at once: none twice.
        let ids: Vec<u64> = std::thread::scope(|s| {
            let a = s.spawn(|| (0..10_000).map(|_| old.next()).collect::<Vec<_>>());
            let b = s.spawn(|| (0..10_000).map(|_| new.next()).collect::<Vec<_>>());
            let mut ids = a.join().unwrap();
            ids.extend(b.join().unwrap());
            ids
        });
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 20_000);
        assert_eq!(sorted[0], 4);
    }

    #[test]
    fn a_local_sequence_counts_from_one_and_has_nothing_to_hand_over() {
        let local = IdSequence::local();
        assert_eq!((local.next(), local.next()), (1, 2));
        assert!(local.handoff().is_none());
    }

    #[test]
    fn a_descriptor_that_is_not_a_page_is_refused() {
        let file = tempfile_fd();
        assert!(IdSequence::adopt(file).is_err());
    }

    fn tempfile_fd() -> OwnedFd {
        // SAFETY: a new memfd we own, left empty.
        let raw = unsafe { libc::memfd_create(c"empty".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: as above.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }
}
