//! Near-duplicate removal with MinHash signatures and LSH banding.
//!
//! Text is [`normalize`](crate::dedup::normalize)d, cut into character n-grams (so Japanese without spaces works), each
//! n-gram hashed to 32 bits, and `num_perm` universal hashes `h_i(x) = (a_i·x + b_i mod 2^64) >> 32`
//! (Dietzfelbinger's multiply-add-shift, strongly universal for 32-bit keys) give the MinHash
//! signature. Signatures are cut into `b` bands of `r` rows, with `(b, r)` chosen like
//! datasketch's `_optimal_param` to minimize the weighted false-positive and false-negative
//! areas around the threshold. A band collision only makes a candidate: it is a near-duplicate
//! when the Jaccard similarity estimated from the full signatures is at least the threshold.
//! Because every candidate is confirmed, a banding false positive costs only one signature
//! comparison while a false negative is a missed duplicate, so the weights are 0.1 / 0.9
//! (datasketch's default is 0.5 / 0.5): at threshold 0.8 and 128 permutations this gives
//! 14 bands of 9 rows, which makes a pair with Jaccard 0.85 a candidate 97.5 % of the time
//! (9 × 13 would: 69 %). Only kept texts are indexed.
//!
//! Memory per kept text: `4·num_perm` bytes of signature plus, per band, an 8-byte chain node
//! and about 21 bytes of open-addressing table (16-byte slots at most 3/4 full): about 920 bytes
//! with the defaults (128 permutations, 14 bands of 9 rows).

use crate::shuffle::{mix64, SplitMix64};

/// Settings of [`NearDedup`].
#[derive(Debug, Clone, PartialEq)]
pub struct NearDedupConfig {
    /// Jaccard similarity (of shingle sets) at or above which a text is a near-duplicate;
    /// in `(0, 1]`, default 0.8.
    pub threshold: f64,
    /// Number of MinHash permutations (signature length), at least 16; default 128.
    pub num_perm: usize,
    /// Character n-gram size on the normalized text, at least 1; default 5.
    pub shingle: usize,
    /// Seed of the hash functions; the same seed gives the same decisions.
    pub seed: u64,
}

impl Default for NearDedupConfig {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            num_perm: 128,
            shingle: 5,
            seed: 1,
        }
    }
}

/// The LSH band index: open addressing with linear probing from band key (a well-mixed
/// 64-bit hash; 0 marks an empty slot) to the newest node of that key's chain.
#[derive(Default)]
struct BandIndex {
    slots: Vec<(u64, u32)>,
    len: usize,
}

impl BandIndex {
    /// Makes room for `more` new keys (load factor at most 3/4), so that slots found by
    /// [`BandIndex::find`] stay valid while those keys are written.
    fn reserve(&mut self, more: usize) {
        if (self.len + more) * 4 <= self.slots.len() * 3 {
            return;
        }
        let cap = ((self.len + more) * 2).next_power_of_two().max(1024);
        let old = std::mem::replace(&mut self.slots, vec![(0, u32::MAX); cap]);
        for (key, head) in old.into_iter().filter(|s| s.0 != 0) {
            let i = self.find(key);
            self.slots[i] = (key, head);
        }
    }

    /// Loads the home slots of `keys` with independent loads, so that their cache misses overlap
    /// instead of being serialized behind the probe loop's branches.
    fn touch(&self, keys: &[u64]) {
        let mask = self.slots.len() - 1;
        let acc = keys
            .iter()
            .fold(0u64, |acc, &k| acc ^ self.slots[k as usize & mask].0);
        std::hint::black_box(acc);
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        loop {
            let k = self.slots[i].0;
            if k == key || k == 0 {
                return i;
            }
            i = (i + 1) & mask;
        }
    }
}

/// A streaming near-duplicate filter: feed texts with [`NearDedup::insert`] in order.
pub struct NearDedup {
    cfg: NearDedupConfig,
    bands: usize,
    rows: usize,
    /// `a_i` (odd) and `b_i` of the hash functions.
    mul: Vec<u64>,
    add: Vec<u64>,
    /// Seed and (odd) polynomial base of the shingle hash.
    shingle_seed: u64,
    shingle_base: u64,
    /// Signatures of the indexed texts, `num_perm` values each, back to back.
    sigs: Vec<u32>,
    /// Band key → most recent node; nodes chain items with the same band key.
    table: BandIndex,
    /// `(item, next node or u32::MAX)`.
    nodes: Vec<(u32, u32)>,
    /// Kept texts, empty ones included.
    kept: usize,
    // Scratch buffers reused between calls.
    chars: Vec<u64>,
    keys: Vec<u32>,
    sig: Vec<u32>,
    band_keys: Vec<u64>,
    band_slots: Vec<usize>,
    checked: Vec<u32>,
}

impl NearDedup {
    /// A filter for `cfg`; errors say which setting is out of range.
    pub fn new(cfg: NearDedupConfig) -> Result<Self, String> {
        if !(cfg.threshold > 0.0 && cfg.threshold <= 1.0) {
            return Err(format!(
                "near-dup threshold {} is out of range: expected a Jaccard similarity in (0, 1], e.g. 0.8",
                cfg.threshold
            ));
        }
        if cfg.num_perm < 16 {
            return Err(format!(
                "near-dup num_perm {} is too small: expected at least 16 (128 is typical)",
                cfg.num_perm
            ));
        }
        if cfg.num_perm > u32::MAX as usize / 2 {
            return Err(format!("near-dup num_perm {} is too large", cfg.num_perm));
        }
        if cfg.shingle == 0 {
            return Err("near-dup shingle size 0: expected at least 1 character".into());
        }
        let (bands, rows) = optimal_bands(cfg.threshold, cfg.num_perm, FP_WEIGHT, FN_WEIGHT);
        let mut rng = SplitMix64::new(cfg.seed);
        let mul = (0..cfg.num_perm).map(|_| rng.next_u64() | 1).collect();
        let add = (0..cfg.num_perm).map(|_| rng.next_u64()).collect();
        let shingle_seed = rng.next_u64();
        let shingle_base = rng.next_u64() | 1;
        Ok(Self {
            bands,
            rows,
            mul,
            add,
            shingle_seed,
            shingle_base,
            sigs: Vec::new(),
            table: BandIndex::default(),
            nodes: Vec::new(),
            kept: 0,
            chars: Vec::new(),
            keys: Vec::new(),
            sig: vec![0; cfg.num_perm],
            band_keys: Vec::new(),
            band_slots: Vec::new(),
            checked: Vec::new(),
            cfg,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &NearDedupConfig {
        &self.cfg
    }

    /// `(bands, rows)` of the LSH index; `bands · rows ≤ num_perm`.
    pub fn bands(&self) -> (usize, usize) {
        (self.bands, self.rows)
    }

    /// Number of kept texts (empty ones included).
    pub fn len(&self) -> usize {
        self.kept
    }

    /// True if and only if nothing was kept yet.
    pub fn is_empty(&self) -> bool {
        self.kept == 0
    }

    /// True if `text` is new (kept, and indexed), false if it is a near-duplicate of a kept
    /// text. Empty text (after normalization) is always kept and never indexed.
    pub fn insert(&mut self, text: &str) -> bool {
        if !self.compute_signature(text) {
            self.kept += 1;
            return true;
        }
        let p = self.cfg.num_perm;
        let mut keys = std::mem::take(&mut self.band_keys);
        keys.clear();
        keys.extend((0..self.bands).map(|b| self.band_key(b)));
        self.table.reserve(keys.len());
        self.table.touch(&keys);
        self.band_slots.clear();
        // Candidates from band collisions, confirmed by the estimated Jaccard.
        let need = (self.cfg.threshold * p as f64 - 1e-9).ceil() as usize;
        self.checked.clear();
        let mut duplicate = false;
        'bands: for &key in &keys {
            let slot = self.table.find(key);
            self.band_slots.push(slot);
            let (k, mut node) = self.table.slots[slot];
            if k != key {
                continue;
            }
            while node != u32::MAX {
                let (item, next) = self.nodes[node as usize];
                node = next;
                if self.checked.contains(&item) {
                    continue;
                }
                self.checked.push(item);
                let other = &self.sigs[item as usize * p..(item as usize + 1) * p];
                if agrees_at_least(other, &self.sig, need) {
                    duplicate = true;
                    break 'bands;
                }
            }
        }
        if !duplicate {
            // Keep and index; the slots found above are still valid (room was reserved).
            let item = u32::try_from(self.sigs.len() / p).expect("more than 2^32 indexed texts");
            self.sigs.extend_from_slice(&self.sig);
            for (&key, &slot) in keys.iter().zip(&self.band_slots) {
                let node = u32::try_from(self.nodes.len()).expect("LSH index over 2^32 entries");
                // Another band of this text may have taken the empty slot found for this one.
                let slot = match self.table.slots[slot].0 {
                    k if k == key || k == 0 => slot,
                    _ => self.table.find(key),
                };
                let entry = &mut self.table.slots[slot];
                let prev = if entry.0 == key {
                    entry.1
                } else {
                    self.table.len += 1;
                    u32::MAX
                };
                *entry = (key, node);
                self.nodes.push((item, prev));
            }
            self.kept += 1;
        }
        self.band_keys = keys;
        !duplicate
    }

    /// The MinHash signature of `text` (`num_perm` values), or `None` for empty text.
    pub fn signature(&mut self, text: &str) -> Option<Vec<u32>> {
        self.compute_signature(text).then(|| self.sig.clone())
    }

    /// Fills `self.sig`; false for empty text.
    fn compute_signature(&mut self, text: &str) -> bool {
        let seed = self.shingle_seed;
        self.chars.clear();
        // Each character mixed to 64 bits; shingles hash as polynomials in them (rolling).
        for_each_normalized_char(text, |c| self.chars.push(mix64(u64::from(c) ^ seed)));
        let len = self.chars.len();
        if len == 0 {
            return false;
        }
        let k = self.cfg.shingle.min(len);
        let base = self.shingle_base;
        let top = (1..k).fold(1u64, |p, _| p.wrapping_mul(base)); // base^(k-1)
        let finish = |h: u64| ((h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32) as u32;
        let mut h = self.chars[..k]
            .iter()
            .fold(0u64, |h, &c| h.wrapping_mul(base).wrapping_add(c));
        self.keys.clear();
        self.keys.reserve(len + 1 - k);
        self.keys.push(finish(h));
        for i in k..len {
            h = h
                .wrapping_sub(self.chars[i - k].wrapping_mul(top))
                .wrapping_mul(base)
                .wrapping_add(self.chars[i]);
            self.keys.push(finish(h));
        }
        minhash(&self.keys, &self.mul, &self.add, &mut self.sig);
        true
    }

    fn band_key(&self, band: usize) -> u64 {
        let rows = &self.sig[band * self.rows..(band + 1) * self.rows];
        let mut h = (band as u64 + 1).wrapping_mul(0xB5AD_4ECE_DA1C_E2A9);
        for &v in rows {
            h = (h ^ u64::from(v))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
        mix64(h).max(1) // 0 marks an empty slot
    }
}

/// Calls `f` for each character of [`normalize`](crate::dedup::normalize)`(text)`, in order, without building the
/// string: the same folding, with fast paths for ASCII and for kana / CJK ideographs (which
/// have no case) so that only other letters take the Unicode case tables.
fn for_each_normalized_char(text: &str, mut f: impl FnMut(char)) {
    let (mut any, mut space) = (false, false);
    for c in text.chars() {
        let c = match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        };
        if c.is_whitespace() {
            space = any;
            continue;
        }
        if space {
            f(' ');
            space = false;
        }
        any = true;
        match c as u32 {
            0..=0x7F => f(c.to_ascii_lowercase()),
            0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF => f(c),
            _ => c.to_lowercase().for_each(&mut f),
        }
    }
}

/// The MinHash of `keys` under the hash family `(mul, add)`, written to `sig`: the AVX2
/// build of the same loop where the CPU has it (chosen at run time), else the portable one.
/// Both compute exactly the same values.
fn minhash(keys: &[u32], mul: &[u64], add: &[u64], sig: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { minhash_avx2(keys, mul, add, sig) };
            return;
        }
    }
    minhash_portable(keys, mul, add, sig);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn minhash_avx2(keys: &[u32], mul: &[u64], add: &[u64], sig: &mut [u32]) {
    minhash_portable(keys, mul, add, sig);
}

/// `sig[i] = min over x of ((mul[i]·x + add[i]) mod 2^64) >> 32`. The high half is monotone,
/// so the minimum is taken over the full 64-bit values (offset by 2^63 so that a signed
/// comparison, which SIMD units have, orders them as unsigned) and shifted once at the end.
#[inline(always)]
fn minhash_portable(keys: &[u32], mul: &[u64], add: &[u64], sig: &mut [u32]) {
    const CHUNK: usize = 32;
    const MSB: u64 = 1 << 63;
    let n = sig.len();
    let (mul, add) = (&mul[..n], &add[..n]);
    let mut start = 0;
    while start < n {
        let m = CHUNK.min(n - start);
        let mut a = [0u64; CHUNK];
        let mut b = [0u64; CHUNK];
        let mut s = [i64::MAX; CHUNK];
        a[..m].copy_from_slice(&mul[start..start + m]);
        for (bj, &add) in b.iter_mut().zip(&add[start..start + m]) {
            *bj = add ^ MSB;
        }
        for &x in keys {
            let x = u64::from(x);
            for j in 0..CHUNK {
                let t = a[j].wrapping_mul(x).wrapping_add(b[j]) as i64;
                s[j] = s[j].min(t);
            }
        }
        for (out, &t) in sig[start..start + m].iter_mut().zip(&s) {
            *out = ((t as u64 ^ MSB) >> 32) as u32;
        }
        start += m;
    }
}

/// The share of equal positions of two signatures: an estimate of the Jaccard similarity of
/// the underlying shingle sets.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "signatures of different lengths");
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// True if at least `need` positions of the two signatures agree; stops as soon as the answer
/// is known (most banding candidates are far below the threshold and fail within a few chunks).
fn agrees_at_least(a: &[u32], b: &[u32], need: usize) -> bool {
    let allowed_misses = a.len().saturating_sub(need);
    let mut misses = 0;
    for (x, y) in a.chunks(16).zip(b.chunks(16)) {
        misses += x.iter().zip(y).filter(|(p, q)| p != q).count();
        if misses > allowed_misses {
            return false;
        }
    }
    true
}

/// Weight of banding false positives (candidates below the threshold) in choosing `(b, r)`.
const FP_WEIGHT: f64 = 0.1;
/// Weight of banding false negatives (near-duplicates never made candidates).
const FN_WEIGHT: f64 = 0.9;

/// `(bands, rows)` minimizing `fp_weight·FP + fn_weight·FN` where FP is the area under the
/// S-curve `1 − (1 − s^r)^b` below the threshold and FN the area above it missing from 1.
fn optimal_bands(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> (usize, usize) {
    let mut best = (1, 1);
    let mut best_err = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let p = |s: f64| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
            let fp = integrate(p, 0.0, threshold);
            let fn_ = integrate(|s| 1.0 - p(s), threshold, 1.0);
            let err = fp_weight * fp + fn_weight * fn_;
            if err < best_err - 1e-12 {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Composite Simpson's rule on 64 intervals (the integrands are smooth and monotone).
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const N: usize = 64;
    if b <= a {
        return 0.0;
    }
    let h = (b - a) / N as f64;
    let mut sum = f(a) + f(b);
    for i in 1..N {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += w * f(a + i as f64 * h);
    }
    sum * h / 3.0
}

#[cfg(test)]
mod tests;
