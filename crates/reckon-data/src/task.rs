//! The [`Task`] trait: what a puzzle family must provide so that datasets, training and evaluation
//! can handle it generically (tokenisation, rendering, invertible augmentation, reference solver
//! and answer verification).

/// Static facts about a task's token sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    /// Number of distinct tokens, PAD included.
    pub vocab_size: usize,
    /// Tokens per example (inputs and labels have the same length).
    pub seq_len: usize,
    pub pad_id: u8,
    /// Label token that the loss ignores (the sampler maps it to -100).
    pub ignore_label_id: u8,
}

/// A puzzle family. All methods work on token sequences of length `spec().seq_len`.
pub trait Task: Send + Sync {
    /// An invertible transform (augmentation) of one example.
    type Transform: Clone + std::fmt::Debug + Send + Sync;

    fn spec(&self) -> TaskSpec;
    /// Human text (e.g. 81 chars, '.' or '0' blank) -> input tokens. Errors name what is wrong.
    fn parse_puzzle(&self, text: &str) -> anyhow::Result<Vec<u8>>;
    /// Tokens (inputs or labels or predictions) -> a human-readable multi-line grid.
    fn render(&self, tokens: &[u8]) -> String;
    fn random_transform(&self, rng: &mut dyn rand::RngCore) -> Self::Transform;
    fn apply(&self, t: &Self::Transform, tokens: &[u8]) -> Vec<u8>;
    fn invert(&self, t: &Self::Transform, tokens: &[u8]) -> Vec<u8>;
    /// Exact solver used as the reference: input tokens -> solution tokens (None if unsolvable).
    fn solve(&self, inputs: &[u8]) -> Option<Vec<u8>>;
    /// True iff `prediction` (tokens) is a valid, complete answer for the puzzle `inputs` (tokens).
    fn verify(&self, inputs: &[u8], prediction: &[u8]) -> bool;
}
