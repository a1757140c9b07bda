//! The depth curriculum (RSM's `get_target_H/L`, reference `navidivan/rsm` `pretrain.py`): `H` and `L` grow
//! independently at percentage milestones of the total steps, `H(t) = H₀ + Σᵢ ΔHᵢ·[100·t/T ≥ mᵢ]`, from the
//! model config's depth. At each growth event the trainer can ramp the LR up again from 0
//! (`transition_lr_warmup_steps`) and scale the optimiser moments (`moment_scale`).
//!
//! Everything here is a pure function of the step, so a resumed run recomputes the depth, the last growth event
//! and the LR multiplier instead of storing them.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::model::Depth;

/// A released schedule, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CurriculumPreset {
    /// The Sudoku recipe: (2,2) → (8,12); H at 20.1…85.1%, L at 30.1…94.1%.
    #[serde(rename = "rsm-sudoku")]
    RsmSudoku,
    /// The Maze recipe: (2,2) → (9,5), with a 200-step LR ramp after each growth event.
    #[serde(rename = "rsm-maze")]
    RsmMaze,
}

/// The `[curriculum]` section. Explicit lists override the preset's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CurriculumConfig {
    #[serde(default)]
    pub preset: Option<CurriculumPreset>,
    /// Percent-of-total-steps thresholds at which `H` grows by the matching `h_add` entry (pairs are zipped:
    /// extra entries of either list are ignored, as in the reference).
    #[serde(default)]
    pub h_milestones: Option<Vec<f64>>,
    #[serde(default)]
    pub h_add: Option<Vec<usize>>,
    #[serde(default)]
    pub l_milestones: Option<Vec<f64>>,
    #[serde(default)]
    pub l_add: Option<Vec<usize>>,
    /// After a growth event, multiply the LR by a ramp from 0 to 1 over this many steps (0 = off).
    #[serde(default)]
    pub transition_lr_warmup_steps: Option<u64>,
    /// Multiply the optimiser's first and second moments by this at each growth event (1 = keep them).
    #[serde(default)]
    pub moment_scale: Option<f64>,
}

/// A resolved schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Curriculum {
    pub base: Depth,
    /// `(milestone %, amount)` for H and for L, sorted by milestone.
    pub h: Vec<(f64, usize)>,
    pub l: Vec<(f64, usize)>,
    pub transition_lr_warmup_steps: u64,
    pub moment_scale: f64,
}

const SUDOKU_H: [f64; 6] = [20.1, 40.1, 55.1, 65.1, 75.1, 85.1];
const SUDOKU_L: [f64; 10] = [30.1, 50.1, 70.1, 80.1, 84.1, 86.1, 88.1, 90.1, 92.1, 94.1];
const MAZE_H: [f64; 7] = [20.1, 40.1, 55.1, 65.1, 75.1, 85.1, 95.1];
const MAZE_L: [f64; 3] = [30.1, 50.1, 70.1];

impl CurriculumConfig {
    /// The schedule starting from `base` (the model config's depth).
    pub fn resolve(&self, base: Depth) -> Result<Curriculum> {
        let (h_m, l_m, ramp): (&[f64], &[f64], u64) = match self.preset {
            Some(CurriculumPreset::RsmSudoku) => (&SUDOKU_H, &SUDOKU_L, 0),
            Some(CurriculumPreset::RsmMaze) => (&MAZE_H, &MAZE_L, 200),
            None => (&[], &[], 0),
        };
        let h_m = self.h_milestones.clone().unwrap_or_else(|| h_m.to_vec());
        let l_m = self.l_milestones.clone().unwrap_or_else(|| l_m.to_vec());
        let h_a = self.h_add.clone().unwrap_or_else(|| vec![1; h_m.len()]);
        let l_a = self.l_add.clone().unwrap_or_else(|| vec![1; l_m.len()]);
        for (name, m) in [("curriculum.h_milestones", &h_m), ("curriculum.l_milestones", &l_m)] {
            ensure!(m.iter().all(|p| p.is_finite() && *p >= 0.0), "{name}: milestones are percentages >= 0");
        }
        let moment_scale = self.moment_scale.unwrap_or(1.0);
        ensure!(moment_scale.is_finite() && moment_scale >= 0.0, "curriculum.moment_scale must be >= 0");
        let pairs = |m: Vec<f64>, a: Vec<usize>| {
            let mut v: Vec<(f64, usize)> = m.into_iter().zip(a).collect();
            v.sort_by(|x, y| x.0.total_cmp(&y.0));
            v
        };
        Ok(Curriculum {
            base,
            h: pairs(h_m, h_a),
            l: pairs(l_m, l_a),
            transition_lr_warmup_steps: self.transition_lr_warmup_steps.unwrap_or(ramp),
            moment_scale,
        })
    }
}

/// The reference's progress test, `step / max(1, total) · 100 ≥ milestone`, in the same float operations.
fn reached(step: u64, total: u64, milestone: f64) -> bool {
    (step as f64 / total.max(1) as f64) * 100.0 >= milestone
}

/// The first step at which `milestone` is reached, if any step up to `total` reaches it.
fn first_step_reaching(milestone: f64, total: u64) -> Option<u64> {
    let mut s = ((milestone / 100.0) * total.max(1) as f64).floor().max(0.0) as u64;
    s = s.saturating_sub(2);
    while s <= total && !reached(s, total, milestone) {
        s += 1;
    }
    (s <= total).then_some(s)
}

impl Curriculum {
    /// The depth training uses at optimiser step `step` (1-based; step 0 is the state before training).
    pub fn depth_at(&self, step: u64, total: u64) -> Depth {
        let grow = |sched: &[(f64, usize)]| {
            sched.iter().filter(|(m, _)| reached(step, total, *m)).map(|(_, a)| a).sum::<usize>()
        };
        Depth { h: self.base.h + grow(&self.h), l: self.base.l + grow(&self.l) }
    }

    /// The steps at which the depth changes, in order.
    pub fn growth_steps(&self, total: u64) -> Vec<u64> {
        let mut steps: Vec<u64> = self
            .h
            .iter()
            .chain(&self.l)
            .filter(|(_, add)| *add > 0)
            .filter_map(|(m, _)| first_step_reaching(*m, total))
            .filter(|&s| s >= 1 && self.depth_at(s, total) != self.depth_at(s - 1, total))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// The latest growth step at or before `step`.
    pub fn last_growth(&self, step: u64, total: u64) -> Option<u64> {
        self.growth_steps(total).into_iter().rev().find(|&s| s <= step)
    }

    /// The reference's `lr_transition_mult`: 0 on a growth step, then `dt / warmup`, 1 from `dt = warmup` on.
    pub fn lr_multiplier(&self, step: u64, total: u64) -> f64 {
        let w = self.transition_lr_warmup_steps;
        if w == 0 {
            return 1.0;
        }
        match self.last_growth(step, total) {
            None => 1.0,
            Some(g) if step - g >= w => 1.0,
            Some(g) => (step - g) as f64 / w as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(p: CurriculumPreset) -> Curriculum {
        CurriculumConfig { preset: Some(p), ..Default::default() }.resolve(Depth { h: 2, l: 2 }).unwrap()
    }

    #[test]
    fn released_schedules_end_where_the_recipes_do() {
        assert_eq!(preset(CurriculumPreset::RsmSudoku).depth_at(14968, 14968), Depth { h: 8, l: 12 });
        assert_eq!(preset(CurriculumPreset::RsmMaze).depth_at(3906, 3906), Depth { h: 9, l: 5 });
        assert_eq!(preset(CurriculumPreset::RsmMaze).depth_at(0, 3906), Depth { h: 2, l: 2 });
    }

    #[test]
    fn explicit_lists_override_and_are_zipped() {
        let c =
            CurriculumConfig { h_milestones: Some(vec![50.0, 10.0]), h_add: Some(vec![2, 1, 7]), ..Default::default() }
                .resolve(Depth { h: 1, l: 3 })
                .unwrap();
        assert_eq!(c.depth_at(9, 100), Depth { h: 1, l: 3 });
        assert_eq!(c.depth_at(10, 100), Depth { h: 2, l: 3 });
        assert_eq!(c.depth_at(100, 100), Depth { h: 4, l: 3 });
        assert_eq!(c.growth_steps(100), vec![10, 50]);
        assert_eq!(c.lr_multiplier(60, 100), 1.0, "no ramp configured");
        let ramped = Curriculum { transition_lr_warmup_steps: 4, ..c };
        assert_eq!([50, 51, 53, 54, 55].map(|s| ramped.lr_multiplier(s, 100)), [0.0, 0.25, 0.75, 1.0, 1.0]);
    }
}
