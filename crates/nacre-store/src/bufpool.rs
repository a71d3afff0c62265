//! Recycled page buffers.
//!
//! Every page read from the log, written by a commit or relocated by the
//! cleaner lives in a buffer of a little over one node (4 KiB by default),
//! and every page evicted from the cache frees one. glibc's malloc serves
//! blocks of that size from its slow bins, with the arena lock taken by
//! whichever thread frees them: profiles of batched commits showed a third
//! of the writer's CPU time in malloc and free. A bounded free list turns
//! both into a push and a pop under one short lock.
//!
//! The pool is process-wide (pages move between threads and stores) and
//! bounded in bytes: it keeps at most `POOL_BYTES_MAX` of idle buffers, and
//! only buffers whose capacity lies in `[POOL_CAPACITY_MIN,
//! POOL_CAPACITY_MAX]`. A commit of 1,000 random puts releases about as many
//! base pages at once, which is why the bound is a few MiB and not a few
//! buffers.

use parking_lot::Mutex;

/// Idle bytes kept at most, summed over buffer capacities.
pub const POOL_BYTES_MAX: usize = 8 << 20;
/// The capacity every pooled buffer starts with: a default 4 KiB node, its
/// record header and some slack for a leaf that has not split yet.
pub const POOL_CAPACITY_MIN: usize = 4096 + 128;
/// Buffers larger than this (big nodes, large values) go back to malloc.
pub const POOL_CAPACITY_MAX: usize = 16 * 1024;

struct Idle {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Idle> = Mutex::new(Idle {
    bufs: Vec::new(),
    bytes: 0,
});

/// A pooled buffer, or a new one with room for `len` bytes. Its length is
/// whatever it had when given back: the bytes of a former page.
fn take_raw(len: usize) -> Vec<u8> {
    let pooled = if len <= POOL_CAPACITY_MAX {
        let mut pool = POOL.lock();
        let b = pool.bufs.pop();
        if let Some(b) = &b {
            pool.bytes -= b.capacity();
        }
        b
    } else {
        None
    };
    let mut b = pooled.unwrap_or_else(|| Vec::with_capacity(len.max(POOL_CAPACITY_MIN)));
    b.reserve(len.saturating_sub(b.len()));
    b
}

/// An empty buffer with room for at least `len` bytes.
pub fn take(len: usize) -> Vec<u8> {
    let mut b = take_raw(len);
    b.clear();
    b
}

/// A buffer of exactly `len` bytes, to be overwritten whole by a read. Its
/// bytes are those of some former page (zeros only past them): a pooled
/// buffer keeps its length, so that a read of a node into it does not
/// first zero four kilobytes, which profiles of batched commits showed as
/// a fifth of all the bytes the writer set.
pub fn take_for_read(len: usize) -> Vec<u8> {
    let mut b = take_raw(len);
    b.resize(len, 0);
    b
}

fn keeps(capacity: usize) -> bool {
    (POOL_CAPACITY_MIN..=POOL_CAPACITY_MAX).contains(&capacity)
}

/// Hand a buffer back; it is kept, bytes and all, if its size fits and the
/// pool has room.
pub fn give(buf: Vec<u8>) {
    let cap = buf.capacity();
    if !keeps(cap) {
        return;
    }
    let mut pool = POOL.lock();
    if pool.bytes + cap <= POOL_BYTES_MAX {
        pool.bytes += cap;
        pool.bufs.push(buf);
    }
}

/// Idle bytes of search-slot vectors kept at most.
pub const SLOTS_BYTES_MAX: usize = 2 << 20;
/// Slot vectors come in power-of-two capacities from `SLOTS_CAPACITY_MIN`
/// to `SLOTS_CAPACITY_MAX`, one free list per capacity: every decoded page
/// has one, sized by its key count, and a single list of mixed sizes made
/// a leaf's vector grow by realloc when a branch took it.
pub const SLOTS_CAPACITY_MIN: usize = 16;
pub const SLOTS_CAPACITY_MAX: usize = 4096;
const SLOT_CLASSES: usize =
    (SLOTS_CAPACITY_MAX.trailing_zeros() - SLOTS_CAPACITY_MIN.trailing_zeros()) as usize + 1;

struct IdleSlots {
    by_class: [Vec<Vec<u64>>; SLOT_CLASSES],
    bytes: usize,
}

static SLOTS: Mutex<IdleSlots> = Mutex::new(IdleSlots {
    by_class: [const { Vec::new() }; SLOT_CLASSES],
    bytes: 0,
});

/// The size class of a vector that holds `len` slots, if pooled.
fn slot_class(len: usize) -> Option<usize> {
    let cap = len.max(SLOTS_CAPACITY_MIN).next_power_of_two();
    (cap <= SLOTS_CAPACITY_MAX)
        .then(|| (cap.trailing_zeros() - SLOTS_CAPACITY_MIN.trailing_zeros()) as usize)
}

/// The capacity of the slot vector `take_slots(len)` hands out.
fn slots_capacity(len: usize) -> usize {
    slot_class(len).map_or(len, |class| SLOTS_CAPACITY_MIN << class)
}

/// Bytes of the slot vector that `take_slots(len)` hands out, so that the
/// page cache can weigh a page's slots before they are built.
pub fn slots_bytes(len: usize) -> usize {
    8 * slots_capacity(len)
}

/// An empty slot vector with room for at least `len` slots.
pub fn take_slots(len: usize) -> Vec<u64> {
    let Some(class) = slot_class(len) else {
        return Vec::with_capacity(len);
    };
    let pooled = {
        let mut pool = SLOTS.lock();
        let v = pool.by_class[class].pop();
        if let Some(v) = &v {
            pool.bytes -= 8 * v.capacity();
        }
        v
    };
    let v = pooled.unwrap_or_else(|| Vec::with_capacity(slots_capacity(len)));
    debug_assert!(v.is_empty() && v.capacity() >= len);
    v
}

/// Hand a slot vector back; kept if it is of a pooled capacity and the
/// pool has room.
pub fn give_slots(mut v: Vec<u64>) {
    let cap = v.capacity();
    let Some(class) = slot_class(cap).filter(|&c| SLOTS_CAPACITY_MIN << c == cap) else {
        return;
    };
    v.clear();
    let mut pool = SLOTS.lock();
    if pool.bytes + 8 * cap <= SLOTS_BYTES_MAX {
        pool.bytes += 8 * cap;
        pool.by_class[class].push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_enough() {
        let mut b = take(100);
        assert!(b.capacity() >= POOL_CAPACITY_MIN);
        b.extend_from_slice(&[7; 100]);
        give(b);
        let b = take(5000);
        assert!(b.is_empty());
        assert!(b.capacity() >= 5000);
        let mut r = take_for_read(4000);
        assert_eq!(r.len(), 4000);
        r.fill(9);
        give(r);
        // A buffer for a read has the asked length, whatever length it
        // was given back with.
        assert_eq!(take_for_read(6000).len(), 6000);
        assert_eq!(take_for_read(100).len(), 100);
        assert!(take(100).is_empty());
    }

    #[test]
    fn the_pool_stays_bounded() {
        for _ in 0..POOL_BYTES_MAX / POOL_CAPACITY_MIN * 2 {
            give(Vec::with_capacity(POOL_CAPACITY_MIN));
        }
        let pool = POOL.lock();
        assert!(pool.bytes <= POOL_BYTES_MAX);
        assert_eq!(
            pool.bytes,
            pool.bufs.iter().map(Vec::capacity).sum::<usize>()
        );
        drop(pool);
        assert!(!keeps(POOL_CAPACITY_MAX + 1));
        assert!(!keeps(16));
        assert!(keeps(POOL_CAPACITY_MIN));
    }

    #[test]
    fn slot_vectors_come_back_empty_and_the_pool_stays_bounded() {
        let mut v = take_slots(10);
        assert!(v.capacity() >= SLOTS_CAPACITY_MIN);
        v.extend([1, 2, 3]);
        give_slots(v);
        let v = take_slots(500);
        assert!(v.is_empty());
        assert!(v.capacity() >= 500);
        for _ in 0..SLOTS_BYTES_MAX / (8 * SLOTS_CAPACITY_MIN) * 2 {
            give_slots(Vec::with_capacity(SLOTS_CAPACITY_MIN));
        }
        // Too large, or not of a pooled capacity: dropped, not counted.
        give_slots(Vec::with_capacity(SLOTS_CAPACITY_MAX * 2));
        give_slots(Vec::with_capacity(SLOTS_CAPACITY_MIN + 1));
        let pool = SLOTS.lock();
        assert!(pool.bytes <= SLOTS_BYTES_MAX);
        let vecs = pool
            .by_class
            .iter()
            .enumerate()
            .flat_map(|(c, l)| l.iter().map(move |v| (c, v)));
        let mut sum = 0;
        for (c, v) in vecs {
            assert_eq!(
                v.capacity(),
                SLOTS_CAPACITY_MIN << c,
                "a vector in the wrong class"
            );
            sum += 8 * v.capacity();
        }
        assert_eq!(pool.bytes, sum);
        drop(pool);
        // A request is served from the class that holds it.
        assert_eq!(
            take_slots(SLOTS_CAPACITY_MIN + 1).capacity(),
            2 * SLOTS_CAPACITY_MIN
        );
        assert!(take_slots(SLOTS_CAPACITY_MAX + 1).capacity() > SLOTS_CAPACITY_MAX);
    }

    /// The cache weighs a page's slots before they exist by `slots_bytes`,
    /// so it must match what `take_slots` hands out.
    #[test]
    fn slots_bytes_is_what_take_slots_hands_out() {
        for len in [0, 1, 15, 16, 17, 35, 64, 65, 1000, 4096, 4097, 10_000] {
            let v = take_slots(len);
            assert_eq!(slots_bytes(len), 8 * v.capacity(), "{len} slots");
            give_slots(v);
        }
    }
}
