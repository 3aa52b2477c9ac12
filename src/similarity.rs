//! Similarity kernels for Bloom-filter encodings: popcount of `A AND B` and
//! Dice similarity.
//!
//! Records are Bloom filters stored as `u64` words; a block of `n` filters of
//! `words` words each is one contiguous `&[u64]` of length `n * words`. The
//! hot operation is [`and_popcount_many`]: one query filter against a block of
//! candidates, which every [`Kernel`] implements with the query kept in
//! registers and the candidates processed four at a time.
//!
//! Several implementations ("kernels") exist; [`Kernel::detect`] picks the best
//! one the running CPU supports (runtime detection, no build flags needed), and
//! every kernel gives bit-identical results. Counts are `u32`, so a filter has
//! fewer than 2^26 words. [`all_pairs_above`] switches to a bit-sliced
//! algorithm when it has many queries (see its documentation).
//!
//! Besides one prefetch hint in `encode::table`, this is the only module of the crate with
//! `unsafe` code. It is used
//! for exactly two things, each block carrying a `// SAFETY:` comment:
//! calling a `#[target_feature]` function after the CPU feature was detected,
//! and SIMD loads/stores through pointers derived from references whose
//! length covers the access.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::sync::OnceLock;

/// Which popcount implementation is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512F + AVX512-VPOPCNTDQ: `vpopcntq` on 512-bit vectors.
    Avx512,
    /// AVX2: nibble lookup table popcount with `vpshufb`.
    Avx2,
    /// Scalar `popcnt` instruction.
    Popcnt,
    /// Plain `u64::count_ones` with no target features; runs everywhere.
    Portable,
}

impl Kernel {
    /// Every kernel, best first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::Popcnt,
        Kernel::Portable,
    ];

    /// The best kernel the running CPU supports, detected once and cached.
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            Kernel::ALL
                .into_iter()
                .find(|k| k.is_available())
                .unwrap_or(Kernel::Portable)
        })
    }

    /// All kernels that can run on this CPU, best first (always ends with
    /// [`Kernel::Portable`]).
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Whether this kernel can run on this CPU. Passing a kernel for which
    /// this is `false` to the functions of this module panics.
    pub fn is_available(self) -> bool {
        cpu_kernels() & self.bit() != 0
    }

    /// Short lower-case name: `avx512`, `avx2`, `popcnt` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Popcnt => "popcnt",
            Kernel::Portable => "portable",
        }
    }

    /// Parses a name as returned by [`Kernel::name`] (case-insensitive,
    /// surrounding whitespace ignored). Does not check availability.
    pub fn from_name(name: &str) -> Option<Kernel> {
        let name = name.trim();
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        match self {
            Kernel::Avx512 => 1,
            Kernel::Avx2 => 2,
            Kernel::Popcnt => 4,
            Kernel::Portable => 8,
        }
    }

    /// Returns `self` if it can run here, panics otherwise. Every dispatch goes
    /// through this check, which is what makes the `unsafe` calls of the
    /// `#[target_feature]` kernels sound.
    #[inline]
    #[track_caller]
    fn checked(self) -> Kernel {
        assert!(
            self.is_available(),
            "similarity kernel `{}` is not supported by this CPU",
            self.name()
        );
        self
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bit set of the kernels (see [`Kernel::bit`]) this CPU can run; probed once.
fn cpu_kernels() -> u8 {
    static MASK: OnceLock<u8> = OnceLock::new();
    *MASK.get_or_init(probe_cpu)
}

#[cfg(target_arch = "x86_64")]
fn probe_cpu() -> u8 {
    let mut mask = Kernel::Portable.bit();
    let popcnt = std::is_x86_feature_detected!("popcnt");
    if popcnt {
        mask |= Kernel::Popcnt.bit();
    }
    // The AVX2 kernel also uses scalar popcnt for the tail words.
    let avx2 = popcnt && std::is_x86_feature_detected!("avx2");
    if avx2 {
        mask |= Kernel::Avx2.bit();
    }
    // The AVX-512 kernel shares the AVX2 code of `all_pairs_above` (every
    // AVX-512 CPU has AVX2; checked anyway, since that code relies on it).
    if avx2
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vpopcntdq")
    {
        mask |= Kernel::Avx512.bit();
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
fn probe_cpu() -> u8 {
    Kernel::Portable.bit()
}

/// Number of set bits in `words`, with the best available kernel.
pub fn popcount(words: &[u64]) -> u32 {
    and_popcount(Kernel::detect(), words, words)
}

/// Popcount of each of the `out.len()` filters of `words` words in `block`
/// (`block.len() == out.len() * words`), e.g. to precompute the popcounts that
/// [`all_pairs_above`] needs. Lengths are checked like [`and_popcount_many`].
///
/// # Panics
/// If `kernel` is not available on this CPU.
pub fn popcount_each(kernel: Kernel, block: &[u64], words: usize, out: &mut [u32]) {
    let kernel = kernel.checked();
    debug_assert_eq!(block.len(), out.len() * words, "block length");
    if words == 0 {
        out.fill(0);
        return;
    }
    for (filter, o) in block.chunks_exact(words).zip(out.iter_mut()) {
        *o = and_popcount(kernel, filter, filter);
    }
}

/// `popcount(a AND b)` with the given kernel.
///
/// `a` and `b` must have the same length (checked by a debug assertion; in
/// release builds only the first `min(a.len(), b.len())` words are compared).
/// Any sub-range works, e.g. `and_popcount(k, &a[4..8], &b[4..8])` for
/// field-level similarity.
///
/// # Panics
/// If `kernel` is not available on this CPU.
#[inline]
pub fn and_popcount(kernel: Kernel, a: &[u64], b: &[u64]) -> u32 {
    debug_assert_eq!(a.len(), b.len(), "and_popcount: length mismatch");
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    match kernel.checked() {
        Kernel::Portable => portable::and_popcount(a, b),
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt => {
            // SAFETY: `checked` verified that this CPU supports popcnt.
            unsafe { popcnt::and_popcount(a, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: `checked` verified that this CPU supports avx2 and popcnt.
            unsafe { avx2::and_popcount(a, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            // SAFETY: `checked` verified that this CPU supports avx512f and avx512vpopcntdq.
            unsafe { avx512::and_popcount(a, b) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable kernel is available on this architecture"),
    }
}

/// `popcount(a AND b)` of each segment of two filters: segment `s` is the word range
/// `ends[s-1]..ends[s]` (the first starts at 0), its count goes to `out[s]`. One call per pair
/// of records instead of one per segment: the matcher's field-level comparison.
///
/// # Panics
/// If `kernel` is not available on this CPU.
#[inline]
pub fn and_popcount_segments(
    kernel: Kernel,
    a: &[u64],
    b: &[u64],
    ends: &[usize],
    out: &mut [u32],
) {
    debug_assert_eq!(
        ends.len(),
        out.len(),
        "and_popcount_segments: one count per segment"
    );
    match kernel.checked() {
        Kernel::Portable => portable::and_popcount_ranges(a, b, ends, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt | Kernel::Avx2 | Kernel::Avx512 => {
            // SAFETY: `checked` verified that this CPU supports the kernel, and every one of
            // these kernels requires popcnt.
            unsafe { popcnt::and_popcount_ranges(a, b, ends, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable kernel is available on this architecture"),
    }
}

/// Dice similarity `2·and_count / (pop_a + pop_b)`, defined as 0 when both
/// filters are empty.
///
/// The quotient is correctly rounded to `f32` (computed in `f32` when the
/// operands are exact in `f32`, otherwise in `f64`). It is monotone in each
/// argument's direction, which [`all_pairs_above`] relies on.
#[inline]
pub fn dice(and_count: u32, pop_a: u32, pop_b: u32) -> f32 {
    let sum = u64::from(pop_a) + u64::from(pop_b);
    let twice = 2 * u64::from(and_count);
    if sum == 0 {
        0.0
    } else if sum <= F32_EXACT && twice <= F32_EXACT {
        twice as f32 / sum as f32
    } else {
        (twice as f64 / sum as f64) as f32
    }
}

/// Integers up to this value convert to `f32` exactly.
const F32_EXACT: u64 = 1 << 24;

/// `popcount(query AND block[i])` into `out[i]` for each of the `n` filters of
/// `words` words in `block` (`block.len() == n * words`, `out.len() == n`,
/// `query.len() == words`).
///
/// The lengths are checked by debug assertions; in release builds
/// `n = min(out.len(), block.len() / words)` filters are processed (the rest
/// of `out` is left untouched) and only the first `min(query.len(), words)`
/// words of each filter are compared.
///
/// # Panics
/// If `kernel` is not available on this CPU.
pub fn and_popcount_many(
    kernel: Kernel,
    query: &[u64],
    block: &[u64],
    words: usize,
    out: &mut [u32],
) {
    let kernel = kernel.checked();
    debug_assert_eq!(query.len(), words, "and_popcount_many: query length");
    debug_assert_eq!(
        block.len(),
        out.len() * words,
        "and_popcount_many: block length"
    );
    if words == 0 {
        out.fill(0);
        return;
    }
    let n = out.len().min(block.len() / words);
    let q = &query[..words.min(query.len())];
    many_unchecked(kernel, q, &block[..n * words], words, &mut out[..n]);
}

/// Dispatch for `and_popcount_many` once the kernel has been checked and the
/// lengths fixed: `block.len() == out.len() * stride`, `q.len() <= stride`.
#[inline]
fn many_unchecked(kernel: Kernel, q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
    debug_assert!(q.len() <= stride && block.len() == out.len() * stride);
    if q.is_empty() {
        out.fill(0);
        return;
    }
    match kernel {
        Kernel::Portable => portable::many(q, block, stride, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt => {
            // SAFETY: the caller obtained `kernel` from `Kernel::checked`, so this CPU supports popcnt.
            unsafe { popcnt::many(q, block, stride, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: the caller obtained `kernel` from `Kernel::checked`, so this CPU supports avx2 and popcnt.
            unsafe { avx2::many(q, block, stride, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            // SAFETY: the caller obtained `kernel` from `Kernel::checked`, so this CPU supports
            // avx512f and avx512vpopcntdq.
            unsafe { avx512::many(q, block, stride, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable kernel is available on this architecture"),
    }
}

/// Candidates per tile in [`all_pairs_above`]: counts and Dice values of a tile
/// stay in L1.
const TILE: usize = sliced::TILE;

/// From this many queries on, [`all_pairs_above`] uses the bit-sliced path,
/// whose one-off transposition of `b` is then amortised.
const SLICED_MIN_QUERIES: usize = 64;

/// All-vs-all Dice of `a` (`n_a` filters of `words` words) against `b` (`n_b`
/// filters), calling `f(i, j, dice)` for every pair with `dice >= threshold`,
/// in order of increasing `i`, then increasing `j`.
///
/// `pop_a[i]` / `pop_b[j]` must be the exact popcounts of the filters (see
/// [`popcount_each`]): they are used for the length filter — Dice is at most
/// `2·min(pa, pb) / (pa + pb)`, so candidates that cannot reach the threshold
/// are skipped before the kernel runs. The reported values are exactly
/// `dice(and_popcount(..), pop_a[i], pop_b[j])`.
///
/// Lengths are checked by debug assertions; in release builds
/// `n_a = min(a.len() / words, pop_a.len())`, and likewise for `b`.
///
/// With fewer than 64 queries each query runs [`and_popcount_many`] over the
/// eligible runs of `b`. With more, `b` is first transposed into bit-sliced
/// tiles of 256 candidates and each query counts a whole tile with a
/// Harley–Seal adder tree over the rows of its set bits (about a third of the
/// work per comparison on AVX2); the results are identical. The kernel
/// selects the instruction set of both paths. With [`Kernel::Avx512`] and
/// filters of 8, 16 or 32 words (Dice exact in `f32`), both paths are fused
/// AVX-512 loops instead: 1 query against 8 candidates with the counts reduced
/// in registers, and, for many queries, `b` transposed once into groups of
/// eight so that each broadcast query word meets one word of eight candidates
/// and the counts land in the lanes.
///
/// # Panics
/// If `kernel` is not available on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn all_pairs_above(
    kernel: Kernel,
    a: &[u64],
    pop_a: &[u32],
    b: &[u64],
    pop_b: &[u32],
    words: usize,
    threshold: f32,
    mut f: impl FnMut(usize, usize, f32),
) {
    let kernel = kernel.checked();
    debug_assert_eq!(a.len(), pop_a.len() * words, "all_pairs_above: a length");
    debug_assert_eq!(b.len(), pop_b.len() * words, "all_pairs_above: b length");
    if words == 0 || threshold.is_nan() {
        return;
    }
    let n_a = (a.len() / words).min(pop_a.len());
    let n_b = (b.len() / words).min(pop_b.len());
    let (a, pop_a) = (&a[..n_a * words], &pop_a[..n_a]);
    let (b, pop_b) = (&b[..n_b * words], &pop_b[..n_b]);

    // Popcount range of each tile of `b`, to skip whole tiles.
    let tile_range: Vec<(u32, u32)> = pop_b
        .chunks(TILE)
        .map(|t| {
            let lo = t.iter().copied().min().unwrap_or(0);
            let hi = t.iter().copied().max().unwrap_or(0);
            (lo, hi)
        })
        .collect();
    // Whether every Dice value can be computed in `f32` (see `dice_batch`).
    let small = |pops: &[u32]| pops.iter().all(|&p| p < DICE_F32_BELOW);
    let f32_ok = words < DICE_F32_BELOW as usize / 64 && small(pop_a) && small(pop_b);
    if n_a >= SLICED_MIN_QUERIES {
        let cx = Pairs {
            kernel,
            words,
            threshold,
            f32_ok,
            tile_range: &tile_range,
        };
        // The fused AVX-512 loop over transposed candidates beats the bit-sliced path
        // (`has_fused` holds only for 8, 16 and 32 words).
        return match (has_fused(kernel, words, f32_ok), words) {
            (true, 8) => all_pairs_grouped::<8, _>(&cx, a, pop_a, b, pop_b, &mut f),
            (true, 16) => all_pairs_grouped::<16, _>(&cx, a, pop_a, b, pop_b, &mut f),
            (true, 32) => all_pairs_grouped::<32, _>(&cx, a, pop_a, b, pop_b, &mut f),
            _ => all_pairs_sliced(&cx, a, pop_a, b, pop_b, &mut f),
        };
    }
    let mut counts = [0u32; TILE];
    let mut dices = [0f32; TILE];

    for (i, (query, &pa)) in a.chunks_exact(words).zip(pop_a).enumerate() {
        let Some((lo, hi)) = eligible_range(pa, threshold) else {
            continue;
        };
        let eligible = |pb: &u32| (lo..=hi).contains(pb);
        let tiles = b
            .chunks(TILE * words)
            .zip(pop_b.chunks(TILE))
            .zip(&tile_range);
        for (t, ((block, pbs), &(tile_lo, tile_hi))) in tiles.enumerate() {
            if tile_hi < lo || tile_lo > hi {
                continue;
            }
            let mut run_start = 0;
            while run_start < pbs.len() {
                // Next maximal run of candidates that pass the length filter.
                let (s, e) = if lo <= tile_lo && tile_hi <= hi {
                    (0, pbs.len())
                } else {
                    let Some(s) = pbs[run_start..].iter().position(eligible) else {
                        break;
                    };
                    let s = run_start + s;
                    let e = pbs[s..]
                        .iter()
                        .position(|pb| !eligible(pb))
                        .map_or(pbs.len(), |e| s + e);
                    (s, e)
                };
                let j0 = t * TILE + s;
                let run = &block[s * words..e * words];
                if has_fused(kernel, words, f32_ok) {
                    let mut hit = |k: usize, d: f32| f(i, j0 + k, d);
                    fused_run(query, pa, run, &pbs[s..e], threshold, &mut hit);
                } else {
                    let cnt = &mut counts[s..e];
                    many_unchecked(kernel, query, run, words, cnt);
                    let dv = &mut dices[s..e];
                    dice_batch(kernel, f32_ok, cnt, pa, &pbs[s..e], dv);
                    for (k, &d) in dv.iter().enumerate() {
                        if d >= threshold {
                            f(i, j0 + k, d);
                        }
                    }
                }
                run_start = e;
            }
        }
    }
}

/// Whether [`all_pairs_above`] runs the fused AVX-512 loop ([`fused_run`]): the kernel is
/// AVX-512, every Dice value can be computed in `f32`, and filters are 8, 16 or 32 words.
#[inline]
fn has_fused(kernel: Kernel, words: usize, f32_ok: bool) -> bool {
    cfg!(target_arch = "x86_64")
        && kernel == Kernel::Avx512
        && f32_ok
        && matches!(words, 8 | 16 | 32)
}

/// One query (popcount `pa`) against a run of candidates (`pbs.len()` filters of
/// `query.len()` words in `block`, popcounts `pbs`) with the fused AVX-512 loop: `f(k, dice)`
/// for each candidate `k` with `dice >= threshold`, in increasing `k`, with exactly the values
/// of [`dice`]. Only called when [`has_fused`] holds; panics if AVX-512 is not available.
#[inline]
fn fused_run(
    query: &[u64],
    pa: u32,
    block: &[u64],
    pbs: &[u32],
    threshold: f32,
    f: &mut impl FnMut(usize, f32),
) {
    let words = query.len();
    debug_assert_eq!(block.len(), pbs.len() * words);
    // Cheap (a cached mask), and makes the calls below sound whoever calls this.
    Kernel::Avx512.checked();
    #[cfg(target_arch = "x86_64")]
    match words {
        // SAFETY: `Kernel::Avx512.checked()` above verified that this CPU supports avx512f,
        // avx512vpopcntdq and avx2 (`probe_cpu` requires all three for it).
        8 => unsafe { avx512::dice_run::<1, 8>(query, pa, block, pbs, threshold, f) },
        // SAFETY: as above.
        16 => unsafe { avx512::dice_run::<2, 16>(query, pa, block, pbs, threshold, f) },
        // SAFETY: as above.
        32 => unsafe { avx512::dice_run::<4, 32>(query, pa, block, pbs, threshold, f) },
        _ => unreachable!("has_fused admits 8, 16 and 32 words"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pa, block, pbs, threshold, f);
        unreachable!("has_fused is false off x86_64");
    }
}

/// Calls `run(s, e)` for each maximal run `s..e` of `pbs` (one tile's popcounts) within
/// `lo..=hi`; `(tile_lo, tile_hi)` is the tile's popcount range.
fn eligible_runs(
    pbs: &[u32],
    (lo, hi): (u32, u32),
    (tile_lo, tile_hi): (u32, u32),
    mut run: impl FnMut(usize, usize),
) {
    if tile_hi < lo || tile_lo > hi {
        return;
    }
    if lo <= tile_lo && tile_hi <= hi {
        return run(0, pbs.len());
    }
    let eligible = |pb: &u32| (lo..=hi).contains(pb);
    let mut start = 0;
    while let Some(s) = pbs[start..].iter().position(eligible) {
        let s = start + s;
        let e = pbs[s..]
            .iter()
            .position(|pb| !eligible(pb))
            .map_or(pbs.len(), |e| s + e);
        run(s, e);
        start = e;
    }
}

/// [`all_pairs_above`] for many queries on AVX-512 with filters of `W` words: `b` is
/// transposed once into groups of eight (see `avx512::to_groups`) and each query runs the
/// fused loop over the eligible runs of each tile. Same pairs, values and order as the
/// direct path.
fn all_pairs_grouped<const W: usize, F: FnMut(usize, usize, f32)>(
    cx: &Pairs<'_>,
    a: &[u64],
    pop_a: &[u32],
    b: &[u64],
    pop_b: &[u32],
    f: &mut F,
) {
    debug_assert!(has_fused(cx.kernel, W, cx.f32_ok) && cx.words == W);
    // Cheap (a cached mask), and makes the calls below sound whoever calls this.
    Kernel::Avx512.checked();
    #[cfg(target_arch = "x86_64")]
    {
        let groups = avx512::to_groups::<W>(b);
        let pbs: Vec<[u32; 8]> = pop_b
            .chunks(8)
            .map(|c| {
                let mut p = [0; 8];
                p[..c.len()].copy_from_slice(c);
                p
            })
            .collect();
        for (i, (query, &pa)) in a.as_chunks::<W>().0.iter().zip(pop_a).enumerate() {
            let Some(range) = eligible_range(pa, cx.threshold) else {
                continue;
            };
            let mut hit = |j: usize, d: f32| f(i, j, d);
            for (t, (pbt, &tr)) in pop_b.chunks(TILE).zip(cx.tile_range).enumerate() {
                eligible_runs(pbt, range, tr, |s, e| {
                    let (s, e) = (t * TILE + s, t * TILE + e);
                    let (g0, g1) = (s / 8, e.div_ceil(8));
                    let (gs, ps) = (&groups[g0..g1], &pbs[g0..g1]);
                    // SAFETY: `Kernel::Avx512.checked()` above verified that this CPU supports
                    // avx512f, avx512vpopcntdq and avx2; `has_fused` promised `f32` range.
                    unsafe {
                        avx512::dice_groups::<W>(
                            query,
                            pa,
                            gs,
                            ps,
                            8 * g0,
                            (s, e),
                            cx.threshold,
                            &mut hit,
                        )
                    }
                });
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, pop_a, b, pop_b, f);
        unreachable!("has_fused is false off x86_64");
    }
}

/// Parameters shared by the two paths of [`all_pairs_above`].
struct Pairs<'a> {
    kernel: Kernel,
    words: usize,
    threshold: f32,
    /// Whether [`dice_batch`] may use `f32` arithmetic.
    f32_ok: bool,
    /// Popcount range of each tile of `b`.
    tile_range: &'a [(u32, u32)],
}

/// [`all_pairs_above`] for many queries: `b` is transposed once into
/// bit-sliced tiles and every query counts a whole tile at a time (see
/// [`sliced`]). Same pairs, values and order as the direct path.
fn all_pairs_sliced<F: FnMut(usize, usize, f32)>(
    cx: &Pairs<'_>,
    a: &[u64],
    pop_a: &[u32],
    b: &[u64],
    pop_b: &[u32],
    f: &mut F,
) {
    let words = cx.words;
    let tiles: Vec<Vec<sliced::Row>> = b
        .chunks(TILE * words)
        .map(|block| {
            let mut rows = Vec::new();
            sliced::transpose(block, words, &mut rows);
            rows
        })
        .collect();
    let mut ones: Vec<u32> = Vec::with_capacity(64 * words);
    let mut counts = [0u32; TILE];
    let mut dices = [0f32; TILE];
    for (i, (query, &pa)) in a.chunks_exact(words).zip(pop_a).enumerate() {
        let Some((lo, hi)) = eligible_range(pa, cx.threshold) else {
            continue;
        };
        // Positions of the query's set bits (< 64 * words < 2^32).
        ones.clear();
        for (w, &word) in query.iter().enumerate() {
            let mut m = word;
            while m != 0 {
                ones.push((64 * w) as u32 + m.trailing_zeros());
                m &= m - 1;
            }
        }
        let tiles = tiles.iter().zip(pop_b.chunks(TILE)).zip(cx.tile_range);
        for (t, ((rows, pbs), &(tile_lo, tile_hi))) in tiles.enumerate() {
            if tile_hi < lo || tile_lo > hi {
                continue;
            }
            count_tile(cx.kernel, rows, &ones, &mut counts);
            let n = pbs.len();
            dice_batch(cx.kernel, cx.f32_ok, &counts[..n], pa, pbs, &mut dices[..n]);
            let j0 = t * TILE;
            for (k, &d) in dices[..n].iter().enumerate() {
                if d >= cx.threshold {
                    f(i, j0 + k, d);
                }
            }
        }
    }
}

/// [`sliced::count_body`] compiled for the kernel's instruction set.
#[inline]
fn count_tile(kernel: Kernel, rows: &[sliced::Row], ones: &[u32], counts: &mut [u32; TILE]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => {
            // SAFETY: `kernel` comes from `Kernel::checked`, and both kernels require avx2.
            unsafe { count_tile_avx2(rows, ones, counts) }
        }
        _ => sliced::count_body(rows, ones, counts),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_tile_avx2(rows: &[sliced::Row], ones: &[u32], counts: &mut [u32; TILE]) {
    sliced::count_body(rows, ones, counts);
}

/// The popcounts `pb` for which a pair with a filter of popcount `pa` can have
/// Dice `>= threshold`, as an inclusive range (`None` if there are none).
///
/// The bound is `dice(min(pa, pb), pa, pb)`; [`dice`] is monotone, so the
/// bound is non-decreasing in `pb` up to `pa` and non-increasing after it, and
/// the admissible set is an interval found by binary search on the same
/// floating-point function the final comparison uses (no rounding mismatch).
fn eligible_range(pa: u32, threshold: f32) -> Option<(u32, u32)> {
    if threshold <= 0.0 {
        return Some((0, u32::MAX));
    }
    if dice(pa, pa, pa) < threshold {
        return None;
    }
    // Smallest pb in [0, pa] with dice(pb, pa, pb) >= threshold (true at pa).
    let (mut l, mut h) = (0u32, pa);
    while l < h {
        let m = l + (h - l) / 2;
        if dice(m, pa, m) >= threshold {
            h = m;
        } else {
            l = m + 1;
        }
    }
    let lo = l;
    // Largest pb in [pa, u32::MAX] with dice(pa, pa, pb) >= threshold (true at pa).
    let (mut l, mut h) = (pa, u32::MAX);
    while l < h {
        let m = l + (h - l).div_ceil(2);
        if dice(pa, pa, m) >= threshold {
            l = m;
        } else {
            h = m - 1;
        }
    }
    Some((lo, l))
}

/// Popcounts below this value keep every operand of [`dice`] exact in `f32`
/// (`2·count` and `pa + pb` are below 2^24).
const DICE_F32_BELOW: u32 = 1 << 23;

/// `out[k] = dice(counts[k], pa, pbs[k])`, vectorised where possible.
/// `f32_ok` promises that `pa`, every `pbs[k]` and every `counts[k]` are below
/// [`DICE_F32_BELOW`].
#[inline]
fn dice_batch(kernel: Kernel, f32_ok: bool, counts: &[u32], pa: u32, pbs: &[u32], out: &mut [f32]) {
    debug_assert!(counts.len() == pbs.len() && pbs.len() == out.len());
    if !f32_ok {
        for ((o, &c), &pb) in out.iter_mut().zip(counts).zip(pbs) {
            *o = dice(c, pa, pb);
        }
        return;
    }
    debug_assert!(pa < DICE_F32_BELOW && pbs.iter().chain(counts).all(|&v| v < DICE_F32_BELOW));
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => {
            // SAFETY: `kernel` comes from `Kernel::checked`, and both kernels require avx2.
            unsafe { dice_batch_avx2(counts, pa, pbs, out) }
        }
        _ => dice_batch_f32(counts, pa, pbs, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dice_batch_avx2(counts: &[u32], pa: u32, pbs: &[u32], out: &mut [f32]) {
    dice_batch_f32(counts, pa, pbs, out);
}

/// Body of [`dice_batch`] when all operands are below [`DICE_F32_BELOW`];
/// inlined into each caller so it is vectorised with the caller's target
/// features. Gives exactly [`dice`]'s results: its `f32` branch applies (all
/// of `2c` and `pa + pb` are below 2^24, exact as `i32` and `f32`), and IEEE
/// division is correctly rounded at any vector width. Out-of-range inputs give
/// wrong values, never undefined behaviour.
#[inline(always)]
fn dice_batch_f32(counts: &[u32], pa: u32, pbs: &[u32], out: &mut [f32]) {
    for ((o, &c), &pb) in out.iter_mut().zip(counts).zip(pbs) {
        let sum = pa.wrapping_add(pb) as i32;
        let q = c.wrapping_mul(2) as i32 as f32 / sum as f32;
        *o = if sum == 0 { 0.0 } else { q };
    }
}

/// Bit-sliced counting for [`all_pairs_above`] with many queries.
///
/// A tile of up to [`sliced::TILE`] (256) candidates is transposed once into
/// rows: bit `c` of `rows[p]` is bit `p` of candidate `c`. For a query, the
/// popcounts of `query AND candidate` for the whole tile are then the
/// column sums of the rows at the query's set bits, added with a Harley–Seal
/// carry-save adder tree on 256-bit rows (about 5 operations per row for all
/// 256 candidates), then converted from bit planes to integers with 8×8 bit
/// transposes. Plain `u64` code; compiled with AVX2 enabled, the compiler
/// turns each row operation into one 256-bit instruction.
mod sliced {
    /// Candidates per tile: one bit of a [`Row`] each.
    pub(super) const TILE: usize = 64 * LANES;
    const LANES: usize = 4;
    /// 256 bits, one per candidate of a tile (candidate `c` is bit `c % 64` of word `c / 64`).
    pub(super) type Row = [u64; LANES];
    const ZERO: Row = [0; LANES];
    /// Bit planes of the counters: enough for any `u32` count.
    const PLANES: usize = 32;

    #[inline(always)]
    fn xor(a: Row, b: Row) -> Row {
        std::array::from_fn(|k| a[k] ^ b[k])
    }

    #[inline(always)]
    fn and(a: Row, b: Row) -> Row {
        std::array::from_fn(|k| a[k] & b[k])
    }

    #[inline(always)]
    fn or(a: Row, b: Row) -> Row {
        std::array::from_fn(|k| a[k] | b[k])
    }

    /// Carry-save adder: `a + b + c == 2 * carry + sum` in every bit position.
    #[inline(always)]
    fn csa(a: Row, b: Row, c: Row) -> (Row, Row) {
        let u = xor(a, b);
        (or(and(a, b), and(u, c)), xor(u, c))
    }

    /// Transposes `block` (at most [`TILE`] filters of `words` words) into
    /// `rows` (`64 * words` rows).
    pub(super) fn transpose(block: &[u64], words: usize, rows: &mut Vec<Row>) {
        debug_assert!(block.len() <= TILE * words);
        rows.clear();
        rows.resize(64 * words, ZERO);
        for (c, filter) in block.chunks_exact(words).enumerate() {
            let (lane, bit) = (c / 64, 1u64 << (c % 64));
            for (row, &word) in rows.chunks_exact_mut(64).zip(filter) {
                let mut m = word;
                while m != 0 {
                    row[m.trailing_zeros() as usize][lane] |= bit;
                    m &= m - 1;
                }
            }
        }
    }

    /// Adds `carry` at weight `2^k` to the bit-sliced counter `planes`, a
    /// branch-free ripple through all of them (callers pass just the planes
    /// the count can reach).
    #[inline(always)]
    fn add_at(planes: &mut [Row], mut carry: Row) {
        for p in planes {
            let s = xor(*p, carry);
            carry = and(*p, carry);
            *p = s;
        }
    }

    /// Number of bits needed for counts up to `max`.
    fn bits_for(max: usize) -> usize {
        (usize::BITS - max.leading_zeros()) as usize
    }

    /// `counts[c] = Σ_{p in ones} bit c of rows[p]`: the popcount of `query
    /// AND candidate c` when `ones` lists the query's set bits.
    #[inline(always)]
    pub(super) fn count_body(rows: &[Row], ones: &[u32], counts: &mut [u32; TILE]) {
        let mut planes = [ZERO; PLANES];
        // Planes 4.. count the carries of weight 16: at most ones.len() / 16 of them.
        let high = bits_for(ones.len() / 16).min(PLANES - 4);
        let (mut o1, mut o2, mut o4, mut o8) = (ZERO, ZERO, ZERO, ZERO);
        let row = |i: u32| rows[i as usize];
        let mut groups = ones.chunks_exact(16);
        for g in &mut groups {
            // Weights: o1 = 1, o2 = 2, o4 = 4, o8 = 8; each csa output pair keeps the sum.
            let (t2a, s) = csa(o1, row(g[0]), row(g[1]));
            let (t2b, s) = csa(s, row(g[2]), row(g[3]));
            let (f4a, s2) = csa(o2, t2a, t2b);
            let (t2a, s) = csa(s, row(g[4]), row(g[5]));
            let (t2b, s) = csa(s, row(g[6]), row(g[7]));
            let (f4b, s2) = csa(s2, t2a, t2b);
            let (e8a, s4) = csa(o4, f4a, f4b);
            let (t2a, s) = csa(s, row(g[8]), row(g[9]));
            let (t2b, s) = csa(s, row(g[10]), row(g[11]));
            let (f4a, s2) = csa(s2, t2a, t2b);
            let (t2a, s) = csa(s, row(g[12]), row(g[13]));
            let (t2b, s) = csa(s, row(g[14]), row(g[15]));
            let (f4b, s2) = csa(s2, t2a, t2b);
            let (e8b, s4) = csa(s4, f4a, f4b);
            let (x16, s8) = csa(o8, e8a, e8b);
            (o1, o2, o4, o8) = (s, s2, s4, s8);
            add_at(&mut planes[4..4 + high], x16);
        }
        (planes[0], planes[1], planes[2], planes[3]) = (o1, o2, o4, o8);
        let all = bits_for(ones.len()).min(PLANES);
        for &i in groups.remainder() {
            add_at(&mut planes[..all], row(i));
        }
        to_counts(&planes, counts);
    }

    /// 8×8 bit transpose: bit `j` of byte `i` goes to bit `i` of byte `j`.
    #[inline(always)]
    fn transpose8(x: Row) -> Row {
        let step = |x: Row, shift: u32, mask: u64| -> Row {
            std::array::from_fn(|k| {
                let t = (x[k] ^ (x[k] >> shift)) & mask;
                x[k] ^ t ^ (t << shift)
            })
        };
        let x = step(x, 7, 0x00aa_00aa_00aa_00aa);
        let x = step(x, 14, 0x0000_cccc_0000_cccc);
        step(x, 28, 0x0000_0000_f0f0_f0f0)
    }

    /// 8×8 byte transpose across eight rows (per lane): byte `g` of `m[k]`
    /// goes to byte `k` of `m[g]`.
    #[inline(always)]
    fn transpose_bytes(m: &mut [Row; 8]) {
        for (s, mask) in [
            (4usize, 0x0000_0000_ffff_ffffu64),
            (2, 0x0000_ffff_0000_ffff),
            (1, 0x00ff_00ff_00ff_00ff),
        ] {
            let shift = 8 * s as u32;
            for i in (0..8).filter(|i| i & s == 0) {
                let (a, b) = (m[i], m[i + s]);
                let t: Row = std::array::from_fn(|k| ((a[k] >> shift) ^ b[k]) & mask);
                m[i] = std::array::from_fn(|k| a[k] ^ (t[k] << shift));
                m[i + s] = xor(b, t);
            }
        }
    }

    /// Converts bit planes (`planes[k]` holds bit `k` of every count) to counts.
    #[inline(always)]
    fn to_counts(planes: &[Row; PLANES], counts: &mut [u32; TILE]) {
        // bytes[b][c] = byte b of the count of candidate c.
        let mut bytes = [[0u8; TILE]; PLANES / 8];
        for (group, out) in planes.chunks_exact(8).zip(&mut bytes) {
            if group.iter().all(|p| *p == ZERO) {
                continue;
            }
            let mut m: [Row; 8] = group.try_into().expect("8 planes");
            transpose_bytes(&mut m);
            // Now byte k of m[g] (lane l) = plane k's bits of candidates 64l + 8g .. + 8.
            for (g, mg) in m.iter().enumerate() {
                let t = transpose8(*mg);
                // Byte j of t[l] = this byte of the count of candidate 64l + 8g + j.
                for (lane, v) in t.iter().enumerate() {
                    let base = 64 * lane + 8 * g;
                    out[base..base + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        let [b0, b1, b2, b3] = &bytes;
        for ((((c, &x0), &x1), &x2), &x3) in counts.iter_mut().zip(b0).zip(b1).zip(b2).zip(b3) {
            *c = u32::from_le_bytes([x0, x1, x2, x3]);
        }
    }

    #[cfg(test)]
    pub(super) fn naive_counts(rows: &[Row], ones: &[u32]) -> Vec<u32> {
        (0..TILE)
            .map(|c| {
                ones.iter()
                    .map(|&p| ((rows[p as usize][c / 64] >> (c % 64)) & 1) as u32)
                    .sum()
            })
            .collect()
    }
}

/// Scalar kernels, instantiated twice: without target features (portable) and
/// with `popcnt` enabled so that `count_ones` compiles to the instruction.
macro_rules! scalar_kernels {
    ($(#[$attr:meta])*) => {
        /// `popcount(a AND b)` over the common length.
        $(#[$attr])*
        pub(super) fn and_popcount(a: &[u64], b: &[u64]) -> u32 {
            // Four accumulators break the dependency chain of the additions.
            let mut acc = [0u32; 4];
            let (ac, at) = a.as_chunks::<4>();
            let (bc, bt) = b.as_chunks::<4>();
            for (x, y) in ac.iter().zip(bc) {
                for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
                    *s += (p & q).count_ones();
                }
            }
            let tail: u32 = at.iter().zip(bt).map(|(p, q)| (p & q).count_ones()).sum();
            acc.iter().sum::<u32>() + tail
        }

        /// `popcount(a AND b)` of each word range `ends[s-1]..ends[s]`
        /// (the first from 0) into `out[s]`.
        $(#[$attr])*
        pub(super) fn and_popcount_ranges(a: &[u64], b: &[u64], ends: &[usize], out: &mut [u32]) {
            let mut start = 0;
            for (&end, o) in ends.iter().zip(out.iter_mut()) {
                let end = end.min(a.len()).min(b.len()).max(start);
                *o = a[start..end]
                    .iter()
                    .zip(&b[start..end])
                    .map(|(p, q)| (p & q).count_ones())
                    .sum();
                start = end;
            }
        }

        /// One query against `out.len()` filters of `stride` words in
        /// `block`, comparing the first `q.len()` words of each.
        $(#[$attr])*
        pub(super) fn many(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
            if let Ok(q16) = <&[u64; 16]>::try_from(q) {
                many_fixed(q16, block, stride, out);
            } else {
                many_generic(q, block, stride, out);
            }
        }

        /// `many` for a query of exactly `W` words: the loops have constant
        /// trip counts, so they are fully unrolled.
        $(#[$attr])*
        fn many_fixed<const W: usize>(q: &[u64; W], block: &[u64], stride: usize, out: &mut [u32]) {
            let n4 = out.len() / 4 * 4;
            let (out4, out_rest) = out.split_at_mut(n4);
            let (block4, block_rest) = block.split_at(n4 * stride);
            for (g, o) in block4.chunks_exact(4 * stride).zip(out4.chunks_exact_mut(4)) {
                let head = "stride >= query length";
                let f0: &[u64; W] = g[..stride].first_chunk().expect(head);
                let f1: &[u64; W] = g[stride..2 * stride].first_chunk().expect(head);
                let f2: &[u64; W] = g[2 * stride..3 * stride].first_chunk().expect(head);
                let f3: &[u64; W] = g[3 * stride..].first_chunk().expect(head);
                let mut c = [0u32; 4];
                for ((((&qw, x0), x1), x2), x3) in q.iter().zip(f0).zip(f1).zip(f2).zip(f3) {
                    c[0] += (qw & x0).count_ones();
                    c[1] += (qw & x1).count_ones();
                    c[2] += (qw & x2).count_ones();
                    c[3] += (qw & x3).count_ones();
                }
                o.copy_from_slice(&c);
            }
            for (f, o) in block_rest.chunks_exact(stride).zip(out_rest) {
                *o = and_popcount(q, &f[..W]);
            }
        }

        /// `many` for any query length, still one query against four filters.
        $(#[$attr])*
        fn many_generic(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
            let w = q.len();
            let n4 = out.len() / 4 * 4;
            let (out4, out_rest) = out.split_at_mut(n4);
            let (block4, block_rest) = block.split_at(n4 * stride);
            for (g, o) in block4.chunks_exact(4 * stride).zip(out4.chunks_exact_mut(4)) {
                let f0 = &g[..w];
                let f1 = &g[stride..stride + w];
                let f2 = &g[2 * stride..2 * stride + w];
                let f3 = &g[3 * stride..3 * stride + w];
                let mut c = [0u32; 4];
                for ((((&qw, x0), x1), x2), x3) in q.iter().zip(f0).zip(f1).zip(f2).zip(f3) {
                    c[0] += (qw & x0).count_ones();
                    c[1] += (qw & x1).count_ones();
                    c[2] += (qw & x2).count_ones();
                    c[3] += (qw & x3).count_ones();
                }
                o.copy_from_slice(&c);
            }
            for (f, o) in block_rest.chunks_exact(stride).zip(out_rest) {
                *o = and_popcount(q, &f[..w]);
            }
        }
    };
}

/// Plain `count_ones`, no target features.
mod portable {
    scalar_kernels!(#[inline]);
}

/// Scalar kernels compiled with the `popcnt` instruction enabled.
#[cfg(target_arch = "x86_64")]
mod popcnt {
    scalar_kernels!(#[target_feature(enable = "popcnt")]);
}

/// AVX2 kernels: `vpshufb` nibble-table popcount.
///
/// A byte's popcount is `T[low nibble] + T[high nibble]`, with the table `T`
/// looked up 32 bytes at a time by `vpshufb`. Two tables are used,
/// `PLUS[v] = 4 + popcount(v)` for low nibbles and `MINUS[v] = 4 - popcount(v)`
/// for high nibbles. After summing `K <= 31` chunks bytewise, `plus = 4K +
/// Σpop(lo)` and `minus = 4K - Σpop(hi)` (both within a byte, `plus >= minus`),
/// so `vpsadbw(plus, minus)`, the sum of `|plus - minus|` over each group of 8
/// bytes, is exactly the popcount of those bytes: the final low + high
/// addition is folded into the `vpsadbw` that is needed anyway. [`hsum4`] then
/// reduces four candidates at once.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    /// Chunks of four words whose byte counts may be summed before `vpsadbw`:
    /// `plus` grows by at most 8 per chunk and must stay below 256.
    const MAX_BYTE_CHUNKS: usize = 31;

    /// Lookup tables and the low-nibble mask.
    #[derive(Clone, Copy)]
    struct Luts {
        /// `4 + popcount(v)` for `v` in 0..16, in both 128-bit lanes.
        plus: __m256i,
        /// `4 - popcount(v)` for `v` in 0..16, in both 128-bit lanes.
        minus: __m256i,
        /// `0x0f` in every byte.
        low: __m256i,
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn luts() -> Luts {
        Luts {
            plus: _mm256_setr_epi8(
                4, 5, 5, 6, 5, 6, 6, 7, 5, 6, 6, 7, 6, 7, 7, 8, //
                4, 5, 5, 6, 5, 6, 6, 7, 5, 6, 6, 7, 6, 7, 7, 8,
            ),
            minus: _mm256_setr_epi8(
                4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, //
                4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0,
            ),
            low: _mm256_set1_epi8(0x0f),
        }
    }

    /// Loads four words.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load4(w: &[u64; 4]) -> __m256i {
        // SAFETY: `w` is a reference to 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(w.as_ptr().cast()) }
    }

    /// Stores four `u32`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store4(o: &mut [u32; 4], v: __m128i) {
        // SAFETY: `o` is a unique reference to 16 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), v) }
    }

    /// Horizontal sums of four vectors of four `u64` lanes whose totals are
    /// below 2^32: returns `[Σs0, Σs1, Σs2, Σs3]` as four `u32`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum4(s0: __m256i, s1: __m256i, s2: __m256i, s3: __m256i) -> __m128i {
        // Lanes are < 2^32, so each fits its low u32 half. Interleave pairs:
        // s01 = [a0 b0 a1 b1 | a2 b2 a3 b3] as u32 (a = s0, b = s1), s23 = [c d ..].
        let s01 = _mm256_blend_epi32::<0b1010_1010>(s0, _mm256_slli_epi64::<32>(s1));
        let s23 = _mm256_blend_epi32::<0b1010_1010>(s2, _mm256_slli_epi64::<32>(s3));
        // unpacklo: [a0 b0 c0 d0 | a2 b2 c2 d2], unpackhi: [a1 b1 c1 d1 | a3 b3 c3 d3].
        let w = _mm256_add_epi32(
            _mm256_unpacklo_epi64(s01, s23),
            _mm256_unpackhi_epi64(s01, s23),
        );
        _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
    }

    /// Horizontal sum of four `u64` lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum1(s: __m256i) -> u64 {
        let t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let t = _mm_add_epi64(t, _mm_unpackhi_epi64(t, t));
        _mm_cvtsi128_si64(t) as u64
    }

    /// `u64` lanes summing to `popcount(q AND x)` over whole 4-word chunks
    /// (`q.len() == x.len()`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn chunk_lanes(t: Luts, q: &[[u64; 4]], x: &[[u64; 4]]) -> __m256i {
        let mut total = _mm256_setzero_si256();
        for (qs, xs) in q.chunks(MAX_BYTE_CHUNKS).zip(x.chunks(MAX_BYTE_CHUNKS)) {
            let mut plus = _mm256_setzero_si256();
            let mut minus = _mm256_setzero_si256();
            for (qc, xc) in qs.iter().zip(xs) {
                let v = _mm256_and_si256(load4(qc), load4(xc));
                let lo = _mm256_and_si256(v, t.low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), t.low);
                plus = _mm256_add_epi8(plus, _mm256_shuffle_epi8(t.plus, lo));
                minus = _mm256_add_epi8(minus, _mm256_shuffle_epi8(t.minus, hi));
            }
            total = _mm256_add_epi64(total, _mm256_sad_epu8(plus, minus));
        }
        total
    }

    /// Scalar popcount of the tail words.
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    fn tail_count(q: &[u64], x: &[u64]) -> u32 {
        q.iter().zip(x).map(|(a, b)| (a & b).count_ones()).sum()
    }

    /// `popcount(a AND b)` over the common length.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn and_popcount(a: &[u64], b: &[u64]) -> u32 {
        let (ac, at) = a.as_chunks::<4>();
        let (bc, bt) = b.as_chunks::<4>();
        hsum1(chunk_lanes(luts(), ac, bc)) as u32 + tail_count(at, bt)
    }

    /// One query against `out.len()` filters of `stride` words in `block`,
    /// comparing the first `q.len()` words of each.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn many(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        match q.len() {
            8 => many_fixed::<2>(q, block, stride, out),
            16 => many_fixed::<4>(q, block, stride, out),
            32 => many_fixed::<8>(q, block, stride, out),
            _ => many_generic(q, block, stride, out),
        }
    }

    /// The first `C` chunks of a filter.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn head<const C: usize>(f: &[u64]) -> &[[u64; 4]; C] {
        f.as_chunks::<4>()
            .0
            .first_chunk::<C>()
            .expect("stride >= query length")
    }

    /// A query of `C` chunks pre-split for [`fixed_lanes`].
    struct Query<const C: usize> {
        /// `q & 0x0f` in every byte.
        lo: [__m256i; C],
        /// `q & 0xf0` in every byte.
        hi: [__m256i; C],
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn split_query<const C: usize>(t: Luts, q: &[[u64; 4]; C]) -> Query<C> {
        let mut s = Query {
            lo: [_mm256_setzero_si256(); C],
            hi: [_mm256_setzero_si256(); C],
        };
        for ((c, lo), hi) in q.iter().zip(&mut s.lo).zip(&mut s.hi) {
            let v = load4(c);
            *lo = _mm256_and_si256(v, t.low);
            *hi = _mm256_andnot_si256(t.low, v);
        }
        s
    }

    /// `u64` lanes summing to `popcount(q AND x)` for a pre-split query of
    /// `C <= MAX_BYTE_CHUNKS` chunks.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn fixed_lanes<const C: usize>(t: Luts, q: &Query<C>, x: &[[u64; 4]; C]) -> __m256i {
        let mut plus = _mm256_setzero_si256();
        let mut minus = _mm256_setzero_si256();
        for ((xc, &qlo), &qhi) in x.iter().zip(&q.lo).zip(&q.hi) {
            let v = load4(xc);
            // Low nibbles of x & q: x & (q & 0x0f). High nibbles: (x & (q & 0xf0)) >> 4, a
            // 16-bit shift into which only the masked-off (zero) low nibble of the upper byte
            // moves. Masking with the pre-split query saves the separate x & q.
            let lo = _mm256_and_si256(v, qlo);
            let hi = _mm256_srli_epi16::<4>(_mm256_and_si256(v, qhi));
            plus = _mm256_add_epi8(plus, _mm256_shuffle_epi8(t.plus, lo));
            minus = _mm256_add_epi8(minus, _mm256_shuffle_epi8(t.minus, hi));
        }
        _mm256_sad_epu8(plus, minus)
    }

    /// `many` for a query of exactly `4 * C` words, with the split query held
    /// in registers and four candidates per step.
    #[target_feature(enable = "avx2,popcnt")]
    fn many_fixed<const C: usize>(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        const { assert!(C >= 1 && C <= MAX_BYTE_CHUNKS) };
        let t = luts();
        let qs = split_query(t, head::<C>(q));
        let n4 = out.len() / 4 * 4;
        let (out4, out_rest) = out.split_at_mut(n4);
        let (block4, block_rest) = block.split_at(n4 * stride);
        for (g, o) in block4
            .chunks_exact(4 * stride)
            .zip(out4.as_chunks_mut::<4>().0)
        {
            let s0 = fixed_lanes(t, &qs, head::<C>(&g[..stride]));
            let s1 = fixed_lanes(t, &qs, head::<C>(&g[stride..2 * stride]));
            let s2 = fixed_lanes(t, &qs, head::<C>(&g[2 * stride..3 * stride]));
            let s3 = fixed_lanes(t, &qs, head::<C>(&g[3 * stride..]));
            store4(o, hsum4(s0, s1, s2, s3));
        }
        for (f, o) in block_rest.chunks_exact(stride).zip(out_rest) {
            *o = hsum1(fixed_lanes(t, &qs, head::<C>(f))) as u32;
        }
    }

    /// `many` for any query length: whole 4-word chunks with AVX2, the
    /// remaining 1..=3 words with scalar popcnt.
    #[target_feature(enable = "avx2,popcnt")]
    fn many_generic(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        fn split(f: &[u64], w: usize) -> (&[[u64; 4]], &[u64]) {
            f[..w].as_chunks::<4>()
        }
        let t = luts();
        let w = q.len();
        let (qc, qt) = q.as_chunks::<4>();
        let n4 = out.len() / 4 * 4;
        let (out4, out_rest) = out.split_at_mut(n4);
        let (block4, block_rest) = block.split_at(n4 * stride);
        for (g, o) in block4
            .chunks_exact(4 * stride)
            .zip(out4.as_chunks_mut::<4>().0)
        {
            let (c0, t0) = split(&g[..stride], w);
            let (c1, t1) = split(&g[stride..2 * stride], w);
            let (c2, t2) = split(&g[2 * stride..3 * stride], w);
            let (c3, t3) = split(&g[3 * stride..], w);
            let s = hsum4(
                chunk_lanes(t, qc, c0),
                chunk_lanes(t, qc, c1),
                chunk_lanes(t, qc, c2),
                chunk_lanes(t, qc, c3),
            );
            store4(o, s);
            if !qt.is_empty() {
                o[0] += tail_count(qt, t0);
                o[1] += tail_count(qt, t1);
                o[2] += tail_count(qt, t2);
                o[3] += tail_count(qt, t3);
            }
        }
        for (f, o) in block_rest.chunks_exact(stride).zip(out_rest) {
            *o = and_popcount(q, &f[..w]);
        }
    }
}

/// AVX-512 kernels: `vpopcntq` counts each 64-bit lane directly.
///
/// Four candidates are reduced with one horizontal add by packing their lane
/// counts into 16-bit fields (valid while a popcount fits in 16 bits, i.e. for
/// queries of at most 1023 words; longer ones are reduced one at a time).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// Longest query (in words) whose popcounts fit the 16-bit fields of [`pack4`].
    const PACK_MAX_WORDS: usize = u16::MAX as usize / 64;

    /// Loads eight words.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load8(w: &[u64; 8]) -> __m512i {
        // SAFETY: `w` is a reference to 64 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
    }

    /// Loads the `w.len() <= 7` words of `w` into the low lanes, zeroing the rest.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load_partial(w: &[u64]) -> __m512i {
        debug_assert!(w.len() < 8);
        let len = w.len().min(7);
        // Bits 0..len set: exactly the lanes backed by elements of `w`.
        let mask: __mmask8 = ((1u32 << len) - 1) as __mmask8;
        // SAFETY: a masked load only accesses the lanes whose mask bit is set (faults are
        // suppressed for the others), and those are the first `len <= w.len()` elements of `w`.
        unsafe { _mm512_maskz_loadu_epi64(mask, w.as_ptr().cast()) }
    }

    /// Per-lane `popcount(x AND y)`.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn and_pop(x: __m512i, y: __m512i) -> __m512i {
        _mm512_popcnt_epi64(_mm512_and_si512(x, y))
    }

    /// Lanes summing to `popcount(q AND x)`; `x.len() == q.len()`.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn lanes(q: &[u64], x: &[u64]) -> __m512i {
        let (qc, qt) = q.as_chunks::<8>();
        let (xc, xt) = x.as_chunks::<8>();
        let mut acc = _mm512_setzero_si512();
        for (a, b) in qc.iter().zip(xc) {
            acc = _mm512_add_epi64(acc, and_pop(load8(a), load8(b)));
        }
        if !qt.is_empty() {
            acc = _mm512_add_epi64(acc, and_pop(load_partial(qt), load_partial(xt)));
        }
        acc
    }

    /// Sum of all lanes, as `u32`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn hsum(v: __m512i) -> u32 {
        _mm512_reduce_add_epi64(v) as u32
    }

    /// Horizontal sums of four lane vectors whose totals are each at most
    /// `u16::MAX` (so every lane is too): the sums are packed into 16-bit
    /// fields of one vector (no field can carry into the next) and reduced
    /// with a single horizontal add.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn pack4(v0: __m512i, v1: __m512i, v2: __m512i, v3: __m512i) -> [u32; 4] {
        let p = _mm512_add_epi64(
            _mm512_add_epi64(v0, _mm512_slli_epi64::<16>(v1)),
            _mm512_add_epi64(_mm512_slli_epi64::<32>(v2), _mm512_slli_epi64::<48>(v3)),
        );
        let t = _mm512_reduce_add_epi64(p) as u64;
        [
            u32::from(t as u16),
            u32::from((t >> 16) as u16),
            u32::from((t >> 32) as u16),
            u32::from((t >> 48) as u16),
        ]
    }

    /// `popcount(a AND b)` over the common length.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) fn and_popcount(a: &[u64], b: &[u64]) -> u32 {
        let n = a.len().min(b.len());
        hsum(lanes(&a[..n], &b[..n]))
    }

    /// One query against `out.len()` filters of `stride` words in `block`,
    /// comparing the first `q.len()` words of each.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) fn many(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        match q.len() {
            8 => many_fixed::<1>(q, block, stride, out),
            16 => many_fixed::<2>(q, block, stride, out),
            32 => many_fixed::<4>(q, block, stride, out),
            _ => many_generic(q, block, stride, out),
        }
    }

    /// The first `C` 8-word chunks of a filter.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn head<const C: usize>(f: &[u64]) -> &[[u64; 8]; C] {
        f.as_chunks::<8>()
            .0
            .first_chunk::<C>()
            .expect("stride >= query length")
    }

    /// Lanes of `q AND x` for a query held in registers.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn fixed_lanes<const C: usize>(qv: &[__m512i; C], x: &[[u64; 8]; C]) -> __m512i {
        let mut acc = _mm512_setzero_si512();
        for (&qc, xc) in qv.iter().zip(x) {
            acc = _mm512_add_epi64(acc, and_pop(qc, load8(xc)));
        }
        acc
    }

    /// `many` for a query of exactly `8 * C` words (`8 * C <= PACK_MAX_WORDS`).
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn many_fixed<const C: usize>(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        const { assert!(C >= 1 && 8 * C <= PACK_MAX_WORDS) };
        let qv = query::<C>(q);
        let n8 = out.len() / 8 * 8;
        let (out8, out) = out.split_at_mut(n8);
        let (block8, block) = block.split_at(n8 * stride);
        let out8 = out8.as_chunks_mut::<8>().0;
        if stride == 8 * C {
            // Whole filters: lengths known at compile time.
            match C {
                1 => exact8::<C, 8>(&qv, block8, out8),
                2 => exact8::<C, 16>(&qv, block8, out8),
                _ => exact8::<C, 32>(&qv, block8, out8),
            }
        } else {
            for (g, o) in block8.chunks_exact(8 * stride).zip(out8) {
                store8(o, counts8(&qv, g, stride));
            }
        }
        let n4 = out.len() / 4 * 4;
        let (out4, out_rest) = out.split_at_mut(n4);
        let (block4, block_rest) = block.split_at(n4 * stride);
        for (g, o) in block4
            .chunks_exact(4 * stride)
            .zip(out4.as_chunks_mut::<4>().0)
        {
            *o = pack4(
                fixed_lanes(&qv, head::<C>(&g[..stride])),
                fixed_lanes(&qv, head::<C>(&g[stride..2 * stride])),
                fixed_lanes(&qv, head::<C>(&g[2 * stride..3 * stride])),
                fixed_lanes(&qv, head::<C>(&g[3 * stride..])),
            );
        }
        for (f, o) in block_rest.chunks_exact(stride).zip(out_rest) {
            *o = hsum(fixed_lanes(&qv, head::<C>(f)));
        }
    }

    /// `many` for any query length.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn many_generic(q: &[u64], block: &[u64], stride: usize, out: &mut [u32]) {
        let w = q.len();
        let mut filters = block.chunks_exact(stride).map(|f| &f[..w]);
        let mut outs = out.iter_mut();
        if w <= PACK_MAX_WORDS {
            let n4 = outs.len() / 4;
            for _ in 0..n4 {
                let mut next = || filters.next().expect("block holds out.len() filters");
                let (f0, f1, f2, f3) = (next(), next(), next(), next());
                let c = pack4(lanes(q, f0), lanes(q, f1), lanes(q, f2), lanes(q, f3));
                for v in c {
                    *outs.next().expect("n4 groups of four") = v;
                }
            }
        }
        for (f, o) in filters.zip(outs) {
            *o = hsum(lanes(q, f));
        }
    }

    /// Lane `k` of the result is the sum of the lanes of `v[k]`: a shuffle-and-add tree
    /// (21 operations for eight candidates, against eight separate horizontal sums).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn reduce8(v: &[__m512i; 8]) -> __m512i {
        // Within each 128-bit lane L: [sum of a's two words in L, same for b].
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn pair(a: __m512i, b: __m512i) -> __m512i {
            _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
        }
        // Adds 128-bit lanes 0+1 and 2+3 of `a`, then of `b`: [a01, a23, b01, b23].
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn fold(a: __m512i, b: __m512i) -> __m512i {
            _mm512_add_epi64(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
            )
        }
        let s0 = fold(pair(v[0], v[1]), pair(v[2], v[3]));
        let s1 = fold(pair(v[4], v[5]), pair(v[6], v[7]));
        // Lanes of s0: (v0, v1) over 128-bit lanes 0–1, the same over 2–3, then (v2, v3);
        // one more fold adds the two halves of each.
        fold(s0, s1)
    }

    /// `popcount(q AND x)` of the eight filters of `stride` words starting at `g` (only the
    /// first `8 * C` words of each), as the eight `u64` lanes of a vector.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn counts8<const C: usize>(qv: &[__m512i; C], g: &[u64], stride: usize) -> __m512i {
        debug_assert!(g.len() >= 7 * stride + 8 * C);
        let mut v = [_mm512_setzero_si512(); 8];
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = fixed_lanes(qv, head::<C>(&g[k * stride..]));
        }
        reduce8(&v)
    }

    /// [`counts8`] for eight filters of exactly `W == 8 * C` words (lengths known at compile
    /// time, so no bounds checks in the loop).
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn counts8_exact<const C: usize, const W: usize>(
        qv: &[__m512i; C],
        g: &[[u64; W]; 8],
    ) -> __m512i {
        let mut v = [_mm512_setzero_si512(); 8];
        for (vk, x) in v.iter_mut().zip(g) {
            *vk = fixed_lanes(qv, head::<C>(x));
        }
        reduce8(&v)
    }

    /// Counts of groups of eight filters of exactly `W` words (`block.len() == 8 * W *
    /// out.len()`) into `out`. `W` must be `8 * C` (checked).
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn exact8<const C: usize, const W: usize>(
        qv: &[__m512i; C],
        block: &[u64],
        out: &mut [[u32; 8]],
    ) {
        assert_eq!(W, 8 * C, "exact8: filter length");
        let groups = block.as_chunks::<W>().0.as_chunks::<8>().0;
        for (g, o) in groups.iter().zip(out) {
            store8(o, counts8_exact(qv, g));
        }
    }

    /// Stores the low 32 bits of the eight lanes of `v`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store8(o: &mut [u32; 8], v: __m512i) {
        let w = _mm512_cvtepi64_epi32(v);
        // SAFETY: `o` is a unique reference to 32 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), w) }
    }

    /// A query of `8 * C` words in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn query<const C: usize>(q: &[u64]) -> [__m512i; C] {
        let mut qv = [_mm512_setzero_si512(); C];
        for (v, c) in qv.iter_mut().zip(head::<C>(q)) {
            *v = load8(c);
        }
        qv
    }

    /// Transposes `b` (filters of `W` words) into groups of eight: word `w` of candidate
    /// `8 * g + l` is `out[g][w][l]`; the last group is padded with empty filters.
    pub(super) fn to_groups<const W: usize>(b: &[u64]) -> Vec<[[u64; 8]; W]> {
        let filters = b.as_chunks::<W>().0;
        filters
            .chunks(8)
            .map(|fs| {
                let mut g = [[0u64; 8]; W];
                for (l, x) in fs.iter().enumerate() {
                    for (w, &word) in x.iter().enumerate() {
                        g[w][l] = word;
                    }
                }
                g
            })
            .collect()
    }

    /// The fused Dice loop over transposed candidates (see [`to_groups`]): `groups[k]` holds
    /// candidates `first + 8k ..`, `pbs[k]` their popcounts (0 for padding). Calls `f(j,
    /// dice)` for each candidate `j` in `range` with `dice >= threshold`, in increasing `j`.
    /// One query word broadcast against one word of eight candidates per step: the counts
    /// land in the eight lanes with no horizontal sums. Same contract on value ranges as
    /// [`dice_run`].
    #[target_feature(enable = "avx512f,avx512vpopcntdq,avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dice_groups<const W: usize>(
        q: &[u64; W],
        pa: u32,
        groups: &[[[u64; 8]; W]],
        pbs: &[[u32; 8]],
        first: usize,
        range: (usize, usize),
        threshold: f32,
        f: &mut impl FnMut(usize, f32),
    ) {
        let pa_v = _mm256_set1_epi32(pa as i32);
        let t_v = _mm256_set1_ps(threshold);
        for (k, (g, pb)) in groups.iter().zip(pbs).enumerate() {
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for (pair, qw) in g.as_chunks::<2>().0.iter().zip(q.as_chunks::<2>().0) {
                let x0 = _mm512_and_si512(load8(&pair[0]), _mm512_set1_epi64(qw[0] as i64));
                let x1 = _mm512_and_si512(load8(&pair[1]), _mm512_set1_epi64(qw[1] as i64));
                a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(x0));
                a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(x1));
            }
            if W % 2 == 1 {
                let x = _mm512_and_si512(load8(&g[W - 1]), _mm512_set1_epi64(q[W - 1] as i64));
                a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(x));
            }
            let c = _mm512_cvtepi64_epi32(_mm512_add_epi64(a0, a1));
            let base = first + 8 * k;
            // Lanes inside `range`.
            let lo = range.0.saturating_sub(base).min(8);
            let hi = range.1.saturating_sub(base).min(8);
            let in_range = ((1u32 << hi) - 1) & !((1u32 << lo) - 1);
            emit_above(c, pb, pa_v, t_v, base, in_range, f);
        }
    }

    /// The Dice values of eight candidates from their AND counts `c` and popcounts `pb` (the
    /// query's popcount in every lane of `pa_v`); calls `f(base + lane, dice)`, in lane order,
    /// for each lane in the mask `lanes` whose Dice is at least the threshold in `t_v`.
    #[target_feature(enable = "avx512f,avx512vpopcntdq,avx2")]
    #[inline]
    fn emit_above(
        c: __m256i,
        pb: &[u32; 8],
        pa_v: __m256i,
        t_v: __m256,
        base: usize,
        lanes: u32,
        f: &mut impl FnMut(usize, f32),
    ) {
        // SAFETY: `pb` is a reference to 32 readable bytes; `loadu` has no alignment
        // requirement.
        let pb = unsafe { _mm256_loadu_si256(pb.as_ptr().cast()) };
        let sum = _mm256_add_epi32(pa_v, pb);
        let d = _mm256_div_ps(
            _mm256_cvtepi32_ps(_mm256_slli_epi32::<1>(c)),
            _mm256_cvtepi32_ps(sum),
        );
        // Both filters empty: 0/0 becomes +0.0, as in `dice`.
        let d = _mm256_andnot_ps(
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(sum, _mm256_setzero_si256())),
            d,
        );
        let mut hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(d, t_v)) as u32 & lanes;
        if hits != 0 {
            let mut dv = [0f32; 8];
            // SAFETY: `dv` is a unique reference to 32 writable bytes; `storeu` has no
            // alignment requirement.
            unsafe { _mm256_storeu_ps(dv.as_mut_ptr(), d) };
            while hits != 0 {
                let l = hits.trailing_zeros() as usize;
                f(base + l, dv[l]);
                hits &= hits - 1;
            }
        }
    }

    /// The fused Dice loop of `all_pairs_above` for a query of exactly `8 * C` words with
    /// popcount `pa`, against the `pbs.len()` filters of `stride` words in `block` (popcounts
    /// `pbs`): calls `f(k, dice)` for each candidate `k` with `dice >= threshold`, in
    /// increasing `k`. Eight candidates per step, counts and Dice values kept in registers.
    /// The caller promises that `pa`, every `pbs[k]` and every count are below 2^23 (so the
    /// `f32` formula of `dice_batch_f32` is exact; out-of-range inputs give wrong values,
    /// never undefined behaviour).
    #[target_feature(enable = "avx512f,avx512vpopcntdq,avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dice_run<const C: usize, const W: usize>(
        q: &[u64],
        pa: u32,
        block: &[u64],
        pbs: &[u32],
        threshold: f32,
        f: &mut impl FnMut(usize, f32),
    ) {
        const { assert!(C >= 1 && W == 8 * C && W <= PACK_MAX_WORDS) };
        debug_assert_eq!(block.len(), pbs.len() * W);
        let qv = query::<C>(q);
        let n8 = pbs.len() / 8 * 8;
        let (pbs8, pbs_rest) = pbs.split_at(n8);
        let (filters, _) = block.as_chunks::<W>();
        let (block8, block_rest) = filters.split_at(n8.min(filters.len()));
        let pa_v = _mm256_set1_epi32(pa as i32);
        let t_v = _mm256_set1_ps(threshold);
        for (k0, (g, pb)) in block8
            .as_chunks::<8>()
            .0
            .iter()
            .zip(pbs8.as_chunks::<8>().0)
            .enumerate()
        {
            let c = _mm512_cvtepi64_epi32(counts8_exact(&qv, g));
            emit_above(c, pb, pa_v, t_v, 8 * k0, 0xff, f);
        }
        for (k, (x, &pb)) in block_rest.iter().zip(pbs_rest).enumerate() {
            let d = super::dice(hsum(fixed_lanes(&qv, head::<C>(x))), pa, pb);
            if d >= threshold {
                f(n8 + k, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SplitMix64: small deterministic generator for test filters.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// A word whose bits are set with probability `density` (0 and 1 exact).
        fn word(&mut self, density: f64) -> u64 {
            let cut = (density.clamp(0.0, 1.0) * 65536.0) as u64;
            let mut w = 0;
            for bit in 0..64 {
                if self.next() >> 48 < cut {
                    w |= 1 << bit;
                }
            }
            w
        }

        /// `n` filters of `words` words, each with its own density drawn from a
        /// mix of extremes (empty, full) and uniform values.
        fn filters(&mut self, n: usize, words: usize) -> Vec<u64> {
            let mut v = Vec::with_capacity(n * words);
            for _ in 0..n {
                let density = match self.next() % 8 {
                    0 => 0.0,
                    1 => 1.0,
                    2 => 0.02,
                    _ => (self.next() >> 11) as f64 / (1u64 << 53) as f64,
                };
                v.extend((0..words).map(|_| self.word(density)));
            }
            v
        }
    }

    fn reference(a: &[u64], b: &[u64]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum()
    }

    fn word_counts() -> impl Strategy<Value = usize> {
        prop_oneof![Just(8usize), Just(16), Just(32), 1usize..40]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn and_popcount_kernels_agree(words in word_counts(), seed: u64, cut in any::<(usize, usize)>()) {
            let mut rng = Rng(seed);
            let ab = rng.filters(2, words);
            let (a, b) = ab.split_at(words);
            let want = reference(a, b);
            // A segment of the filters, e.g. the words of one field.
            let (s, e) = (cut.0 % (words + 1), cut.1 % (words + 1));
            let (s, e) = (s.min(e), s.max(e));
            let want_seg = reference(&a[s..e], &b[s..e]);
            for k in Kernel::available() {
                prop_assert_eq!(and_popcount(k, a, b), want, "kernel {}", k);
                prop_assert_eq!(and_popcount(k, a, a), reference(a, a), "kernel {}", k);
                prop_assert_eq!(and_popcount(k, &a[s..e], &b[s..e]), want_seg, "kernel {} segment {}..{}", k, s, e);
            }
        }

        #[test]
        fn and_popcount_segments_kernels_agree(words in word_counts(), seed: u64, cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut rng = Rng(seed);
            let ab = rng.filters(2, words);
            let (a, b) = ab.split_at(words);
            // Sorted segment ends within the filter, the last at its end.
            let mut ends: Vec<usize> = cuts.iter().map(|c| c % (words + 1)).collect();
            ends.push(words);
            ends.sort_unstable();
            let mut start = 0;
            let want: Vec<u32> = ends.iter().map(|&e| { let r = reference(&a[start..e], &b[start..e]); start = e; r }).collect();
            for k in Kernel::available() {
                let mut out = vec![u32::MAX; ends.len()];
                and_popcount_segments(k, a, b, &ends, &mut out);
                prop_assert_eq!(&out, &want, "kernel {}", k);
            }
        }

        #[test]
        fn and_popcount_many_kernels_agree(words in word_counts(), n in 0usize..14, seed: u64) {
            let mut rng = Rng(seed);
            let query = rng.filters(1, words);
            let block = rng.filters(n, words);
            let want: Vec<u32> = block.chunks_exact(words).map(|f| reference(&query, f)).collect();
            for k in Kernel::available() {
                let mut out = vec![u32::MAX; n];
                and_popcount_many(k, &query, &block, words, &mut out);
                prop_assert_eq!(&out, &want, "kernel {}", k);
                let mut pops = vec![u32::MAX; n];
                popcount_each(k, &block, words, &mut pops);
                let want_pops: Vec<u32> = block.chunks_exact(words).map(|f| reference(f, f)).collect();
                prop_assert_eq!(&pops, &want_pops, "kernel {}", k);
            }
        }

        /// The internal entry point also serves queries shorter than the
        /// filter stride (a leading segment of every filter).
        #[test]
        fn prefix_segments_agree(w in word_counts(), extra in 0usize..9, n in 0usize..11, seed: u64) {
            let stride = w + extra;
            let mut rng = Rng(seed);
            let query = rng.filters(1, w);
            let block = rng.filters(n, stride);
            let want: Vec<u32> = block.chunks_exact(stride).map(|f| reference(&query, &f[..w])).collect();
            for k in Kernel::available() {
                let mut out = vec![u32::MAX; n];
                many_unchecked(k, &query, &block, stride, &mut out);
                prop_assert_eq!(&out, &want, "kernel {}", k);
            }
        }

        #[test]
        fn all_pairs_above_matches_naive(
            words in word_counts(),
            n_a in 0usize..9,
            n_b in 0usize..23,
            seed: u64,
            threshold in prop_oneof![Just(0.0f32), Just(1.0), Just(-0.5), Just(1.5), 0.0f32..1.0],
        ) {
            let mut rng = Rng(seed);
            let a = rng.filters(n_a, words);
            let b = rng.filters(n_b, words);
            check_all_pairs(&a, &b, words, threshold);
        }

        #[test]
        fn eligible_range_is_exact(pa in 0u32..3000, threshold in 0.0f32..1.05) {
            let range = eligible_range(pa, threshold);
            for pb in 0..6200 {
                let possible = dice(pa.min(pb), pa, pb) >= threshold;
                let admitted = range.is_some_and(|(lo, hi)| (lo..=hi).contains(&pb));
                prop_assert_eq!(possible, admitted, "pa {} pb {}", pa, pb);
            }
        }
    }

    fn naive_pairs(a: &[u64], b: &[u64], words: usize, threshold: f32) -> Vec<(usize, usize, u32)> {
        let mut v = Vec::new();
        for (i, x) in a.chunks_exact(words).enumerate() {
            for (j, y) in b.chunks_exact(words).enumerate() {
                let d = dice(reference(x, y), reference(x, x), reference(y, y));
                if d >= threshold {
                    v.push((i, j, d.to_bits()));
                }
            }
        }
        v
    }

    fn check_all_pairs(a: &[u64], b: &[u64], words: usize, threshold: f32) {
        let pops =
            |m: &[u64]| -> Vec<u32> { m.chunks_exact(words).map(|f| reference(f, f)).collect() };
        let (pa, pb) = (pops(a), pops(b));
        let want = naive_pairs(a, b, words, threshold);
        for k in Kernel::available() {
            let mut got = Vec::new();
            all_pairs_above(k, a, &pa, b, &pb, words, threshold, |i, j, d| {
                got.push((i, j, d.to_bits()))
            });
            assert_eq!(got, want, "kernel {k}, threshold {threshold}");
        }
    }

    /// Several tiles of candidates, densities that make the length filter
    /// prune, and thresholds across the range.
    #[test]
    fn all_pairs_above_many_tiles() {
        let mut rng = Rng(7);
        let words = 16;
        let a = rng.filters(9, words);
        let b = rng.filters(2 * TILE + 37, words);
        for t in [-1.0, 0.0, 0.1, 0.3, 0.5, 0.62, 0.8, 0.95, 1.0, 1.01] {
            check_all_pairs(&a, &b, words, t);
        }
        check_all_pairs(&a, &b, words, f32::NAN);
        // Odd filter width through the generic paths.
        let a = rng.filters(5, 5);
        let b = rng.filters(TILE + 3, 5);
        for t in [0.0, 0.4, 0.7] {
            check_all_pairs(&a, &b, 5, t);
        }
    }

    /// The many-query paths (bit-sliced, or grouped on AVX-512), several tiles, pruning
    /// densities.
    #[test]
    fn all_pairs_above_sliced_path() {
        let mut rng = Rng(19);
        for (words, n_a, n_b) in [
            (16, SLICED_MIN_QUERIES, TILE + 45),
            (8, SLICED_MIN_QUERIES + 1, TILE + 3),
            (32, SLICED_MIN_QUERIES + 2, 2 * TILE + 7),
            (5, SLICED_MIN_QUERIES + 3, 2 * TILE + 1),
            (1, 70, 20),
        ] {
            let a = rng.filters(n_a, words);
            let b = rng.filters(n_b, words);
            for t in [0.0, 0.3, 0.55, 0.8, 1.0] {
                check_all_pairs(&a, &b, words, t);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sliced_counts_match_naive(seed: u64, n_ones in 0usize..200, words in 1usize..20) {
            let mut rng = Rng(seed);
            let rows: Vec<sliced::Row> = (0..64 * words).map(|_| std::array::from_fn(|_| rng.word(0.5))).collect();
            let ones: Vec<u32> = (0..n_ones).map(|_| (rng.next() % (64 * words as u64)) as u32).collect();
            let mut counts = [0u32; TILE];
            sliced::count_body(&rows, &ones, &mut counts);
            prop_assert_eq!(counts.to_vec(), sliced::naive_counts(&rows, &ones));
            #[cfg(target_arch = "x86_64")]
            for k in Kernel::available() {
                let mut c2 = [u32::MAX; TILE];
                count_tile(k, &rows, &ones, &mut c2);
                prop_assert_eq!(&c2, &counts);
            }
        }

        #[test]
        fn sliced_transpose_roundtrip(seed: u64, n in 0usize..=TILE, words in 1usize..6) {
            let mut rng = Rng(seed);
            let block = rng.filters(n, words);
            let mut rows = Vec::new();
            sliced::transpose(&block, words, &mut rows);
            for (c, f) in block.chunks_exact(words).enumerate() {
                for p in 0..64 * words {
                    let want = (f[p / 64] >> (p % 64)) & 1;
                    prop_assert_eq!((rows[p][c / 64] >> (c % 64)) & 1, want);
                }
            }
            for row in &rows {
                for c in n..TILE {
                    prop_assert_eq!((row[c / 64] >> (c % 64)) & 1, 0);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        for k in Kernel::available() {
            for words in [
                1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 124, 125, 200, 1023, 1024, 1100,
            ] {
                let zero = vec![0u64; words];
                let ones = vec![u64::MAX; words];
                let full = 64 * words as u32;
                assert_eq!(and_popcount(k, &zero, &zero), 0, "{k} {words}");
                assert_eq!(and_popcount(k, &zero, &ones), 0, "{k} {words}");
                assert_eq!(and_popcount(k, &ones, &ones), full, "{k} {words}");
                // One query against a block: zeros, ones, ones, single bits...
                let mut block = [zero.clone(), ones.clone(), ones.clone()].concat();
                let mut want = vec![0, full, full];
                for bit in [0, 1, 63, 64, 64 * words - 1] {
                    if bit < 64 * words {
                        let mut f = zero.clone();
                        f[bit / 64] |= 1 << (bit % 64);
                        assert_eq!(and_popcount(k, &f, &ones), 1, "{k} {words} bit {bit}");
                        assert_eq!(and_popcount(k, &f, &f), 1, "{k} {words} bit {bit}");
                        block.extend_from_slice(&f);
                        want.push(1);
                    }
                }
                let mut out = vec![u32::MAX; want.len()];
                and_popcount_many(k, &ones, &block, words, &mut out);
                assert_eq!(out, want, "{k} {words}");
                and_popcount_many(k, &zero, &block, words, &mut out);
                assert!(out.iter().all(|&c| c == 0), "{k} {words}");
            }
        }
    }

    #[test]
    fn dice_values() {
        assert_eq!(dice(0, 0, 0), 0.0);
        assert_eq!(dice(0, 5, 0), 0.0);
        assert_eq!(dice(0, 3, 4), 0.0);
        assert_eq!(dice(1, 1, 1), 1.0);
        assert_eq!(dice(3, 4, 8), 0.5);
        // Identical filters give exactly 1.0, in both arithmetic branches.
        for p in [
            1,
            3,
            41,
            49,
            359,
            1023,
            1 << 22,
            (1 << 23) + 1,
            u32::MAX / 2,
            u32::MAX,
        ] {
            assert_eq!(dice(p, p, p), 1.0, "{p}");
        }
        let mut rng = Rng(3);
        let f = rng.filters(1, 16);
        let p = popcount(&f);
        assert_eq!(dice(and_popcount(Kernel::detect(), &f, &f), p, p), 1.0);
        assert_eq!(popcount(&[]), 0);
        assert_eq!(popcount(&[u64::MAX, 1]), 65);
    }

    #[test]
    fn dice_batch_matches_dice() {
        let mut rng = Rng(11);
        for scale in [10u64, 1 << 12, 1 << 23, 1 << 24, 1 << 31] {
            let pbs: Vec<u32> = (0..100).map(|_| (rng.next() % scale) as u32).collect();
            let pa = (rng.next() % scale) as u32;
            let counts: Vec<u32> = pbs
                .iter()
                .map(|&pb| (rng.next() % (u64::from(pa.min(pb)) + 1)) as u32)
                .collect();
            let f32_ok = scale <= u64::from(DICE_F32_BELOW);
            for k in Kernel::available() {
                let mut out = vec![f32::NAN; pbs.len()];
                dice_batch(k, f32_ok, &counts, pa, &pbs, &mut out);
                for ((&c, &pb), &d) in counts.iter().zip(&pbs).zip(&out) {
                    assert_eq!(d.to_bits(), dice(c, pa, pb).to_bits(), "{k} {c} {pa} {pb}");
                }
            }
        }
    }

    #[test]
    fn kernel_names_and_detection() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()), Some(k));
            assert_eq!(
                Kernel::from_name(&format!(" {} ", k.name().to_uppercase())),
                Some(k)
            );
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(Kernel::from_name("sse"), None);
        let available = Kernel::available();
        assert_eq!(available.first(), Some(&Kernel::detect()));
        assert_eq!(available.last(), Some(&Kernel::Portable));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                Kernel::Popcnt.is_available(),
                std::is_x86_feature_detected!("popcnt")
            );
            assert_eq!(
                Kernel::Avx512.is_available(),
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vpopcntdq")
            );
        }
    }

    /// On a CPU with AVX-512 the detected kernel is `avx512` and `all_pairs_above` takes its
    /// fused loop for 1024-bit filters (so the equality tests above exercise it here).
    #[test]
    fn avx512_fused_path_selected_when_available() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vpopcntdq")
            && std::is_x86_feature_detected!("avx2")
        {
            assert_eq!(Kernel::detect(), Kernel::Avx512);
        }
        let fused = Kernel::Avx512.is_available();
        assert_eq!(has_fused(Kernel::detect(), 16, true), fused);
        assert!(!has_fused(Kernel::detect(), 16, false));
        assert!(!has_fused(Kernel::detect(), 5, true));
        assert!(!has_fused(Kernel::Portable, 16, true));
    }

    #[test]
    fn unavailable_kernel_panics() {
        let Some(&k) = Kernel::ALL.iter().find(|k| !k.is_available()) else {
            return; // this CPU runs every kernel
        };
        let r = std::panic::catch_unwind(|| and_popcount(k, &[1], &[1]));
        assert!(r.is_err(), "{k} should be refused");
        let r = std::panic::catch_unwind(|| and_popcount_many(k, &[1], &[1], 1, &mut [0]));
        assert!(r.is_err(), "{k} should be refused");
    }

    #[test]
    fn zero_words_and_empty_inputs() {
        for k in Kernel::available() {
            let mut out = [7u32; 3];
            and_popcount_many(k, &[], &[], 0, &mut out);
            assert_eq!(out, [0; 3]);
            assert_eq!(and_popcount(k, &[], &[]), 0);
            let mut out: [u32; 0] = [];
            and_popcount_many(k, &[1, 2], &[], 2, &mut out);
            let mut calls = 0;
            all_pairs_above(k, &[], &[], &[1], &[1], 1, 0.0, |_, _, _| calls += 1);
            all_pairs_above(k, &[1], &[1], &[], &[], 1, 0.0, |_, _, _| calls += 1);
            assert_eq!(calls, 0);
        }
    }
}
