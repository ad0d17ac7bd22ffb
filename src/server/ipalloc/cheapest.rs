//! Per node, the cheapest unhosted address it may take: what LCP2's placement step picks from.
//! Stock has nothing like it: it rescans every (address, node) pair for every placement.
//!
//! Candidates are ordered as stock's scan meets them: smaller sum first, then earlier address.
//! Two trackers keep that order up to date while addresses are placed:
//! * [`TrieMins`], when all keys share their first three words and no sum can reach [`INF`]:
//!   the addresses' binary trie (the list is sorted by key, so each subtree is a run of the
//!   list) with a lazy minimum per subtree. The addresses at distance `96 + k` from a placed
//!   address are exactly the sibling subtree of its ancestor that splits at bit `k`, so a
//!   placement adds one constant to each sibling on the path to the root: a few dozen steps
//!   per node instead of a pass over the column.
//! * [`Kept`], for everything else: a short sorted list per node, refilled by a scan of the
//!   column whenever the column changes or the list runs dry.

use std::ops::Range;

/// Marks an address a node may not (or no longer) take.
pub(super) const INF: u32 = u32::MAX;

const NO_PARENT: u32 = u32::MAX;

/// The binary trie of the keys' last words, given in descending order and distinct. Leaves are
/// numbered by list position (`0..n`), inner nodes follow (`n..2n-1`, children before parents).
#[derive(Debug, Clone)]
pub(super) struct Trie {
    leaves: usize,
    parent: Vec<u32>,
    /// Per node: the run of list positions below it.
    start: Vec<u32>,
    end: Vec<u32>,
    /// Per inner node: its two children, earlier addresses first.
    children: Vec<[u32; 2]>,
    /// Per inner node: how many leading bits its addresses share.
    common: Vec<u32>,
}

impl Trie {
    pub fn new(low: &[u32]) -> Self {
        let leaves = low.len();
        let total = (2 * leaves).saturating_sub(1).max(1);
        let mut trie = Trie {
            leaves,
            parent: vec![NO_PARENT; total],
            start: (0..total as u32).collect(),
            end: (1..=total as u32).collect(),
            children: Vec::with_capacity(leaves.saturating_sub(1)),
            common: Vec::with_capacity(leaves.saturating_sub(1)),
        };
        if leaves > 0 {
            trie.build(low, 0, leaves);
        }
        trie
    }

    fn build(&mut self, low: &[u32], start: usize, end: usize) -> u32 {
        if end - start == 1 {
            return start as u32;
        }
        // Sorted, so the first and last keys differ at the range's first differing bit, and
        // those with that bit set come first. (Equal keys, which the merged list never has,
        // would share all 32 bits and could split anywhere.)
        let common = (low[start] ^ low[end - 1]).leading_zeros();
        let split = match 1u32.checked_shl(31u32.saturating_sub(common)) {
            Some(bit) if common < 32 => start + low[start..end].partition_point(|&k| k & bit != 0),
            _ => start + 1,
        }
        .clamp(start + 1, end - 1);
        let first = self.build(low, start, split);
        let second = self.build(low, split, end);
        let id = (self.leaves + self.children.len()) as u32;
        self.children.push([first, second]);
        self.common.push(common);
        self.parent[first as usize] = id;
        self.parent[second as usize] = id;
        self.start[id as usize] = start as u32;
        self.end[id as usize] = end as u32;
        id
    }

    /// The last inner node built, or the only leaf.
    fn root(&self) -> usize {
        match self.children.len() {
            0 => 0,
            inner => self.leaves + inner - 1,
        }
    }

    /// The other addresses by distance from `leaf`, nearest first: for each ancestor, the run
    /// of positions under the child not on `leaf`'s path, and how many leading bits that run
    /// shares with `leaf`.
    pub fn for_each_run(&self, leaf: usize, mut f: impl FnMut(Range<usize>, u32)) {
        let mut below = leaf;
        let mut node = self.parent[leaf];
        while node != NO_PARENT {
            let inner = node as usize - self.leaves;
            let [a, b] = self.children[inner];
            let sibling = if a as usize == below { b } else { a } as usize;
            f(
                self.start[sibling] as usize..self.end[sibling] as usize,
                self.common[inner],
            );
            below = node as usize;
            node = self.parent[below];
        }
    }

    /// The inner nodes from `leaf`'s parent up to the root.
    pub fn path(&self, leaf: usize, out: &mut Vec<u32>) {
        out.clear();
        let mut node = self.parent[leaf];
        while node != NO_PARENT {
            out.push(node);
            node = self.parent[node as usize];
        }
    }
}

/// One node's candidates over a [`Trie`]: per trie node, the minimum `(sum, address)` of the
/// eligible addresses below it, packed as `sum << 32 | address` so that one integer comparison
/// orders them as stock does.
#[derive(Debug, Clone)]
pub(super) struct TrieMins {
    root: usize,
    key: Vec<u64>,
    /// Per inner node: an addition pending for its children (already in its own `key`).
    lazy: Vec<u32>,
}

const INF_KEY: u64 = (INF as u64) << 32;

impl TrieMins {
    /// `leaves[ip]` is the address's sum, or [`INF`] if the node may not take it.
    pub fn new(trie: &Trie, leaves: impl ExactSizeIterator<Item = u32>) -> Self {
        let total = trie.parent.len();
        let mut mins = TrieMins {
            root: trie.root(),
            key: vec![INF_KEY; total],
            lazy: vec![0; trie.children.len()],
        };
        for (ip, sum) in leaves.enumerate() {
            mins.key[ip] = u64::from(sum) << 32 | ip as u64;
        }
        for inner in 0..trie.children.len() {
            mins.pull(trie, trie.leaves + inner);
        }
        mins
    }

    pub fn first(&self) -> Option<(u32, usize)> {
        let key = self.key[self.root];
        (key < INF_KEY).then_some(((key >> 32) as u32, (key & 0xffff_ffff) as usize))
    }

    #[inline]
    fn apply(&mut self, trie: &Trie, node: usize, delta: u32) {
        let key = &mut self.key[node];
        if *key < INF_KEY {
            *key += u64::from(delta) << 32;
        }
        if node >= trie.leaves {
            let lazy = &mut self.lazy[node - trie.leaves];
            *lazy = lazy.wrapping_add(delta);
        }
    }

    #[inline]
    fn push(&mut self, trie: &Trie, node: usize) {
        let inner = node - trie.leaves;
        let delta = self.lazy[inner];
        if delta != 0 {
            let [a, b] = trie.children[inner];
            self.apply(trie, a as usize, delta);
            self.apply(trie, b as usize, delta);
            self.lazy[inner] = 0;
        }
    }

    #[inline]
    fn pull(&mut self, trie: &Trie, node: usize) {
        let [a, b] = trie.children[node - trie.leaves];
        self.key[node] = self.key[a as usize].min(self.key[b as usize]);
    }

    /// `placed` is no longer a candidate. With `square`, `placed` went to this node: every
    /// other address gets its squared distance to `placed` added, `square(k)` for the subtree
    /// that shares exactly `k` leading bits with it. `path` is `Trie::path(placed)`.
    pub fn place(
        &mut self,
        trie: &Trie,
        path: &[u32],
        placed: usize,
        square: Option<&dyn Fn(u32) -> u32>,
    ) {
        for &node in path.iter().rev() {
            self.push(trie, node as usize);
        }
        self.key[placed] = INF_KEY;
        let mut below = placed;
        for &node in path {
            let node = node as usize;
            if let Some(square) = square {
                let inner = node - trie.leaves;
                let [a, b] = trie.children[inner];
                let sibling = if a as usize == below { b } else { a };
                self.apply(trie, sibling as usize, square(trie.common[inner]));
            }
            self.pull(trie, node);
            below = node;
        }
    }
}

/// The cheapest unhosted addresses a node may take, as `(sum, ip)` in stock's preference order
/// (smaller sum, then earlier address). Placing an address removes it from every column, and it
/// is usually among the cheapest of most of them; a column is rebuilt when an address is placed
/// on its node, about every `nodes` placements, so keeping more than `nodes` entries means a
/// column seldom runs dry and has to be rescanned in between.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    items: Vec<(u32, u32)>,
    head: usize,
    keep: usize,
    /// The column had more candidates than were kept.
    truncated: bool,
}

impl Kept {
    pub fn new(nodes: usize) -> Self {
        let keep = nodes.clamp(8, 64);
        Kept {
            items: Vec::with_capacity(keep),
            head: 0,
            keep,
            truncated: false,
        }
    }

    /// Refills from a column's candidates given in ascending address order.
    pub fn rebuild(&mut self, mut candidates: impl Iterator<Item = (u32, usize)>) {
        self.items.clear();
        self.head = 0;
        self.truncated = false;
        while self.items.len() < self.keep {
            let Some((sum, ip)) = candidates.next() else {
                return;
            };
            self.insert(sum, ip);
        }
        let mut threshold = self.items.last().map_or(0, |last| last.0);
        for (sum, ip) in candidates {
            self.truncated = true;
            if sum < threshold {
                self.items.pop();
                self.insert(sum, ip);
                threshold = self.items.last().map_or(0, |last| last.0);
            }
        }
    }

    /// Equal sums keep address order: a later address goes after them.
    fn insert(&mut self, sum: u32, ip: usize) {
        let at = self.items.partition_point(|item| item.0 <= sum);
        self.items.insert(at, (sum, ip as u32));
    }

    pub fn first(&self) -> Option<(u32, usize)> {
        self.items
            .get(self.head)
            .map(|&(sum, ip)| (sum, ip as usize))
    }

    /// Forgets `ip`; true if the column must be rescanned.
    pub fn remove(&mut self, ip: usize) -> bool {
        let ip = ip as u32;
        if let Some(at) = (self.head..self.items.len()).find(|&i| self.items[i].1 == ip) {
            if at == self.head {
                self.head += 1;
            } else {
                self.items.remove(at);
            }
        }
        self.head == self.items.len() && self.truncated
    }
}
