//! Breadth-first search with the reference tie-break, and the reference answer built from it.
//!
//! Neighbours are visited down (+w), left (-1), right (+1), up (-w), and a cell's parent is the
//! first dequeued cell that reaches it. A third party reports that this reproduces the official
//! Maze-Hard answers exactly (spec §3.1). Distances count moves, so a path of `d` moves has
//! `d - 1` interior (`o`) cells.

use super::grid::{Maze, GOAL, OPEN, PATH, START, WALL};

/// Distance of a cell the search never reached.
pub const UNREACHED: u32 = u32::MAX;

/// A BFS tree from `start`: `dist[i]` in moves ([`UNREACHED`] if unreachable), `parent[i]` the cell
/// that reached `i` (the start is its own parent; unreached cells have [`UNREACHED`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfsTree {
    pub start: usize,
    pub dist: Vec<u32>,
    pub parent: Vec<u32>,
}

impl BfsTree {
    pub fn distance(&self, cell: usize) -> Option<usize> {
        self.dist.get(cell).filter(|&&d| d != UNREACHED).map(|&d| d as usize)
    }

    /// Cells from the start to `goal`, both included, following parents back from `goal`.
    pub fn path_to(&self, goal: usize) -> Option<Vec<usize>> {
        path_from_parents(&self.dist, &self.parent, goal)
    }
}

/// Cells from the search's start to `goal`, both included (None if `goal` was not reached).
pub(crate) fn path_from_parents(dist: &[u32], parent: &[u32], goal: usize) -> Option<Vec<usize>> {
    let len = *dist.get(goal).filter(|&&d| d != UNREACHED)? as usize;
    let mut path = vec![goal; len + 1];
    for k in (0..len).rev() {
        path[k] = parent[path[k + 1]] as usize;
    }
    Some(path)
}

/// Searches from `start` through cells where `passable` holds, filling `dist` and `parent`
/// (both `maze.cells()` long) and using `queue` as scratch. Allocation-free so that the
/// generator can run millions of searches with per-thread buffers.
pub(crate) fn bfs_into(
    maze: &Maze,
    passable: impl Fn(usize) -> bool,
    start: usize,
    dist: &mut [u32],
    parent: &mut [u32],
    queue: &mut Vec<u32>,
) {
    dist.fill(UNREACHED);
    parent.fill(UNREACHED);
    queue.clear();
    dist[start] = 0;
    parent[start] = start as u32;
    queue.push(start as u32);
    let mut head = 0;
    while head < queue.len() {
        let cell = queue[head] as usize;
        head += 1;
        for next in maze.neighbours(cell).into_iter().flatten() {
            if dist[next] == UNREACHED && passable(next) {
                dist[next] = dist[cell] + 1;
                parent[next] = cell as u32;
                queue.push(next as u32);
            }
        }
    }
}

/// The reference answer to a question and its shortest-path length in moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeSolution {
    pub answer: Vec<u8>,
    pub distance: usize,
}

impl Maze {
    /// BFS from `start` over every cell that is not a wall (nor PAD or an unknown token).
    pub fn bfs(&self, tokens: &[u8], start: usize) -> BfsTree {
        let n = self.cells();
        assert_eq!(tokens.len(), n, "a {}x{} maze has {n} cells", self.width, self.height);
        let (mut dist, mut parent, mut queue) = (vec![0; n], vec![0; n], Vec::with_capacity(n));
        let passable = |i: usize| (OPEN..=PATH).contains(&tokens[i]);
        bfs_into(self, passable, start, &mut dist, &mut parent, &mut queue);
        BfsTree { start, dist, parent }
    }

    /// Shortest S→G distance in moves of a question (`Err` if it is not a question, `Ok(None)`
    /// if G is unreachable).
    pub fn shortest_distance(&self, question: &[u8]) -> Result<Option<usize>, String> {
        let (start, goal) = self.endpoints(question)?;
        Ok(self.bfs(question, start).distance(goal))
    }

    /// The reference answer: the question with the tie-broken shortest path's interior cells set
    /// to `o` (S and G kept). Errors if `question` is not a question or G is unreachable.
    pub fn solution(&self, question: &[u8]) -> Result<MazeSolution, String> {
        let (start, goal) = self.endpoints(question)?;
        let tree = self.bfs(question, start);
        let path = tree.path_to(goal).ok_or_else(|| "the goal is unreachable from the start".to_string())?;
        Ok(MazeSolution { answer: answer_from_path(question, &path), distance: path.len() - 1 })
    }
}

/// `question` with the interior cells of `path` (start..=goal) marked as path.
pub(crate) fn answer_from_path(question: &[u8], path: &[usize]) -> Vec<u8> {
    let mut answer = question.to_vec();
    for &cell in path.iter().skip(1).take(path.len().saturating_sub(2)) {
        debug_assert!(answer[cell] != WALL && answer[cell] != START && answer[cell] != GOAL);
        answer[cell] = PATH;
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_count_moves_and_walls_block() {
        let m = Maze::new(3, 3);
        let q = m.parse_question("S# \n ##\n  G".replace('\n', "").as_str()).unwrap();
        let tree = m.bfs(&q, 0);
        assert_eq!(tree.distance(8), Some(4));
        assert_eq!(tree.distance(2), None, "the top-right cell is walled off");
        assert_eq!(tree.path_to(8).unwrap(), vec![0, 3, 6, 7, 8]);
        let s = m.solution(&q).unwrap();
        assert_eq!(s.distance, 4);
        assert_eq!(m.to_text(&s.answer), "S# o##ooG");
    }

    #[test]
    fn unreachable_goal_is_an_error() {
        let m = Maze::new(3, 1);
        let q = m.parse_question("S#G").unwrap();
        assert_eq!(m.shortest_distance(&q), Ok(None));
        assert!(m.solution(&q).unwrap_err().contains("unreachable"));
    }

    #[test]
    fn adjacent_start_and_goal_need_no_path_cells() {
        let m = Maze::new(2, 1);
        let q = m.parse_question("SG").unwrap();
        let s = m.solution(&q).unwrap();
        assert_eq!((s.distance, s.answer), (1, q));
    }
}
