//! ARC as a [`Task`]: one grid on the N×N token canvas. Parsing reads a JSON grid (`[[0,1],[2,3]]`), rendering
//! finds the grid (translated or not) and crops it as the evaluator does, one digit per cell, and the augmentation is the builder's
//! (dihedral × colour permutation, 0 fixed) applied to the cropped grid, re-placed at the canvas origin. ARC has
//! no solver and no verifier: whether an answer is right is known only from the task's hidden output, which the
//! evaluator ([`super::ArcEvaluator`]) compares.

use anyhow::{Context, Result};

use super::augment::ArcAugment;
use super::evaluate::crop;
use super::grid::ArcGrid;
use crate::task::{Task, TaskSpec};

/// The ARC task on an N×N canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arc {
    pub canvas: usize,
}

impl Arc {
    pub fn new(canvas: usize) -> Self {
        Arc { canvas }
    }

    fn grid_of(&self, tokens: &[u8]) -> Option<ArcGrid> {
        crop(tokens, self.canvas)
    }

    /// The grid on a canvas of tokens, wherever it lies ([`super::locate`]: a translated train example too).
    pub fn grid(&self, tokens: &[u8]) -> Option<ArcGrid> {
        super::locate(tokens, self.canvas)
    }
}

impl Task for Arc {
    type Transform = ArcAugment;

    fn spec(&self) -> TaskSpec {
        super::spec(self.canvas)
    }

    fn parse_puzzle(&self, text: &str) -> Result<Vec<u8>> {
        let rows: Vec<Vec<i64>> =
            serde_json::from_str(text.trim()).context("an ARC grid is a JSON list of rows, e.g. [[0,1],[2,3]]")?;
        let grid = ArcGrid::from_rows(&rows)?;
        anyhow::ensure!(
            grid.fits(self.canvas),
            "the grid is {}x{}, larger than the model's {}x{} canvas",
            grid.height(),
            grid.width(),
            self.canvas,
            self.canvas
        );
        Ok(grid.to_tokens(self.canvas, 0, 0))
    }

    fn render(&self, tokens: &[u8]) -> String {
        match self.grid(tokens) {
            Some(grid) => grid
                .rows()
                .map(|row| row.iter().map(|c| char::from(b'0' + c)).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n"),
            None => "(no grid: no cell holds a colour)".to_string(),
        }
    }

    fn random_transform(&self, rng: &mut dyn rand::RngCore) -> ArcAugment {
        ArcAugment::random(rng)
    }

    fn apply(&self, t: &ArcAugment, tokens: &[u8]) -> Vec<u8> {
        self.grid_of(tokens).map_or_else(|| tokens.to_vec(), |g| t.apply(&g).to_tokens(self.canvas, 0, 0))
    }

    fn invert(&self, t: &ArcAugment, tokens: &[u8]) -> Vec<u8> {
        self.grid_of(tokens).map_or_else(|| tokens.to_vec(), |g| t.invert(&g).to_tokens(self.canvas, 0, 0))
    }

    fn solve(&self, _inputs: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn verify(&self, _inputs: &[u8], _prediction: &[u8]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parse_render_and_augment_round_trip() {
        let arc = Arc::new(5);
        let tokens = arc.parse_puzzle("[[0,1,2],[3,4,5]]").unwrap();
        assert_eq!(tokens.len(), 25);
        assert_eq!(arc.render(&tokens), "012\n345");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for _ in 0..8 {
            let t = arc.random_transform(&mut rng);
            assert_eq!(arc.invert(&t, &arc.apply(&t, &tokens)), tokens);
        }
        let err = format!("{:#}", arc.parse_puzzle("[[0,1],[2]]").unwrap_err());
        assert!(err.contains("row 1"), "{err}");
        assert!(arc.parse_puzzle("[[1,2,3,4,5,6]]").unwrap_err().to_string().contains("larger"));
    }
}
