//! Calibrated abstention: answer only when a confidence signal is high enough. For a signal (the halting head's
//! σ(q_halt), the vote's share, the residual, the verifier's verdict, how long the answer has been settled) and a
//! set of answered puzzles, the accuracy-coverage curve says how right the answers are when only the most
//! confident fraction is given; its area summarises a signal in one number; and a threshold picked on a
//! validation split for a target precision says what precision and coverage that promise keeps on a test split.

use serde::Serialize;

/// One puzzle's answer: how confident a signal is (higher: more confident) and whether the answer is right.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub score: f64,
    pub correct: bool,
}

/// A point of an accuracy-coverage curve: answering the `coverage` most confident share, `accuracy` are right.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CoveragePoint {
    pub coverage: f64,
    pub accuracy: f64,
    /// The lowest score answered at this coverage.
    pub threshold: f64,
}

/// The accuracy-coverage curve: puzzles by descending score, one point after each distinct score (ties are
/// answered together, as a threshold would).
pub fn coverage_curve(items: &[Scored]) -> Vec<CoveragePoint> {
    let mut sorted: Vec<Scored> = items.iter().copied().filter(|s| !s.score.is_nan()).collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let n = items.len().max(1) as f64;
    let mut points = Vec::new();
    let mut right = 0usize;
    for (i, s) in sorted.iter().enumerate() {
        right += usize::from(s.correct);
        if sorted.get(i + 1).is_none_or(|next| next.score != s.score) {
            points.push(CoveragePoint {
                coverage: (i + 1) as f64 / n,
                accuracy: right as f64 / (i + 1) as f64,
                threshold: s.score,
            });
        }
    }
    points
}

/// The area under the accuracy-coverage curve (a step function from coverage 0), in [0, 1]: 1 when the signal
/// ranks every right answer above every wrong one and all are right; the plain accuracy for an uninformative one.
pub fn area_under(curve: &[CoveragePoint]) -> f64 {
    let mut area = 0.0;
    let mut last = 0.0;
    for p in curve {
        area += (p.coverage - last) * p.accuracy;
        last = p.coverage;
    }
    area
}

/// What a threshold picked for a target precision keeps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PrecisionTarget {
    pub target: f64,
    /// Answer when the score is at least this (infinite: no threshold reaches the target on validation).
    pub threshold: f64,
    pub validation_precision: f64,
    pub validation_coverage: f64,
    pub test_precision: f64,
    pub test_coverage: f64,
    /// Test puzzles answered, and the 95% Wilson interval of the test precision at that count: the margin within
    /// which a precision measured on this many answers is consistent with the target.
    pub test_answered: usize,
    pub test_interval: (f64, f64),
    /// Whether the promise holds on test: the target is within the interval or below it.
    pub holds: bool,
}

/// The 95% Wilson score interval of a proportion of `right` in `n` (`[0, 1]` for `n = 0`). Unlike the normal
/// approximation it stays inside [0, 1] and is sensible at 0 or `n` right, which a high-precision threshold
/// usually gives.
pub fn wilson_interval(right: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (n, p) = (n as f64, right as f64 / n as f64);
    let denom = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / denom;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Picks on `validation` the lowest threshold whose precision reaches `target` (the most coverage that keeps the
/// promise there) and applies it to `test`. With no such threshold nothing is answered (precision reported as 1,
/// coverage 0).
pub fn target_precision(validation: &[Scored], test: &[Scored], target: f64) -> PrecisionTarget {
    let curve = coverage_curve(validation);
    let pick = curve.iter().filter(|p| p.accuracy >= target).max_by(|a, b| a.coverage.total_cmp(&b.coverage));
    let threshold = pick.map_or(f64::INFINITY, |p| p.threshold);
    let answered: Vec<&Scored> = test.iter().filter(|s| s.score >= threshold).collect();
    let right = answered.iter().filter(|s| s.correct).count();
    let test_interval = wilson_interval(right, answered.len());
    PrecisionTarget {
        target,
        threshold,
        validation_precision: pick.map_or(1.0, |p| p.accuracy),
        validation_coverage: pick.map_or(0.0, |p| p.coverage),
        test_precision: if answered.is_empty() { 1.0 } else { right as f64 / answered.len() as f64 },
        test_coverage: answered.len() as f64 / test.len().max(1) as f64,
        test_answered: answered.len(),
        test_interval,
        holds: target <= test_interval.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: f64, correct: bool) -> Scored {
        Scored { score, correct }
    }

    #[test]
    fn the_curve_answers_the_most_confident_first_and_ties_together() {
        let items = [s(0.9, true), s(0.1, false), s(0.5, true), s(0.5, false), s(0.8, true)];
        let curve = coverage_curve(&items);
        let pairs: Vec<(f64, f64)> = curve.iter().map(|p| (p.coverage, p.accuracy)).collect();
        assert_eq!(pairs, vec![(0.2, 1.0), (0.4, 1.0), (0.8, 0.75), (1.0, 0.6)]);
        assert_eq!(curve[2].threshold, 0.5);
        // Area: 0.4·1 + 0.4·0.75 + 0.2·0.6.
        assert!((area_under(&curve) - (0.4 + 0.3 + 0.12)).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_signal_has_area_one_and_a_useless_one_the_accuracy() {
        let perfect = [s(1.0, true), s(0.9, true), s(0.1, false), s(0.0, false)];
        let area = area_under(&coverage_curve(&perfect));
        assert!((area - (0.5 + 0.25 * 2.0 / 3.0 + 0.25 * 0.5)).abs() < 1e-12, "{area}");
        let flat = [s(0.5, true), s(0.5, false), s(0.5, true), s(0.5, false)];
        assert_eq!(area_under(&coverage_curve(&flat)), 0.5);
    }

    #[test]
    fn the_wilson_interval_matches_known_values_and_narrows_with_more_answers() {
        // Known values (Wilson 1927; e.g. R's prop.test without continuity correction): 8/10 → [0.490, 0.943],
        // 0/10 → [0, 0.278], 10/10 → [0.722, 1].
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3;
        assert!(close(wilson_interval(8, 10), (0.490, 0.943)), "{:?}", wilson_interval(8, 10));
        assert!(close(wilson_interval(0, 10), (0.0, 0.278)), "{:?}", wilson_interval(0, 10));
        assert!(close(wilson_interval(10, 10), (0.722, 1.0)), "{:?}", wilson_interval(10, 10));
        let (few, many) = (wilson_interval(80, 100), wilson_interval(800, 1000));
        assert!(many.1 - many.0 < few.1 - few.0);
        assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    }

    /// On a calibrated signal (an answer with score s is right with probability s), a threshold picked for 90% on
    /// one half keeps 90% on the other within the Wilson margin, for several seeds.
    #[test]
    fn a_target_precision_holds_on_a_calibrated_signal_within_its_interval() {
        use rand::{Rng, SeedableRng};
        for seed in 0..5 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut draw = |n: usize| -> Vec<Scored> {
                (0..n)
                    .map(|_| {
                        let score: f64 = rng.random();
                        Scored { score, correct: rng.random::<f64>() < score }
                    })
                    .collect()
            };
            let (validation, test) = (draw(4000), draw(4000));
            let t = target_precision(&validation, &test, 0.9);
            assert!(t.holds && t.test_answered > 500, "seed {seed}: {t:?}");
            assert!((t.test_precision - 0.9).abs() < 0.03, "seed {seed}: {t:?}");
            // A calibrated signal answering above 0.8 on average covers about a fifth.
            assert!((0.1..0.35).contains(&t.test_coverage), "seed {seed}: {t:?}");
        }
    }

    #[test]
    fn the_target_threshold_comes_from_validation_and_is_judged_on_test() {
        let validation = [s(0.9, true), s(0.8, true), s(0.7, false), s(0.6, true), s(0.2, false)];
        let test = [s(0.95, true), s(0.85, false), s(0.75, true), s(0.65, true), s(0.1, false)];
        let t = target_precision(&validation, &test, 0.75);
        // Validation: top 4 are 3/4 right (the most coverage at ≥ 75%) → threshold 0.6.
        assert_eq!((t.threshold, t.validation_coverage, t.validation_precision), (0.6, 0.8, 0.75));
        assert_eq!((t.test_coverage, t.test_precision), (0.8, 0.75));
        // 3 of 4 right: the 95% Wilson interval is wide, and 0.75 is inside it.
        assert_eq!(t.test_answered, 4);
        assert!(t.test_interval.0 < 0.4 && t.test_interval.1 > 0.9 && t.holds, "{t:?}");
        let never = target_precision(&validation, &test, 1.01);
        assert_eq!((never.threshold, never.test_coverage, never.test_precision), (f64::INFINITY, 0.0, 1.0));
    }
}
