//! The Maze task end to end: verifier, dihedral transforms, BFS tie-break, CSV errors, generator
//! and builder (small mazes, so the whole file runs in well under a second in release).

use reckon_data::dataset::PuzzleDataset;
use reckon_data::maze::{
    build, generate, read_csv, read_csv_square, write_csv, Dihedral, Maze, MazeBuildConfig, MazeCsvRow, MazeGenConfig,
    MazeSource, MazeStats, PathError, CSV_HEADER, DIHEDRAL_INVERSE, GOAL, OPEN, PATH, START, WALL,
};
use reckon_data::task::Task;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn quiet(_: &str, _: u64, _: u64) {}

fn grid(maze: &Maze, rows: &[&str]) -> Vec<u8> {
    maze.parse_cells(&rows.concat()).unwrap()
}

fn text(maze: &Maze, tokens: &[u8]) -> String {
    maze.render_grid(tokens)
}

// ---------------------------------------------------------------- verifier

/// Every shortest S→G path, as cell lists: steps that go one further from S and one closer to G.
fn all_shortest_paths(maze: &Maze, question: &[u8]) -> Vec<Vec<usize>> {
    let (start, goal) = maze.endpoints(question).unwrap();
    let (from_s, from_g) = (maze.bfs(question, start), maze.bfs(question, goal));
    let total = from_s.distance(goal).unwrap();
    let mut paths = Vec::new();
    let mut stack = vec![vec![start]];
    while let Some(path) = stack.pop() {
        let cell = *path.last().unwrap();
        if cell == goal {
            paths.push(path);
            continue;
        }
        let d = from_s.distance(cell).unwrap();
        for next in maze.neighbours(cell).into_iter().flatten() {
            if from_s.distance(next) == Some(d + 1) && from_g.distance(next) == Some(total - d - 1) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push(longer);
            }
        }
    }
    paths
}

fn mark(question: &[u8], path: &[usize]) -> Vec<u8> {
    let mut answer = question.to_vec();
    for &c in &path[1..path.len() - 1] {
        answer[c] = PATH;
    }
    answer
}

#[test]
fn verifier_accepts_every_shortest_path_of_an_open_grid() {
    let maze = Maze::new(5, 5);
    let q = grid(&maze, &["S    ", "     ", "     ", "     ", "    G"]);
    let paths = all_shortest_paths(&maze, &q);
    assert_eq!(paths.len(), 70, "C(8,4) monotone paths corner to corner");
    let answers: HashSet<Vec<u8>> = paths.iter().map(|p| mark(&q, p)).collect();
    assert_eq!(answers.len(), 70);
    for a in &answers {
        assert_eq!(maze.check_path(&q, a), Ok(8), "{}", text(&maze, a));
        assert!(maze.verify(&q, a));
    }
    assert!(answers.contains(&maze.solve(&q).unwrap()));
}

#[test]
fn verifier_accepts_every_shortest_path_around_walls() {
    let maze = Maze::new(6, 5);
    let q = grid(&maze, &["S  #  ", " # #  ", " #   #", "   #  ", "#    G"]);
    let paths = all_shortest_paths(&maze, &q);
    assert!(paths.len() > 2, "the maze should have several shortest paths");
    for p in &paths {
        let a = mark(&q, p);
        assert_eq!(maze.check_path(&q, &a), Ok(p.len() - 1), "{}", text(&maze, &a));
    }
}

#[test]
fn verifier_rejects_broken_branching_looping_wall_crossing_long_and_edited_answers() {
    // A snake with a unique shortest path of 12 moves.
    let maze = Maze::new(5, 5);
    let q = grid(&maze, &["S    ", "#### ", "     ", " ####", "G    "]);
    let good = grid(&maze, &["Soooo", "####o", "ooooo", "o####", "G    "]);
    assert_eq!(maze.check_path(&q, &good), Ok(12));
    assert_eq!(maze.solve(&q).unwrap(), good);

    // Broken: one path cell missing.
    let broken = grid(&maze, &["Sooo ", "####o", "ooooo", "o####", "G    "]);
    assert_eq!(maze.check_path(&q, &broken), Err(PathError::DeadEnd { cell: 3, neighbours: 1 }));

    // Through a wall: shorter, but a wall cell changed.
    let through_wall = grid(&maze, &["S    ", "o### ", "o    ", "o####", "G    "]);
    assert_eq!(maze.check_path(&q, &through_wall), Err(PathError::ChangedCell { cell: 5, expected: '#', found: 'o' }));

    // A wall removed, the start moved, a PAD token.
    let mut edited = good.clone();
    edited[6] = OPEN;
    assert_eq!(maze.check_path(&q, &edited), Err(PathError::ChangedCell { cell: 6, expected: '#', found: ' ' }));
    let mut moved = good.clone();
    moved.swap(0, 1);
    assert!(matches!(maze.check_path(&q, &moved), Err(PathError::ChangedCell { cell: 0, .. })));
    let mut padded = good.clone();
    padded[20] = 0;
    assert_eq!(maze.check_path(&q, &padded), Err(PathError::ChangedCell { cell: 20, expected: 'G', found: '_' }));
    let score = maze.score(&q, &good, &broken);
    assert!(!score.exact && !score.valid_optimal);

    // On an open grid: a branch off a shortest path, and a path with a loop in it.
    let open = grid(&maze, &["S    ", "     ", "     ", "     ", "    G"]);
    let shortest = grid(&maze, &["Soooo", "    o", "    o", "    o", "    G"]);
    assert_eq!(maze.check_path(&open, &shortest), Ok(8));
    let branch = grid(&maze, &["Soooo", " o  o", "    o", "    o", "    G"]);
    assert_eq!(maze.check_path(&open, &branch), Err(PathError::Branch { cell: 1, neighbours: 3 }));
    let lasso = grid(&maze, &["Soooo", "   oo", "    o", "    o", "    G"]);
    assert!(matches!(maze.check_path(&open, &lasso), Err(PathError::Branch { cell: 3, .. })));

    // A detached loop of path cells (each with two path neighbours) away from a valid path.
    let mut looped = shortest.clone();
    for cell in [11, 12, 16, 17] {
        looped[cell] = PATH;
    }
    assert_eq!(maze.check_path(&open, &looped), Err(PathError::Stray { cells: 4 }));

    // Valid and simple, but 4 moves longer than the shortest.
    let wide = Maze::new(5, 3);
    let q5 = grid(&wide, &["S   G", "     ", "     "]);
    let detour = grid(&wide, &["S   G", "o   o", "ooooo"]);
    assert_eq!(wide.check_path(&q5, &detour), Err(PathError::NotShortest { length: 8, shortest: 4 }));
    assert!(!wide.verify(&q5, &detour));
}

// ---------------------------------------------------------------- dihedral transforms

#[test]
fn dihedral_transforms_form_a_group_and_invert_by_the_table() {
    for side in [3usize, 4, 5] {
        let g: Vec<u32> = (0..(side * side) as u32).collect();
        let images: Vec<Vec<u32>> = Dihedral::ALL.iter().map(|t| t.apply(&g, side, side)).collect();
        let distinct: HashSet<&Vec<u32>> = images.iter().collect();
        assert_eq!(distinct.len(), 8, "the 8 transforms differ on a {side}x{side} grid");
        for a in Dihedral::ALL {
            for b in Dihedral::ALL {
                let composed = b.apply(&a.apply(&g, side, side), side, side);
                assert!(images.contains(&composed), "tid {} then {} is not one of the 8", a.tid(), b.tid());
            }
            assert_eq!(a.inverse().tid(), DIHEDRAL_INVERSE[a.tid() as usize]);
            assert_eq!(a.inverse().apply(&a.apply(&g, side, side), side, side), g);
            assert_eq!(a.apply(&a.inverse().apply(&g, side, side), side, side), g);
        }
        let r1 = Dihedral::new(1).unwrap();
        assert_eq!(r1.apply(&r1.apply(&g, side, side), side, side), images[2], "rot90 twice = rot180");
    }
}

#[test]
fn dihedral_matches_numpy_by_hand() {
    // [[a,b,c],[d,e,f],[g,h,i]]
    let g: Vec<char> = "abcdefghi".chars().collect();
    let t = |tid: u8| -> String { Dihedral::new(tid).unwrap().apply(&g, 3, 3).into_iter().collect() };
    assert_eq!(t(0), "abcdefghi");
    // np.rot90 (counter-clockwise): [[c,f,i],[b,e,h],[a,d,g]].
    assert_eq!(t(1), "cfibehadg");
    assert_eq!(t(2), "ihgfedcba");
    assert_eq!(t(3), "gdahebifc");
    assert_eq!(t(4), "cbafedihg");
    assert_eq!(t(5), "ghidefabc");
    assert_eq!(t(6), "adgbehcfi");
    // fliplr(rot90): the anti-diagonal reflection [[i,f,c],[h,e,b],[g,d,a]].
    assert_eq!(t(7), "ifchebgda");
}

#[test]
fn transformed_answers_stay_valid_shortest_paths() {
    let maze = Maze::new(6, 6);
    let q = grid(&maze, &["S  #  ", " # #  ", " #   #", "   #  ", "#     ", "  #  G"]);
    let a = maze.solve(&q).unwrap();
    for t in Dihedral::ALL {
        let (tq, ta) = (maze.apply(&t, &q), maze.apply(&t, &a));
        assert_eq!(maze.check_path(&tq, &ta), maze.check_path(&q, &a), "tid {}", t.tid());
        assert_eq!(maze.invert(&t, &ta), a);
    }
}

// ---------------------------------------------------------------- BFS tie-break

#[test]
fn bfs_tie_break_prefers_down_then_left_then_right_then_up() {
    let maze = Maze::new(3, 3);
    let solve = |rows: [&str; 3]| text(&maze, &maze.solve(&grid(&maze, &rows)).unwrap());
    // S top-left, G one step right and down: down-then-right (via the cell below S) wins.
    assert_eq!(solve(["S  ", " G ", "   "]), "S  \noG \n   ");
    // S top-middle, G bottom-left's neighbour: down-then-left beats left-then-down.
    assert_eq!(solve([" S ", "G  ", "   "]), " S \nGo \n   ");
    // Around a wall, S above and G below it: the route that starts left beats the one that starts right.
    assert_eq!(solve([" S ", " # ", " G "]), "oS \no# \noG ");
    // S in the centre, G top-left: left-then-up beats up-then-left.
    assert_eq!(solve(["G  ", " S ", "   "]), "G  \noS \n   ");
    // S in the centre, G top-right: right-then-up beats up-then-right.
    assert_eq!(solve(["  G", " S ", "   "]), "  G\n So\n   ");
    // Deterministic, and independent of anything but the question.
    let q = grid(&maze, &["S  ", "   ", "  G"]);
    assert_eq!(maze.solve(&q), maze.solve(&q));
    assert_eq!(text(&maze, &maze.solve(&q).unwrap()), "S  \no  \nooG");
}

// ---------------------------------------------------------------- CSV

fn open_row(maze: &Maze) -> (String, String) {
    let mut q = vec![OPEN; maze.cells()];
    q[0] = START;
    q[maze.cells() - 1] = GOAL;
    q[maze.width + 1] = WALL;
    let a = maze.solve(&q).unwrap();
    (maze.to_text(&q), maze.to_text(&a))
}

fn csv_error(body: &str) -> String {
    let maze = Maze::HARD;
    let (q, a) = open_row(&maze);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, format!("{CSV_HEADER}\nok,{q},{a},58\n{body}\n")).unwrap();
    format!("{:#}", read_csv(&path, &maze).unwrap_err())
}

#[test]
fn csv_round_trip_keeps_spaces_and_accepts_quotes() {
    let maze = Maze::HARD;
    let (q, a) = open_row(&maze);
    assert!(q.ends_with(" G") && q.starts_with("S "));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.csv");
    let body = format!("{CSV_HEADER}\r\nsrc,{q},{a},58\r\n\"s2\",\"{q}\",\"{a}\",\"58\"\r\n\r\n");
    std::fs::write(&path, body).unwrap();
    let rows = read_csv(&path, &maze).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].source.as_str(), rows[1].source.as_str()), ("src", "s2"));
    assert_eq!((&rows[0].question, &rows[0].answer), (&rows[1].question, &rows[1].answer));
    assert_eq!(maze.to_text(&rows[1].question), q);
    assert_eq!(maze.to_text(&rows[1].answer), a);
    assert_eq!(rows[1].rating, "58");
    assert_eq!(read_csv_square(&path).unwrap(), (maze, rows.clone()));
    let out = dir.path().join("b.csv");
    write_csv(&out, &maze, &rows).unwrap();
    assert_eq!(read_csv(&out, &maze).unwrap(), rows);
    assert!(std::fs::read_to_string(&out).unwrap().starts_with(&format!("{CSV_HEADER}\nsrc,S ")));
    let mut bad = rows[0].clone();
    bad.source = "a,b".into();
    assert!(write_csv(&out, &maze, &[bad]).unwrap_err().to_string().contains("contains a comma"));
    assert_eq!(read_csv(&out, &maze).unwrap(), rows, "a failed write leaves the file alone");
}

#[test]
fn csv_malformed_rows_name_file_line_and_problem() {
    let (q, a) = open_row(&Maze::HARD);
    let err = csv_error(&format!("x,{},{a},58", &q[1..]));
    assert!(err.contains("bad.csv:3: question has 899 cells, expected 900 (30x30)"), "{err}");
    let err = csv_error(&format!("x,{q},{}x,58", &a[..899]));
    assert!(err.contains("bad.csv:3: answer cell 899 (row 30, column 30) is 'x'"), "{err}");
    let err = csv_error(&format!("x,{}.{},{a},58", &q[..40], &q[41..]));
    assert!(err.contains("bad.csv:3: question cell 40 (row 2, column 11) is '.', expected one of \"# SGo\""), "{err}");
    let two_s = format!("{}S{}", &q[..5], &q[6..]);
    let err = csv_error(&format!("x,{two_s},{a},58"));
    assert!(err.contains("bad.csv:3: question has 2 cells start 'S' (cell 0 (row 1, column 1), cell 5"), "{err}");
    let no_g = format!("{} ", &q[..899]);
    let err = csv_error(&format!("x,{no_g},{a},58"));
    assert!(err.contains("bad.csv:3: question has no goal 'G'"), "{err}");
    // The answer may only turn open cells into path cells...
    let c = a.find(' ').unwrap();
    let moved_wall = format!("{}#{}", &a[..c], &a[c + 1..]);
    let err = csv_error(&format!("x,{q},{moved_wall},58"));
    let expected = format!(
        "bad.csv:3: answer cell {c} (row {}, column {}) is '#' but the question has ' '",
        c / 30 + 1,
        c % 30 + 1
    );
    assert!(err.contains(&expected), "{err}");
    // ...and must be a valid shortest path.
    let err = csv_error(&format!("x,{q},{q},58"));
    assert!(err.contains("bad.csv:3: answer is not a valid shortest path: the start at cell 0 has 0"), "{err}");
    let err = csv_error(&format!("x,{q},{a}"));
    assert!(err.contains("bad.csv:3: expected 4 comma-separated fields"), "{err}");
}

#[test]
fn csv_header_and_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (q, a) = open_row(&Maze::HARD);
    let path = dir.path().join("h.csv");
    std::fs::write(&path, format!("question,answer\nx,{q},{a},1\n")).unwrap();
    let err = format!("{:#}", read_csv(&path, &Maze::HARD).unwrap_err());
    assert!(err.contains("h.csv:1: header"), "{err}");
    std::fs::write(&path, "").unwrap();
    assert!(format!("{:#}", read_csv(&path, &Maze::HARD).unwrap_err()).contains("h.csv: empty file"));
    std::fs::write(&path, format!("{CSV_HEADER}\nx,{},{},1\n", &q[1..], &a[1..])).unwrap();
    let err = format!("{:#}", read_csv_square(&path).unwrap_err());
    assert!(err.contains("h.csv:2: question has 899 cells, not a square grid"), "{err}");
}

// ---------------------------------------------------------------- generator

fn small_gen(train: usize, test: usize) -> MazeGenConfig {
    let mut cfg = MazeGenConfig::new(8, 8, train, test);
    cfg.min_distance = 18;
    cfg
}

fn walls(q: &[u8]) -> usize {
    q.iter().filter(|&&t| t == WALL).count()
}

#[test]
fn generator_is_seeded_disjoint_and_filtered() {
    let cfg = small_gen(30, 20);
    let maze = cfg.maze();
    let out = generate(&cfg, 5, &quiet).unwrap();
    assert_eq!((out.train.len(), out.test.len()), (30, 20));
    assert_eq!(generate(&cfg, 5, &quiet).unwrap(), out, "same seed, same mazes");
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(single.install(|| generate(&cfg, 5, &quiet).unwrap()), out, "thread count does not matter");
    assert_ne!(generate(&cfg, 6, &quiet).unwrap().train, out.train);
    let layout = |q: &[u8]| q.iter().map(|&t| t == WALL).collect::<Vec<bool>>();
    let train: HashSet<Vec<bool>> = out.train.iter().map(|m| layout(&m.question)).collect();
    let test: HashSet<Vec<bool>> = out.test.iter().map(|m| layout(&m.question)).collect();
    assert_eq!((train.len(), test.len()), (30, 20), "layouts are distinct");
    assert!(train.is_disjoint(&test));
    let mut attempts = HashSet::new();
    for m in out.train.iter().chain(&out.test) {
        let (s, g) = maze.endpoints(&m.question).unwrap();
        assert_ne!(s, g);
        assert!(m.distance >= cfg.min_distance);
        assert_eq!(maze.shortest_distance(&m.question), Ok(Some(m.distance)));
        assert!((cfg.walls.0..=cfg.walls.1).contains(&walls(&m.question)));
        assert_eq!(m.walls, walls(&m.question));
        assert_eq!(maze.solve(&m.question).unwrap(), m.answer);
        assert!(maze.verify(&m.question, &m.answer));
        assert!(attempts.insert(m.attempt));
        assert_eq!(reckon_data::maze::generate_attempt(&cfg, 5, m.attempt).as_ref(), Some(m));
    }
    assert!(out.summary.attempts > 50);
    // The train split is a prefix of what a larger request generates: the split is by order.
    let more = generate(&small_gen(30, 25), 5, &quiet).unwrap();
    assert_eq!(more.train, out.train);
    assert_eq!(more.test[..20], out.test[..]);
}

#[test]
fn generator_draws_wall_counts_and_endpoints_widely() {
    let mut cfg = MazeGenConfig::new(6, 6, 200, 0);
    cfg.min_distance = 4;
    let out = generate(&cfg, 1, &quiet).unwrap();
    let counts: HashSet<usize> = out.train.iter().map(|m| m.walls).collect();
    assert_eq!(cfg.walls, (9, 15));
    assert!(counts.len() >= 6 && counts.iter().all(|w| (9..=15).contains(w)), "{counts:?}");
    let starts: HashSet<usize> = out.train.iter().map(|m| cfg.maze().endpoints(&m.question).unwrap().0).collect();
    assert!(starts.len() > 25, "starts should cover most cells: {}", starts.len());
}

// ---------------------------------------------------------------- builder

fn gen_config(aug: bool) -> MazeBuildConfig {
    MazeBuildConfig { source: MazeSource::Generate(small_gen(12, 5)), subsample: None, aug, seed: 3, force: false }
}

#[test]
fn builder_round_trip_without_augmentation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maze");
    let calls = std::cell::RefCell::new(Vec::new());
    let record = |stage: &str, done: u64, total: u64| calls.borrow_mut().push((stage.to_string(), done, total));
    let report = build(&gen_config(false), &out, &record).unwrap();
    let calls = calls.into_inner();
    assert!(calls.contains(&("generate".to_string(), 17, 17)), "{calls:?}");
    assert_eq!(calls.last(), Some(&("write".to_string(), 1, 1)));
    assert!(calls.iter().all(|(_, done, total)| done <= total));
    assert_eq!((report.train_puzzles, report.train_examples, report.test_examples), (12, 12, 5));
    assert_eq!((report.tie_break_answers, report.rows), (17, 17));
    assert_eq!(report.train_stats.count, 12);
    assert!(report.train_stats.distance.min >= 18.0);
    assert!(report.to_string().contains("12 train mazes (12 examples), 5 test mazes, 8x8"), "{report}");
    let maze = Maze::new(8, 8);
    let train = PuzzleDataset::load(&out.join("train")).unwrap();
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    for (set, n) in [(&train, 12), (&test, 5)] {
        assert_eq!((set.meta.vocab_size, set.meta.seq_len, set.meta.pad_id), (6, 64, 0));
        assert_eq!(set.meta.ignore_label_id, Some(0));
        assert_eq!((set.num_examples(), set.num_puzzles(), set.num_groups()), (n, n, n));
        assert_eq!(set.meta.num_puzzle_identifiers, 1);
        assert!(set.puzzle_identifiers.iter().all(|&id| id == 0));
    }
    let rows = read_csv(&out.join("train.csv"), &maze).unwrap();
    assert_eq!(rows.len(), 12);
    for (e, row) in rows.iter().enumerate() {
        let (inputs, labels) = train.example(e);
        assert_eq!((inputs, labels), (&row.question[..], &row.answer[..]));
        assert_eq!(row.source, "reckon-gen");
        assert_eq!(row.rating, maze.shortest_distance(inputs).unwrap().unwrap().to_string());
    }
    assert_eq!(read_csv(&out.join("test.csv"), &maze).unwrap().len(), 5);
    assert_eq!(std::fs::read_to_string(out.join("identifiers.json")).unwrap(), r#"["<blank>"]"#);
    let train_layouts: HashSet<Vec<u8>> =
        rows.iter().map(|r| r.question.iter().map(|&t| (t == WALL) as u8).collect()).collect();
    for e in 0..test.num_examples() {
        let layout: Vec<u8> = test.example(e).0.iter().map(|&t| (t == WALL) as u8).collect();
        assert!(!train_layouts.contains(&layout));
    }

    // An existing non-empty output is refused unless forced.
    let err = build(&gen_config(false), &out, &quiet).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    let forced = MazeBuildConfig { force: true, seed: 4, ..gen_config(false) };
    build(&forced, &out, &quiet).unwrap();
    assert_ne!(PuzzleDataset::load(&out.join("train")).unwrap().inputs, train.inputs);
}

#[test]
fn builder_augments_train_only_with_the_8_transforms_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maze");
    let report = build(&gen_config(true), &out, &quiet).unwrap();
    assert_eq!((report.train_puzzles, report.train_examples, report.test_examples), (12, 96, 5));
    let maze = Maze::new(8, 8);
    let train = PuzzleDataset::load(&out.join("train")).unwrap();
    assert_eq!((train.num_groups(), train.num_puzzles(), train.num_examples()), (12, 96, 96));
    assert_eq!(train.meta.mean_puzzle_examples, 1.0);
    let rows = read_csv(&out.join("train.csv"), &maze).unwrap();
    assert_eq!(rows.len(), 12, "the CSV keeps the originals");
    for (g, row) in rows.iter().enumerate() {
        let puzzles = train.group_puzzles(g);
        assert_eq!(puzzles.len(), 8);
        for (tid, p) in puzzles.enumerate() {
            let examples = train.puzzle_examples(p);
            assert_eq!(examples.len(), 1);
            let (inputs, labels) = train.example(examples.start);
            let t = Dihedral::new(tid as u8).unwrap();
            assert_eq!(inputs, &maze.apply(&t, &row.question)[..]);
            assert_eq!(labels, &maze.apply(&t, &row.answer)[..]);
            assert!(maze.verify(inputs, labels));
        }
    }
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    assert_eq!((test.num_groups(), test.num_puzzles()), (5, 5), "test is never augmented");
}

fn write_rows(dir: &Path, name: &str, maze: &Maze, rows: &[MazeCsvRow]) -> PathBuf {
    let path = dir.join(name);
    write_csv(&path, maze, rows).unwrap();
    path
}

#[test]
fn builder_reads_official_csvs_and_subsamples() {
    let dir = tempfile::tempdir().unwrap();
    let gen = generate(&small_gen(10, 4), 9, &quiet).unwrap();
    let maze = Maze::new(8, 8);
    let to_rows = |ms: &[reckon_data::maze::GeneratedMaze]| -> Vec<MazeCsvRow> {
        ms.iter()
            .map(|m| MazeCsvRow {
                source: "official".into(),
                question: m.question.clone(),
                answer: m.answer.clone(),
                rating: "0".into(),
            })
            .collect()
    };
    let train = write_rows(dir.path(), "train.csv", &maze, &to_rows(&gen.train));
    let test = write_rows(dir.path(), "test.csv", &maze, &to_rows(&gen.test));
    let cfg = MazeBuildConfig {
        source: MazeSource::OfficialCsv { train, test },
        subsample: Some(6),
        aug: false,
        seed: 1,
        force: false,
    };
    let out = dir.path().join("built");
    let report = build(&cfg, &out, &quiet).unwrap();
    assert_eq!((report.maze, report.train_puzzles, report.test_examples), (maze, 6, 4));
    assert!(report.generation.is_none());
    let kept = read_csv(&out.join("train.csv"), &maze).unwrap();
    let originals = to_rows(&gen.train);
    // A seeded subset, in the original order.
    let positions: Vec<usize> = kept.iter().map(|r| originals.iter().position(|o| o == r).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let again = dir.path().join("again");
    build(&cfg, &again, &quiet).unwrap();
    assert_eq!(read_csv(&again.join("train.csv"), &maze).unwrap(), kept);
}

#[test]
fn builder_refuses_augmenting_non_square_mazes() {
    let dir = tempfile::tempdir().unwrap();
    let mut gen = MazeGenConfig::new(8, 6, 3, 1);
    gen.min_distance = 10;
    let cfg = MazeBuildConfig { source: MazeSource::Generate(gen), ..gen_config(true) };
    let err = build(&cfg, &dir.path().join("m"), &quiet).unwrap_err().to_string();
    assert!(err.contains("aug needs square mazes") && err.contains("8x6"), "{err}");
    assert!(!dir.path().join("m").exists(), "nothing is written on error");
}

#[test]
fn stats_summarise_a_set() {
    let out = generate(&small_gen(40, 0), 2, &quiet).unwrap();
    let maze = Maze::new(8, 8);
    let stats = MazeStats::from_questions(&maze, out.train.iter().map(|m| &m.question[..]));
    assert_eq!((stats.count, stats.unsolvable), (40, 0));
    assert!(stats.distance.min >= 18.0);
    assert_eq!(stats.histogram.iter().map(|b| b.count).sum::<usize>(), 40);
    let mean_walls = out.train.iter().map(|m| m.walls as f64).sum::<f64>() / 40.0 / 64.0;
    assert!((stats.wall_density.mean - mean_walls).abs() < 1e-12);
    let shown = stats.to_string();
    assert!(shown.starts_with("40 mazes 8x8: walls "), "{shown}");
    assert_eq!(shown.lines().count(), 1 + stats.histogram.len());
}
