//! Times the Maze-Hard generator and prints what it accepted.
//!
//! `cargo run -p reckon-data --release --example maze_gen_bench -- [WIDTH HEIGHT TRAIN TEST [BOOST [MIN_DISTANCE [SEED]]]]`
//! (default: 30 30 1000 1000, the default boost and minimum distance, seed 0).
//!
//! Measured on the 2-core development machine while another job held about one core: the
//! default Maze-Hard run (1000 + 1000 at 30×30, d ≥ 111, boost 4) took 188 s for 39.6 M attempts
//! (4.7 µs each, 5.05×10⁻⁵ accepted per attempt, 25 of 2000 clamped).

use reckon_data::maze::{generate, MazeGenConfig, MazeStats};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map(|a| a.parse()).transpose()?.unwrap_or(default))
    };
    let (w, h) = (num(0, 30)?, num(1, 30)?);
    let mut cfg = MazeGenConfig::new(w, h, num(2, 1000)?, num(3, 1000)?);
    if let Some(boost) = args.get(4) {
        cfg.boost = boost.parse()?;
    }
    cfg.min_distance = num(5, cfg.min_distance)?;
    let seed = num(6, 0)? as u64;
    println!(
        "{}x{}: {} + {} mazes, d >= {}, walls {}..={}, boost {}, seed {seed}, {} threads",
        w,
        h,
        cfg.train,
        cfg.test,
        cfg.min_distance,
        cfg.walls.0,
        cfg.walls.1,
        cfg.boost,
        rayon::current_num_threads()
    );
    let started = Instant::now();
    let out = generate(&cfg, seed, &|_, _, _| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let all: Vec<_> = out.train.iter().chain(&out.test).collect();
    println!(
        "{seconds:.2} s; {} attempts ({:.2e} accepted per attempt, {:.1} us per attempt); {} duplicate layouts; {} clamped",
        out.summary.attempts,
        all.len() as f64 / out.summary.attempts as f64,
        1e6 * seconds / out.summary.attempts as f64,
        out.summary.duplicate_layouts,
        out.summary.clamped
    );
    let mut far: Vec<usize> = all.iter().map(|m| m.far_cells).collect();
    far.sort_unstable();
    if !far.is_empty() {
        let q = |p: f64| far[((far.len() - 1) as f64 * p) as usize];
        println!("far cells k of accepted starts: median {}, p90 {}, p99 {}, max {}", q(0.5), q(0.9), q(0.99), q(1.0));
    }
    let maze = cfg.maze();
    println!("{}", MazeStats::from_questions(&maze, all.iter().map(|m| &m.question[..])));
    Ok(())
}
