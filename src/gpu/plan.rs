//! Activation memory planning from lifetimes (the shared-objects problem of Pisarchyk & Lee,
//! "Efficient Memory Management for Deep Neural Net Inference", 2020; ratchet's
//! `buffer_allocator` is one implementation). Pure host code: given each activation's size and
//! the first and last dispatch that binds it, assign activations to physical buffers so that no
//! two activations whose lifetimes overlap share one, keeping the total bytes small.

use super::pool::size_class;

/// One activation: its size and the inclusive range of dispatch indices that bind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub first: usize,
    pub last: usize,
}

/// The assignment: `slot[i]` is the physical buffer of usage `i`; `slot_bytes[s]` is the size
/// requested for buffer `s` (the largest usage it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub slot: Vec<usize>,
    pub slot_bytes: Vec<u64>,
}

impl Plan {
    /// Bytes the plan allocates, with the pool's size-class rounding.
    pub fn total_bytes(&self) -> u64 {
        self.slot_bytes.iter().map(|&b| size_class(b)).sum()
    }
}

/// Plans `usages` with two greedy orders and keeps the smaller result: by decreasing size
/// (Pisarchyk & Lee's greedy-by-size) and by first use (what a release-on-last-read allocator
/// does). Two usages share a buffer only when one's last dispatch comes strictly before the
/// other's first: a dispatch that reads one and writes the other needs both at once.
pub fn plan(usages: &[Usage]) -> Plan {
    let mut by_size: Vec<usize> = (0..usages.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(usages[i].bytes), usages[i].first));
    let mut by_first: Vec<usize> = (0..usages.len()).collect();
    by_first.sort_by_key(|&i| (usages[i].first, std::cmp::Reverse(usages[i].bytes)));
    let a = greedy(usages, &by_size);
    let b = greedy(usages, &by_first);
    if b.total_bytes() < a.total_bytes() {
        b
    } else {
        a
    }
}

/// Places usages in `order`, each into the smallest existing buffer that fits it and holds no
/// overlapping usage, else into a new buffer (which may grow when a larger usage joins it
/// later, in the first-use order).
fn greedy(usages: &[Usage], order: &[usize]) -> Plan {
    let mut slot = vec![usize::MAX; usages.len()];
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        let u = usages[i];
        let free = |s: usize| {
            members[s].iter().all(|&j| {
                let v = usages[j];
                v.last < u.first || u.last < v.first
            })
        };
        // Prefer a buffer that already fits (smallest such); else grow the largest free one.
        let fits = (0..slot_bytes.len())
            .filter(|&s| slot_bytes[s] >= u.bytes && free(s))
            .min_by_key(|&s| slot_bytes[s]);
        let chosen = fits.or_else(|| {
            (0..slot_bytes.len())
                .filter(|&s| free(s))
                .max_by_key(|&s| slot_bytes[s])
        });
        let s = match chosen {
            Some(s) => s,
            None => {
                slot_bytes.push(0);
                members.push(Vec::new());
                slot_bytes.len() - 1
            }
        };
        slot_bytes[s] = slot_bytes[s].max(u.bytes);
        members[s].push(i);
        slot[i] = s;
    }
    Plan { slot, slot_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(bytes: u64, first: usize, last: usize) -> Usage {
        Usage { bytes, first, last }
    }

    fn check_valid(us: &[Usage], p: &Plan) {
        for i in 0..us.len() {
            assert!(p.slot_bytes[p.slot[i]] >= us[i].bytes);
            for j in 0..us.len() {
                if i != j && p.slot[i] == p.slot[j] {
                    let (a, b) = (us[i], us[j]);
                    assert!(
                        a.last < b.first || b.last < a.first,
                        "{a:?} and {b:?} share"
                    );
                }
            }
        }
    }

    #[test]
    fn a_buffer_read_after_its_would_be_reuse_stays_alive() {
        // A is written at 0 and read again at 3; B is written at 1 and C at 2. A release after
        // A's "obvious" consumer (dispatch 1) would hand A's buffer to C: the plan must not.
        let us = [u(4096, 0, 3), u(4096, 1, 2), u(4096, 2, 3)];
        let p = plan(&us);
        check_valid(&us, &p);
        assert_ne!(p.slot[0], p.slot[2]);
        assert_ne!(p.slot[0], p.slot[1]);
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        // x0 -> x1 -> x2 -> ... each read only by the next dispatch: two buffers suffice.
        let us: Vec<Usage> = (0..10).map(|i| u(1 << 20, i, i + 1)).collect();
        let p = plan(&us);
        check_valid(&us, &p);
        assert_eq!(p.slot_bytes.len(), 2);
    }

    #[test]
    fn the_same_dispatch_never_shares() {
        // Touching intervals (one ends where the other starts) share a dispatch.
        let us = [u(256, 0, 1), u(256, 1, 2)];
        let p = plan(&us);
        assert_ne!(p.slot[0], p.slot[1]);
    }

    #[test]
    fn random_lifetimes_give_valid_plans_no_larger_than_one_buffer_each() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200 {
            let n = 1 + (next() % 40) as usize;
            let us: Vec<Usage> = (0..n)
                .map(|_| {
                    let first = (next() % 50) as usize;
                    let len = (next() % 10) as usize;
                    u(256 + next() % 100_000, first, first + len)
                })
                .collect();
            let p = plan(&us);
            check_valid(&us, &p);
            let separate: u64 = us.iter().map(|x| size_class(x.bytes)).sum();
            assert!(p.total_bytes() <= separate);
        }
    }
}
