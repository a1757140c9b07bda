//! The fixed-point solvers on a trained model: accuracy and settling per function evaluation for each solver
//! ([`evaluate_solvers`]) and their table. The solvers themselves are [`crate::model::fixed_point`] (the DEQ
//! family's forward and backward use them too).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

pub use crate::model::fixed_point::{flatten, relative_rows, solve, solve_until, unflatten, FixedPointSolver};

/// How one solver did on a dataset split at a budget of evaluations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SolverReport {
    pub solver: FixedPointSolver,
    pub name: String,
    pub examples: usize,
    /// `[k]`: exact accuracy of the answer decoded from evaluation k + 1.
    pub exact_per_eval: Vec<f64>,
    /// The tolerance on `‖f(z) − z‖ / ‖f(z)‖` that counts as settled.
    pub tolerance: f64,
    /// Share of puzzles whose residual fell below the tolerance within the budget.
    pub settled: f64,
    /// Mean evaluations until the residual first fell below the tolerance, over the settled puzzles.
    pub mean_evals_to_settle: f64,
    /// Mean residual after the last evaluation.
    pub final_residual: f64,
}

/// Runs every solver of `solvers` on each batch of a dataset split for `evals` evaluations of the model's step
/// from its initial state, recording the answer of every evaluation and when each puzzle's residual settled.
#[allow(clippy::too_many_arguments)] // the split, the solvers, the budget and the batch shape
pub fn evaluate_solvers<B: Backend, M: crate::model::RecursiveModel<B>>(
    model: &M,
    ds: &reckon_data::PuzzleDataset,
    solvers: &[FixedPointSolver],
    evals: usize,
    tolerance: f64,
    batch_size: usize,
    max_examples: Option<usize>,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Vec<SolverReport> {
    use burn::tensor::Int;
    let dims = model.dims();
    let total = max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let mut exact = vec![vec![0usize; evals]; solvers.len()];
    let (mut settled, mut settle_evals, mut residual_sum) =
        (vec![0usize; solvers.len()], vec![0usize; solvers.len()], vec![0f64; solvers.len()]);
    let mut seen = 0;
    for batch in reckon_data::eval_batches(ds, batch_size) {
        if seen >= total {
            break;
        }
        let rows = batch.real_rows.min(total - seen);
        let seq = batch.seq_len;
        let tokens =
            Tensor::<B, 2, Int>::from_data(TensorData::new(batch.inputs.clone(), [batch.batch_size, seq]), device);
        let ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(batch.puzzle_identifiers.clone(), [batch.batch_size]),
            device,
        );
        let x = model.embed(tokens, model.puzzle_rows(ids));
        let (z0, h, l) = flatten(&model.initial_latent(&x));
        for (s, &solver) in solvers.iter().enumerate() {
            let mut first_settled: Vec<Option<usize>> = vec![None; rows];
            let mut eval = 0;
            let mut last_residual = vec![0f32; rows];
            solve(solver, z0.clone(), evals, |z| {
                let (next, heads) = model.step(unflatten(z.clone(), h, l), x.clone());
                let (fz, _, _) = flatten(&next);
                let residual = relative_rows(z, fz.clone());
                let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
                let preds = crate::eval::argmax_tokens(&logits, dims.vocab_size);
                let scores = crate::eval::score_rows(&preds, &batch.labels, rows, seq);
                exact[s][eval] += scores.iter().filter(|r| r.exact).count();
                for r in 0..rows {
                    if first_settled[r].is_none() && (residual[r] as f64) < tolerance {
                        first_settled[r] = Some(eval + 1);
                    }
                }
                last_residual.copy_from_slice(&residual[..rows]);
                eval += 1;
                fz
            });
            settled[s] += first_settled.iter().flatten().count();
            settle_evals[s] += first_settled.iter().flatten().sum::<usize>();
            residual_sum[s] += last_residual.iter().map(|&r| r as f64).sum::<f64>();
        }
        seen += rows;
        progress(seen, total);
    }
    let n = seen.max(1) as f64;
    solvers
        .iter()
        .enumerate()
        .map(|(s, &solver)| SolverReport {
            solver,
            name: solver.name(),
            examples: seen,
            exact_per_eval: exact[s].iter().map(|&c| c as f64 / n).collect(),
            tolerance,
            settled: settled[s] as f64 / n,
            mean_evals_to_settle: settle_evals[s] as f64 / settled[s].max(1) as f64,
            final_residual: residual_sum[s] / n,
        })
        .collect()
}

/// A Markdown table of solver reports: exact accuracy after each evaluation budget in `budgets`, then how many
/// puzzles settled and after how many evaluations.
pub fn solver_table(reports: &[SolverReport], budgets: &[usize]) -> String {
    let mut out = format!(
        "| solver |{} settled | evals to settle | final residual |\n|---|{}---|---|---|\n",
        budgets.iter().map(|b| format!(" exact @{b} |")).collect::<String>(),
        "---|".repeat(budgets.len())
    );
    for r in reports {
        let cells: String = budgets
            .iter()
            .map(|&b| format!(" {:.1} |", 100.0 * r.exact_per_eval.get(b - 1).copied().unwrap_or(f64::NAN)))
            .collect();
        out.push_str(&format!(
            "| {} |{cells} {:.1}% | {:.1} | {:.1e} |\n",
            r.name,
            100.0 * r.settled,
            r.mean_evals_to_settle,
            r.final_residual
        ));
    }
    out
}
