//! Fixed-point solvers for the recursion. A family's step is a map of its state, `z ← f(z, x)` (TRM and HRM: one
//! supervision step of `(z_H, z_L)`; RSM and DEQ: one outer step): plain iteration applies it; Anderson
//! acceleration and Broyden's method look for `z* = f(z*)` in fewer applications by using the past ones. Test-time
//! inference uses them on any family (`crate::infer::fixed_point`); the DEQ family solves its forward pass and its
//! implicit backward (a linear fixed point) with them.
//!
//! The solvers see a batch's state as one matrix `[B, n]` (both states of a row flattened) and treat every row as
//! its own problem (their coefficients are per row); `f` is a closure, so the caller records whatever it wants of
//! each evaluation (the answer decoded from its heads, for an accuracy-per-evaluation curve).
//!
//! - [`FixedPointSolver::Anderson`] (type II, Walker & Ni 2011): with the last `m` iterates `x_i` and their
//!   images `f_i`, `α = argmin ‖Σ α_i (f_i − x_i)‖` subject to `Σ α_i = 1` (a regularised `m × m` solve per row),
//!   then `x ← β Σ α_i f_i + (1 − β) Σ α_i x_i`.
//! - [`FixedPointSolver::Broyden`] ("good" Broyden on `g(z) = f(z) − z`, limited memory as in the DEQ code):
//!   `z ← z − H g` with `H ≈ J_g⁻¹`, starting from `−I` (so the first step is plain iteration) and corrected by a
//!   rank-one update per step, `H ← H + (Δz − H Δg) (Hᵀ Δz)ᵀ / (Δzᵀ H Δg)`.

use anyhow::{ensure, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use super::Latent;

/// How the fixed point of a step is sought.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "solver", rename_all = "snake_case")]
pub enum FixedPointSolver {
    /// `z ← f(z)`: the recursion as trained.
    Plain,
    /// Anderson acceleration with `memory` past iterates and damping `beta` (1: undamped).
    Anderson { memory: usize, beta: f64 },
    /// Broyden's method with `memory` rank-one updates kept.
    Broyden { memory: usize },
}

impl FixedPointSolver {
    /// Parses `plain`, `anderson[:m[:β]]` (default m 5, β 1) or `broyden[:m]` (default m 8).
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default();
        let mut number = |default: f64| -> Result<f64> {
            match parts.next() {
                None => Ok(default),
                Some(v) => v.parse::<f64>().map_err(|_| anyhow::anyhow!("solver {text:?}: {v:?} is not a number")),
            }
        };
        let solver = match name {
            "plain" => FixedPointSolver::Plain,
            "anderson" => FixedPointSolver::Anderson { memory: number(5.0)? as usize, beta: number(1.0)? },
            "broyden" => FixedPointSolver::Broyden { memory: number(8.0)? as usize },
            other => anyhow::bail!("unknown solver {other:?}: plain, anderson[:m[:beta]] or broyden[:m]"),
        };
        ensure!(parts.next().is_none(), "solver {text:?}: too many fields");
        match solver {
            FixedPointSolver::Anderson { memory, beta } => {
                ensure!(memory >= 1 && beta > 0.0 && beta <= 1.0, "anderson wants m >= 1 and 0 < beta <= 1")
            }
            FixedPointSolver::Broyden { memory } => ensure!(memory >= 1, "broyden wants m >= 1"),
            FixedPointSolver::Plain => {}
        }
        Ok(solver)
    }

    pub fn name(&self) -> String {
        match self {
            FixedPointSolver::Plain => "plain".into(),
            FixedPointSolver::Anderson { memory, beta } => format!("anderson (m {memory}, β {beta})"),
            FixedPointSolver::Broyden { memory } => format!("broyden (m {memory})"),
        }
    }
}

/// A latent as one `[B, n]` matrix (`z_H` then `z_L` of each row), and the shapes to undo it.
pub fn flatten<B: Backend>(latent: &Latent<B>) -> (Tensor<B, 2>, [usize; 3], [usize; 3]) {
    let (h, l) = (latent.z_h.dims(), latent.z_l.dims());
    let b = h[0];
    let z = Tensor::cat(
        vec![latent.z_h.clone().reshape([b, h[1] * h[2]]), latent.z_l.clone().reshape([b, l[1] * l[2]])],
        1,
    );
    (z, h, l)
}

/// The latent of a `[B, n]` matrix made by [`flatten`] (no row restarted).
pub fn unflatten<B: Backend>(z: Tensor<B, 2>, h: [usize; 3], l: [usize; 3]) -> Latent<B> {
    let b = h[0];
    let split = h[1] * h[2];
    let z_h = z.clone().slice([0..b, 0..split]).reshape(h);
    let z_l = z.slice([0..b, split..split + l[1] * l[2]]).reshape(l);
    Latent::new(z_h, z_l)
}

/// Per-row dot products of two `[B, n]` matrices, `[B, 1]`.
fn dot<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    (a * b).sum_dim(1)
}

/// Per row, the affine weights `α` (summing to 1) minimising `‖Σ α_i g_i‖` for the Gram matrices `gram`
/// (`[B][m][m]`, row-major), regularised by `1e-8 · trace` (the least-squares problem is often near singular).
fn anderson_weights(gram: &[f64], b: usize, m: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * m);
    for row in 0..b {
        let g = &gram[row * m * m..(row + 1) * m * m];
        let trace: f64 = (0..m).map(|i| g[i * m + i]).sum();
        let lambda = 1e-8 * trace.max(1e-30);
        // Solve (G + λI) y = 1 by Gaussian elimination with partial pivoting, then α = y / Σ y.
        let mut a: Vec<f64> = g.to_vec();
        let mut y = vec![1.0; m];
        for i in 0..m {
            a[i * m + i] += lambda;
        }
        for col in 0..m {
            let pivot =
                (col..m).max_by(|&p, &q| a[p * m + col].abs().total_cmp(&a[q * m + col].abs())).expect("m >= 1");
            if pivot != col {
                for k in 0..m {
                    a.swap(col * m + k, pivot * m + k);
                }
                y.swap(col, pivot);
            }
            let d = a[col * m + col];
            if d.abs() < 1e-300 {
                continue;
            }
            for r in col + 1..m {
                let factor = a[r * m + col] / d;
                for k in col..m {
                    a[r * m + k] -= factor * a[col * m + k];
                }
                y[r] -= factor * y[col];
            }
        }
        for col in (0..m).rev() {
            let d = a[col * m + col];
            let s: f64 = (col + 1..m).map(|k| a[col * m + k] * y[k]).sum();
            y[col] = if d.abs() < 1e-300 { 0.0 } else { (y[col] - s) / d };
        }
        let total: f64 = y.iter().sum();
        if total.abs() < 1e-300 || !total.is_finite() {
            // Degenerate: fall back to the newest iterate.
            out.extend((0..m).map(|i| if i + 1 == m { 1.0 } else { 0.0 }));
        } else {
            out.extend(y.iter().map(|v| (v / total) as f32));
        }
    }
    out
}

/// Seeks the fixed point of `f` from `z0` (`[B, n]`) with `solver`, spending exactly `evals` evaluations of `f`
/// (each one is a step of the model; the caller's closure records what it needs of it). Returns the last
/// iterate's image `f(z)`, the state the recursion would continue from.
pub fn solve<B: Backend>(
    solver: FixedPointSolver,
    z0: Tensor<B, 2>,
    evals: usize,
    f: impl FnMut(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    solve_until(solver, z0, evals, f, |_, _| false).0
}

/// [`solve`] with an early stop: after each evaluation `done(z, f(z))` is asked, and the solve ends at the first
/// `true` or after `max_evals` evaluations. Returns the last image and the evaluations spent.
pub fn solve_until<B: Backend>(
    solver: FixedPointSolver,
    z0: Tensor<B, 2>,
    max_evals: usize,
    mut f: impl FnMut(Tensor<B, 2>) -> Tensor<B, 2>,
    mut done: impl FnMut(&Tensor<B, 2>, &Tensor<B, 2>) -> bool,
) -> (Tensor<B, 2>, usize) {
    assert!(max_evals >= 1, "at least one evaluation");
    match solver {
        FixedPointSolver::Plain => {
            let mut z = z0;
            for it in 0..max_evals {
                let fz = f(z.clone());
                if it + 1 == max_evals || done(&z, &fz) {
                    return (fz, it + 1);
                }
                z = fz;
            }
            unreachable!("the loop returns at its last evaluation")
        }
        FixedPointSolver::Anderson { memory, beta } => anderson(z0, max_evals, memory, beta, f, done),
        FixedPointSolver::Broyden { memory } => broyden(z0, max_evals, memory, f, done),
    }
}

/// Per row of two `[B, n]` states: `‖new − old‖ / ‖new‖`, the relative residual of a step.
pub fn relative_rows<B: Backend>(old: Tensor<B, 2>, new: Tensor<B, 2>) -> Vec<f32> {
    let diff = (new.clone() - old).powi_scalar(2).sum_dim(1).sqrt();
    let norm = new.powi_scalar(2).sum_dim(1).sqrt();
    (diff / norm.clamp_min(1e-30)).into_data().convert::<f32>().to_vec().expect("f32")
}

fn anderson<B: Backend>(
    z0: Tensor<B, 2>,
    evals: usize,
    memory: usize,
    beta: f64,
    mut f: impl FnMut(Tensor<B, 2>) -> Tensor<B, 2>,
    mut done: impl FnMut(&Tensor<B, 2>, &Tensor<B, 2>) -> bool,
) -> (Tensor<B, 2>, usize) {
    let b = z0.dims()[0];
    let mut xs: Vec<Tensor<B, 2>> = Vec::new();
    let mut fs: Vec<Tensor<B, 2>> = Vec::new();
    let mut x = z0;
    for it in 0..evals {
        let fx = f(x.clone());
        if it + 1 == evals || done(&x, &fx) {
            // The last evaluation's image: the state the answer was read from.
            return (fx, it + 1);
        }
        xs.push(x);
        fs.push(fx);
        if xs.len() > memory {
            xs.remove(0);
            fs.remove(0);
        }
        let m = xs.len();
        let big_x = Tensor::stack::<3>(xs.clone(), 1);
        let big_f = Tensor::stack::<3>(fs.clone(), 1);
        let g = big_f.clone() - big_x.clone();
        let gram: Vec<f64> =
            g.clone().matmul(g.swap_dims(1, 2)).into_data().convert::<f64>().to_vec().expect("f64 gram");
        let alpha = anderson_weights(&gram, b, m);
        let alpha = Tensor::<B, 3>::from_data(TensorData::new(alpha, [b, m, 1]), &big_x.device());
        let mixed_f = (big_f * alpha.clone()).sum_dim(1).reshape([b as i32, -1]);
        let mixed_x = (big_x * alpha).sum_dim(1).reshape([b as i32, -1]);
        x = if beta == 1.0 { mixed_f } else { mixed_f.mul_scalar(beta) + mixed_x.mul_scalar(1.0 - beta) };
    }
    unreachable!("the loop returns at its last evaluation")
}

fn broyden<B: Backend>(
    z0: Tensor<B, 2>,
    evals: usize,
    memory: usize,
    mut f: impl FnMut(Tensor<B, 2>) -> Tensor<B, 2>,
    mut done: impl FnMut(&Tensor<B, 2>, &Tensor<B, 2>) -> bool,
) -> (Tensor<B, 2>, usize) {
    // H = −I + Σ u_i v_iᵀ; H y and Hᵀ y by the low-rank sums, per row.
    let apply = |us: &[(Tensor<B, 2>, Tensor<B, 2>)], y: Tensor<B, 2>, transpose: bool| {
        us.iter().fold(y.clone().neg(), |acc, (u, v)| {
            let (a, c) = if transpose { (v, u) } else { (u, v) };
            acc + a.clone() * dot(c.clone(), y.clone())
        })
    };
    let mut updates: Vec<(Tensor<B, 2>, Tensor<B, 2>)> = Vec::new();
    let mut x = z0;
    let fx = f(x.clone());
    if evals == 1 || done(&x, &fx) {
        return (fx, 1);
    }
    let mut g = fx.clone() - x.clone();
    for it in 1..evals {
        let dx = apply(&updates, g.clone(), false).neg();
        let x_new = x + dx.clone();
        let fx_new = f(x_new.clone());
        if it + 1 == evals || done(&x_new, &fx_new) {
            return (fx_new, it + 1);
        }
        let g_new = fx_new.clone() - x_new.clone();
        let dg = g_new.clone() - g;
        let h_dg = apply(&updates, dg, false);
        let denom = dot(dx.clone(), h_dg.clone());
        // A row whose denominator vanishes keeps its H (its update is zero).
        let degenerate = denom.clone().abs().lower_elem(1e-20);
        let denom = denom.mask_fill(degenerate.clone(), 1.0);
        let u = (dx.clone() - h_dg) / denom;
        let u = u.clone().mask_where(degenerate.clone().expand(u.dims()), u.zeros_like());
        let v = apply(&updates, dx, true);
        updates.push((u, v));
        if updates.len() > memory {
            updates.remove(0);
        }
        (x, g) = (x_new, g_new);
    }
    unreachable!("the loop returns at its last evaluation")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use rand::{Rng, SeedableRng};

    /// A contractive affine map, `z ↦ A z + c` with `A = 0.97 Q` for a random orthogonal `Q` (every eigenvalue
    /// of modulus 0.97: slow for plain iteration, whose error shrinks by 3% per step), applied to every row.
    struct Affine {
        a: Vec<f64>,
        c: Vec<f64>,
        n: usize,
    }

    impl Affine {
        fn new(n: usize, seed: u64) -> Self {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // Gram-Schmidt on random columns gives an orthogonal Q (column-major here, fine for a test map).
            let mut q: Vec<Vec<f64>> = Vec::new();
            while q.len() < n {
                let mut v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                for u in &q {
                    let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
                }
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm > 1e-6 {
                    q.push(v.iter().map(|x| x / norm).collect());
                }
            }
            let a = (0..n * n).map(|k| 0.97 * q[k % n][k / n]).collect();
            let c = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            Affine { a, c, n }
        }

        fn apply(&self, z: &[f64]) -> Vec<f64> {
            (0..self.n).map(|i| (0..self.n).map(|j| self.a[i * self.n + j] * z[j]).sum::<f64>() + self.c[i]).collect()
        }

        fn fixed_point(&self) -> Vec<f64> {
            (0..5000).fold(vec![0.0; self.n], |z, _| self.apply(&z))
        }

        fn map(&self, z: Tensor<Cpu, 2>) -> Tensor<Cpu, 2> {
            let [b, n] = z.dims();
            let v: Vec<f64> = z.into_data().convert::<f64>().to_vec().unwrap();
            let out: Vec<f32> = v.chunks(n).flat_map(|row| self.apply(row)).map(|x| x as f32).collect();
            Tensor::from_data(TensorData::new(out, [b, n]), &Default::default())
        }
    }

    fn error_after(solver: FixedPointSolver, map: &Affine, evals: usize) -> f64 {
        let z0 = Tensor::<Cpu, 2>::zeros([2, map.n], &Default::default());
        let mut count = 0;
        let z = solve(solver, z0, evals, |z| {
            count += 1;
            map.map(z)
        });
        assert_eq!(count, evals, "{solver:?} spent {count} evaluations");
        let star = map.fixed_point();
        let got: Vec<f32> = z.into_data().to_vec().unwrap();
        got.chunks(map.n)
            .map(|row| row.iter().zip(&star).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max))
            .fold(0.0, f64::max)
    }

    #[test]
    fn anderson_and_broyden_reach_the_fixed_point_in_fewer_evaluations_than_plain_iteration() {
        let map = Affine::new(8, 4);
        let plain = error_after(FixedPointSolver::Plain, &map, 20);
        let anderson = error_after(FixedPointSolver::Anderson { memory: 10, beta: 1.0 }, &map, 20);
        let broyden = error_after(FixedPointSolver::Broyden { memory: 30 }, &map, 20);
        eprintln!("error after 20 evaluations: plain {plain:e}, anderson {anderson:e}, broyden {broyden:e}");
        assert!(plain > 0.1, "the test map is slow for plain iteration: {plain:e}");
        assert!(anderson < 1e-3, "anderson {anderson:e} vs plain {plain:e}");
        assert!(broyden < 1e-3, "broyden {broyden:e} vs plain {plain:e}");
        // Damped Anderson still converges.
        assert!(error_after(FixedPointSolver::Anderson { memory: 5, beta: 0.5 }, &map, 40) < plain);
    }

    #[test]
    fn one_evaluation_is_one_plain_step_for_every_solver() {
        let map = Affine::new(5, 9);
        let z0 = Tensor::<Cpu, 2>::ones([1, 5], &Default::default());
        let once = map.map(z0.clone()).into_data().to_vec::<f32>().unwrap();
        for solver in [FixedPointSolver::Anderson { memory: 3, beta: 1.0 }, FixedPointSolver::Broyden { memory: 3 }] {
            let z = solve(solver, z0.clone(), 1, |z| map.map(z)).into_data().to_vec::<f32>().unwrap();
            assert_eq!(z, once, "{solver:?}");
        }
    }

    #[test]
    fn solvers_parse_with_defaults_and_refuse_nonsense() {
        assert_eq!(FixedPointSolver::parse("plain").unwrap(), FixedPointSolver::Plain);
        assert_eq!(FixedPointSolver::parse("anderson").unwrap(), FixedPointSolver::Anderson { memory: 5, beta: 1.0 });
        assert_eq!(
            FixedPointSolver::parse("anderson:3:0.5").unwrap(),
            FixedPointSolver::Anderson { memory: 3, beta: 0.5 }
        );
        assert_eq!(FixedPointSolver::parse("broyden:4").unwrap(), FixedPointSolver::Broyden { memory: 4 });
        assert!(FixedPointSolver::parse("newton").unwrap_err().to_string().contains("unknown solver"));
        assert!(FixedPointSolver::parse("anderson:0").is_err());
        assert!(FixedPointSolver::parse("anderson:2:1.5").is_err());
        assert!(FixedPointSolver::parse("broyden:x").unwrap_err().to_string().contains("not a number"));
    }

    #[test]
    fn flatten_and_unflatten_round_trip() {
        let dev = Default::default();
        let z_h = Tensor::<Cpu, 3>::from_data(
            TensorData::new((0..24).map(|i| i as f32).collect::<Vec<_>>(), [2, 3, 4]),
            &dev,
        );
        let z_l = z_h.clone().neg();
        let (flat, h, l) = flatten(&Latent::new(z_h.clone(), z_l.clone()));
        assert_eq!(flat.dims(), [2, 24]);
        let back = unflatten(flat, h, l);
        assert_eq!(back.z_h.into_data(), z_h.into_data());
        assert_eq!(back.z_l.into_data(), z_l.into_data());
    }
}
