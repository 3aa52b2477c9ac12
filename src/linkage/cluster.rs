//! From scored pairs to links: greedy clustering by score with at most one record per agency.
//!
//! Pairs are taken best first (posterior, then whole-filter Dice, then record ids, so ties break
//! the same way every run). A pair joins two clusters only if they hold no record of the same
//! input file (unless deduplicating), so health↔police and health↔education links become one
//! three-record link, and a conflicting weaker pair is refused. Review-band pairs then attach
//! still-unlinked records, marked for clerical review; they never merge two existing links.

use rayon::prelude::*;
use serde::Serialize;

/// A record's place in the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Linked by a pair at or above the threshold.
    Match,
    /// Linked by a review-band pair: needs a person to look.
    Review,
}

/// A pair ready for clustering.
#[derive(Clone, Copy, Debug)]
pub struct Edge {
    /// First record (global id).
    pub a: u32,
    /// Second record (global id).
    pub b: u32,
    /// Posterior probability of a match.
    pub p: f64,
    /// Whole-filter Dice (tie-break).
    pub dice: f32,
}

/// The clustering of all records.
#[derive(Clone, Debug)]
pub struct Clusters {
    /// Cluster representative of each record (itself when unlinked).
    pub root: Vec<u32>,
    /// Per record: the score of the edge that linked it, and how, if linked.
    pub linked: Vec<Option<(f64, Status)>>,
    /// Pairs refused because both sides already held a record of the same input.
    pub conflicts: u64,
    /// Review-band pairs that would have merged two links (left for review, not merged).
    pub review_merges_skipped: u64,
}

/// Clusters `n` records from `edges` (any order). `file_of` gives each record's input file
/// (at most 64 inputs); `dedupe` lifts the one-per-input rule.
pub fn cluster(
    n: usize,
    mut edges: Vec<Edge>,
    threshold: f64,
    review: f64,
    file_of: impl Fn(u32) -> usize,
    dedupe: bool,
) -> Clusters {
    edges.retain(|e| e.p >= review);
    // A total order (pairs are distinct), so an unstable parallel sort is deterministic.
    edges.par_sort_unstable_by(|x, y| {
        y.p.total_cmp(&x.p)
            .then(y.dice.total_cmp(&x.dice))
            .then(x.a.cmp(&y.a))
            .then(x.b.cmp(&y.b))
    });
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut mask: Vec<u64> = (0..n as u32).map(|g| 1u64 << (file_of(g) % 64)).collect();
    let mut size: Vec<u32> = vec![1; n];
    let mut linked: Vec<Option<(f64, Status)>> = vec![None; n];
    let mut conflicts = 0;
    let mut review_merges_skipped = 0;
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let p = parent[x as usize];
            parent[x as usize] = parent[p as usize];
            x = p;
        }
        x
    }
    for e in &edges {
        let (ra, rb) = (find(&mut parent, e.a), find(&mut parent, e.b));
        if ra == rb {
            continue;
        }
        if !dedupe && mask[ra as usize] & mask[rb as usize] != 0 {
            conflicts += 1;
            continue;
        }
        let status = if e.p >= threshold {
            Status::Match
        } else {
            // A review pair may only bring in a record that is not linked yet.
            if size[ra as usize] > 1 && size[rb as usize] > 1 {
                review_merges_skipped += 1;
                continue;
            }
            Status::Review
        };
        let (big, small) = if size[ra as usize] >= size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        parent[small as usize] = big;
        mask[big as usize] |= mask[small as usize];
        size[big as usize] += size[small as usize];
        for r in [e.a, e.b] {
            match (linked[r as usize], status) {
                (None, _) => linked[r as usize] = Some((e.p, status)),
                (Some((_, Status::Review)), Status::Match) => {
                    linked[r as usize] = Some((e.p, Status::Match))
                }
                _ => {}
            }
        }
    }
    let root = (0..n as u32).map(|x| find(&mut parent, x)).collect();
    Clusters {
        root,
        linked,
        conflicts,
        review_merges_skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: u32, b: u32, p: f64) -> Edge {
        Edge { a, b, p, dice: 0.5 }
    }

    #[test]
    fn three_agencies_form_one_link_and_conflicts_are_refused() {
        // Records 0,1 health; 2 police; 3,4 education.
        let file = |g: u32| [0, 0, 1, 2, 2][g as usize];
        let c = cluster(
            5,
            vec![e(0, 2, 0.99), e(2, 3, 0.98), e(1, 2, 0.97), e(0, 4, 0.9)],
            0.5,
            0.1,
            file,
            false,
        );
        assert_eq!(c.root[0], c.root[2]);
        assert_eq!(c.root[0], c.root[3]);
        assert_ne!(c.root[1], c.root[0], "second health record refused");
        assert_ne!(c.root[4], c.root[0], "second education record refused");
        assert_eq!(c.conflicts, 2);
    }

    #[test]
    fn order_of_edges_does_not_matter() {
        let file = |g: u32| (g % 3) as usize;
        let edges = vec![
            e(0, 1, 0.9),
            e(1, 2, 0.9),
            e(3, 4, 0.6),
            e(4, 5, 0.3),
            e(0, 5, 0.9),
        ];
        let mut rev = edges.clone();
        rev.reverse();
        let a = cluster(6, edges, 0.5, 0.2, file, false);
        let b = cluster(6, rev, 0.5, 0.2, file, false);
        assert_eq!(a.root, b.root);
        assert_eq!(a.linked, b.linked);
    }

    #[test]
    fn review_attaches_singletons_only() {
        let file = |g: u32| g as usize;
        let c = cluster(
            4,
            vec![e(0, 1, 0.9), e(2, 3, 0.9), e(1, 2, 0.3), e(0, 3, 0.3)],
            0.5,
            0.2,
            file,
            false,
        );
        assert_ne!(c.root[0], c.root[2]);
        assert_eq!(c.review_merges_skipped, 2);
        let c = cluster(3, vec![e(0, 1, 0.9), e(1, 2, 0.3)], 0.5, 0.2, file, false);
        assert_eq!(c.linked[2], Some((0.3, Status::Review)));
        assert_eq!(c.linked[0].unwrap().1, Status::Match);
    }
}
