//! Frequency alignment (Kuzu et al. 2011; Niedermeyer et al. 2014; Christen et al. 2018 use it
//! as their baseline): equal plaintext values give equal encodings, so the attacker sorts the
//! distinct encodings by how many records hold each, sorts the plaintext values of their
//! reference the same way, and pairs them rank by rank.
//!
//! A pairing is only *confident*, and only then taken as a guess, when the counts on both sides
//! stand apart from their neighbours by more than a reference could be off by sampling
//! (`z·√count`, at least 1) and agree with each other within that margin. Ties and near-ties
//! are never guessed. With the export itself as the reference the counts are exact, so this
//! models an attacker with a very good reference who still refuses coin flips.

use super::truth::NONE;

/// Pairs encodings with plaintext values by frequency rank.
///
/// `enc` is the encoding id of each record ([`NONE`] for none), `n_enc` the number of distinct
/// encodings, `plain_counts` the records per plaintext value of the reference. Returns, per
/// record, the guessed value id or [`NONE`].
pub(crate) fn align(enc: &[u32], n_enc: usize, plain_counts: &[u32], z: f64) -> Vec<u32> {
    let mut enc_counts = vec![0u32; n_enc];
    for &e in enc {
        if e != NONE {
            enc_counts[e as usize] += 1;
        }
    }
    let total_enc: u64 = enc_counts.iter().map(|&c| u64::from(c)).sum();
    let total_plain: u64 = plain_counts.iter().map(|&c| u64::from(c)).sum();
    if total_enc == 0 || total_plain == 0 {
        return vec![NONE; enc.len()];
    }
    // Reference counts on the scale of the encodings.
    let scale = total_enc as f64 / total_plain as f64;
    let ranked = |counts: &[f64]| {
        let mut idx: Vec<usize> = (0..counts.len()).collect();
        idx.sort_by(|&a, &b| counts[b].total_cmp(&counts[a]).then(a.cmp(&b)));
        idx
    };
    let ec: Vec<f64> = enc_counts.iter().map(|&c| f64::from(c)).collect();
    let pc: Vec<f64> = plain_counts.iter().map(|&c| f64::from(c) * scale).collect();
    let er = ranked(&ec);
    let pr = ranked(&pc);
    let margin = |c: f64| (z * c.sqrt()).max(1.0);
    // True if the value at rank i stands apart from ranks i-1 and i+1 by the margin.
    let isolated = |counts: &[f64], order: &[usize], i: usize| {
        let c = counts[order[i]];
        let m = margin(c);
        let above = i == 0 || counts[order[i - 1]] - c >= m;
        let below = i + 1 >= order.len() || c - counts[order[i + 1]] >= m;
        above && below
    };
    let mut guess_of_enc = vec![NONE; n_enc];
    for i in 0..er.len().min(pr.len()) {
        let (c_e, c_p) = (ec[er[i]], pc[pr[i]]);
        // Values held by one record only never stand apart from one another.
        if c_e < 2.0 {
            break;
        }
        if (c_e - c_p).abs() < margin(c_e) && isolated(&ec, &er, i) && isolated(&pc, &pr, i) {
            guess_of_enc[er[i]] = pr[i] as u32;
        }
    }
    enc.iter()
        .map(|&e| {
            if e == NONE {
                NONE
            } else {
                guess_of_enc[e as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_isolated_ranks_and_refuses_ties() {
        // Encodings 0..4 held by 50, 20, 10, 10, 1 records; reference values in another order.
        let mut enc = Vec::new();
        for (e, c) in [(0u32, 50), (1, 20), (2, 10), (3, 10), (4, 1)] {
            enc.extend(std::iter::repeat_n(e, c));
        }
        enc.push(NONE);
        let plain = [10, 1, 50, 10, 20];
        let g = align(&enc, 5, &plain, 0.0);
        assert_eq!(g[0], 2, "most frequent encoding ↔ most frequent value");
        assert_eq!(g[50], 4, "second ↔ second");
        assert_eq!(g[70], NONE, "tied counts are never guessed");
        assert_eq!(g[90], NONE, "singletons are never guessed");
        assert_eq!(*g.last().unwrap(), NONE);
        // A demanding margin refuses the 20-vs-10 gap (z·√20 ≈ 13.4 > 10).
        let g = align(&enc, 5, &plain, 3.0);
        assert_eq!(g[0], 2);
        assert_eq!(g[50], NONE);
    }
}
