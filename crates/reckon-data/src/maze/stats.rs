//! Statistics of a maze set, printed after a build: how many mazes, how dense their walls are,
//! and a histogram of shortest-path lengths (in moves, recomputed by BFS from the questions).

use super::grid::{Maze, WALL};
use std::fmt;

/// Mean, minimum and maximum of a quantity (all 0 for an empty set).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        Summary {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Mazes whose shortest path has `lo..lo + bin_width` moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramBin {
    pub lo: usize,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MazeStats {
    pub maze: Maze,
    pub count: usize,
    /// Questions that are invalid or whose goal is unreachable (not in the distance figures).
    pub unsolvable: usize,
    /// Fraction of wall cells.
    pub wall_density: Summary,
    /// Shortest-path length in moves.
    pub distance: Summary,
    pub bin_width: usize,
    /// Consecutive bins from the one holding the shortest distance to the one holding the longest.
    pub histogram: Vec<HistogramBin>,
}

/// Target number of histogram rows.
const MAX_BINS: usize = 12;

/// The smallest of 1, 2, 5, 10, 20, 50, ... that covers `min..=max` in at most [`MAX_BINS`] bins.
fn bin_width(min: usize, max: usize) -> usize {
    let mut scale = 1;
    loop {
        for width in [scale, 2 * scale, 5 * scale] {
            if max / width - min / width < MAX_BINS {
                return width;
            }
        }
        scale *= 10;
    }
}

impl MazeStats {
    pub fn from_questions<'a>(maze: &Maze, questions: impl IntoIterator<Item = &'a [u8]>) -> MazeStats {
        let (mut densities, mut distances, mut count) = (Vec::new(), Vec::new(), 0);
        for question in questions {
            count += 1;
            densities.push(question.iter().filter(|&&t| t == WALL).count() as f64 / maze.cells() as f64);
            if let Ok(Some(d)) = maze.shortest_distance(question) {
                distances.push(d);
            }
        }
        let (lo, hi) = (distances.iter().copied().min().unwrap_or(0), distances.iter().copied().max().unwrap_or(0));
        let width = bin_width(lo, hi);
        let mut histogram: Vec<HistogramBin> =
            (lo / width..=hi / width).map(|b| HistogramBin { lo: b * width, count: 0 }).collect();
        for &d in &distances {
            histogram[d / width - lo / width].count += 1;
        }
        if distances.is_empty() {
            histogram.clear();
        }
        let as_f64: Vec<f64> = distances.iter().map(|&d| d as f64).collect();
        MazeStats {
            maze: *maze,
            count,
            unsolvable: count - distances.len(),
            wall_density: Summary::of(&densities),
            distance: Summary::of(&as_f64),
            bin_width: width,
            histogram,
        }
    }
}

impl fmt::Display for MazeStats {
    /// A header line, then one line per histogram bin with a bar scaled to the fullest bin.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, d) = (&self.wall_density, &self.distance);
        write!(
            f,
            "{} mazes {}x{}: walls {:.1}% mean ({:.1}%-{:.1}%), shortest path {}-{} moves, mean {:.1}",
            self.count,
            self.maze.width,
            self.maze.height,
            100.0 * w.mean,
            100.0 * w.min,
            100.0 * w.max,
            d.min,
            d.max,
            d.mean
        )?;
        if self.unsolvable > 0 {
            write!(f, "; {} unsolvable", self.unsolvable)?;
        }
        let fullest = self.histogram.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        for bin in &self.histogram {
            let range = format!("{}-{}", bin.lo, bin.lo + self.bin_width - 1);
            let bar = "#".repeat((bin.count * 40).div_ceil(fullest));
            write!(f, "\n  d {range:>9} | {:>6} {bar}", bin.count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range() {
        assert_eq!(bin_width(111, 144), 5);
        assert_eq!(bin_width(3, 9), 1);
        assert_eq!(bin_width(0, 300), 50);
    }

    #[test]
    fn stats_of_two_small_mazes() {
        let m = Maze::new(3, 2);
        let a = m.parse_question("S #  G").unwrap();
        let b = m.parse_question("SG    ").unwrap();
        let stats = MazeStats::from_questions(&m, [&a[..], &b[..]]);
        assert_eq!((stats.count, stats.unsolvable, stats.bin_width), (2, 0, 1));
        assert_eq!((stats.distance.min, stats.distance.max), (1.0, 3.0));
        assert!((stats.wall_density.mean - 1.0 / 12.0).abs() < 1e-12);
        assert_eq!(stats.histogram.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 0, 1]);
        let text = stats.to_string();
        assert!(text.starts_with("2 mazes 3x2: walls 8.3% mean (0.0%-16.7%), shortest path 1-3"), "{text}");
        assert!(text.contains("\n  d       1-1 |      1 ####"), "{text}");
    }
}
