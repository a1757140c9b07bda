//! ARC augmentation (spec §4.3/§4.4): a dihedral transform and a colour permutation that keeps
//! black (0), applied as `dihedral(mapping[grid], tid)` to every pair of a task; the versions of a
//! task, deduplicated by the reference's puzzle hash; and the version names of both references,
//! parsed back so that a prediction can be de-augmented.

use super::grid::{hex, ArcGrid};
use super::io::ArcPair;
use super::MAX_COLORS;
use crate::maze::Dihedral;
use crate::numpy_rng::NumpyRandomState;
use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// TRM's `PuzzleIdSeparator`.
pub const TRM_SEPARATOR: &str = "|||";

/// Tries per wanted version (the reference's `ARCAugmentRetriesFactor`).
pub const RETRIES_FACTOR: usize = 5;

/// How version names are spelt: each reference has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameStyle {
    /// `{id}|||t{tid}|||{mapping digits}` (TRM, Kaggle-format sources).
    Trm,
    /// `{id}_t{tid}_{mapping digits}` (HRM, directory sources).
    Hrm,
}

/// One augmentation: colour c becomes `mapping[c]`, then the dihedral transform. `mapping[0]` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArcAugment {
    pub dihedral: Dihedral,
    pub mapping: [u8; MAX_COLORS],
}

impl ArcAugment {
    /// The original task (version 0 of every group).
    pub const IDENTITY: ArcAugment =
        ArcAugment { dihedral: Dihedral::IDENTITY, mapping: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] };

    /// Checks that `mapping` is a permutation of 0..=9 that keeps 0.
    pub fn new(dihedral: Dihedral, mapping: [u8; MAX_COLORS]) -> Result<ArcAugment> {
        ensure!(mapping[0] == 0, "colour mapping {mapping:?} moves black (0)");
        let mut seen = [false; MAX_COLORS];
        for &c in &mapping {
            ensure!((c as usize) < MAX_COLORS && !seen[c as usize], "colour mapping {mapping:?} is not a permutation");
            seen[c as usize] = true;
        }
        Ok(ArcAugment { dihedral, mapping })
    }

    /// As the reference draws one: `tid` uniform in 0..8, then `[0] + permutation(1..=9)`.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> ArcAugment {
        let dihedral = Dihedral::ALL[rng.random_range(0..8)];
        let mut mapping = ArcAugment::IDENTITY.mapping;
        mapping[1..].shuffle(rng);
        ArcAugment { dihedral, mapping }
    }

    /// As the reference draws one from numpy's legacy stream, draw for draw: `tid =
    /// np.random.randint(0, 8)`, then `mapping = [0] + np.random.permutation(1..=9)`.
    pub fn random_numpy(rng: &mut NumpyRandomState) -> ArcAugment {
        let dihedral = Dihedral::ALL[rng.randint(0, 8) as usize];
        let mut mapping = ArcAugment::IDENTITY.mapping;
        rng.shuffle(&mut mapping[1..]);
        ArcAugment { dihedral, mapping }
    }

    /// `dihedral(mapping[grid], tid)`.
    pub fn apply(&self, grid: &ArcGrid) -> ArcGrid {
        grid.map_colours(&self.mapping).dihedral(self.dihedral)
    }

    /// The transform that undoes this one: the inverse dihedral (`[0,3,2,1,4,5,6,7][tid]`) and the
    /// inverse colour map (the two commute).
    pub fn inverse(&self) -> ArcAugment {
        let mut inverse = [0u8; MAX_COLORS];
        for (c, &m) in self.mapping.iter().enumerate() {
            inverse[m as usize] = c as u8;
        }
        ArcAugment { dihedral: self.dihedral.inverse(), mapping: inverse }
    }

    /// Undoes [`ArcAugment::apply`].
    pub fn invert(&self, grid: &ArcGrid) -> ArcGrid {
        self.inverse().apply(grid)
    }

    pub fn apply_pair(&self, pair: &ArcPair) -> ArcPair {
        ArcPair { input: self.apply(&pair.input), output: self.apply(&pair.output) }
    }

    /// The mapping as the reference prints it: ten digits, e.g. `0381925746`.
    pub fn mapping_digits(&self) -> String {
        self.mapping.iter().map(|&c| char::from(b'0' + c)).collect()
    }

    /// The name of the version of task `id` made by this augmentation; the identity keeps `id`.
    pub fn version_name(&self, id: &str, style: NameStyle) -> String {
        if *self == ArcAugment::IDENTITY {
            return id.to_string();
        }
        let (tid, digits) = (self.dihedral.tid(), self.mapping_digits());
        match style {
            NameStyle::Trm => format!("{id}{TRM_SEPARATOR}t{tid}{TRM_SEPARATOR}{digits}"),
            NameStyle::Hrm => format!("{id}_t{tid}_{digits}"),
        }
    }
}

/// Parses `t{tid}` and ten mapping digits.
fn parse_parts(tid: &str, digits: &str) -> Result<ArcAugment> {
    let tid = tid.strip_prefix('t').with_context(|| format!("transform {tid:?} does not start with 't'"))?;
    let dihedral = match tid.parse::<u8>().ok().and_then(Dihedral::new) {
        Some(d) if tid.len() == 1 => d,
        _ => bail!("transform id {tid:?} is not 0..=7"),
    };
    let bytes = digits.as_bytes();
    ensure!(
        bytes.len() == MAX_COLORS && bytes.iter().all(u8::is_ascii_digit),
        "colour mapping {digits:?} is not ten digits"
    );
    let mut mapping = [0u8; MAX_COLORS];
    for (m, b) in mapping.iter_mut().zip(bytes) {
        *m = b - b'0';
    }
    ArcAugment::new(dihedral, mapping)
}

/// Splits a version name into the task id and its augmentation, as TRM's `inverse_aug`: a name
/// with `|||` is TRM's `{id}|||t{tid}|||{digits}`; otherwise a name ending in `_t{tid}_{ten
/// digits}` that form a valid mapping is HRM's; any other name is an original (the identity).
pub fn parse_version_name(name: &str) -> Result<(String, ArcAugment)> {
    if name.contains(TRM_SEPARATOR) {
        let parts: Vec<&str> = name.rsplitn(3, TRM_SEPARATOR).collect();
        let [digits, tid, id] = parts[..] else {
            bail!("version name {name:?} has one {TRM_SEPARATOR:?}, expected {{id}}|||t{{tid}}|||{{digits}}");
        };
        let augment = parse_parts(tid, digits).with_context(|| format!("version name {name:?}"))?;
        return Ok((id.to_string(), augment));
    }
    let hrm = name.rsplitn(3, '_').collect::<Vec<_>>();
    if let [digits, tid, id] = hrm[..] {
        if let Ok(augment) = parse_parts(tid, digits) {
            return Ok((id.to_string(), augment));
        }
    }
    Ok((name.to_string(), ArcAugment::IDENTITY))
}

/// The reference's `puzzle_hash` over every pair (train and test alike): per pair
/// `"{hex(hash(input))}|{hex(hash(output))}"`, sorted, joined by `|`, sha256.
pub fn puzzle_hash<'a>(pairs: impl IntoIterator<Item = &'a ArcPair>) -> [u8; 32] {
    let mut hashes: Vec<String> =
        pairs.into_iter().map(|p| format!("{}|{}", hex(&p.input.hash()), hex(&p.output.hash()))).collect();
    hashes.sort_unstable();
    Sha256::digest(hashes.join("|").as_bytes()).into()
}

/// The versions of a task whose pairs are `pairs`: the identity, then up to `num_aug` random
/// augmentations whose augmented pairs hash differently from every earlier version, drawn at most
/// `RETRIES_FACTOR * num_aug` times. A task with symmetries gets fewer versions.
pub fn task_versions<R: Rng + ?Sized>(pairs: &[ArcPair], num_aug: usize, rng: &mut R) -> Vec<ArcAugment> {
    task_versions_with(pairs, num_aug, || ArcAugment::random(rng))
}

/// [`task_versions`] with the augmentations drawn by `draw` (e.g. [`ArcAugment::random_numpy`]).
/// The draws are the reference's: one per try, the tries stopping as soon as `num_aug` new
/// versions are found or after `RETRIES_FACTOR * num_aug` tries.
pub fn task_versions_with(pairs: &[ArcPair], num_aug: usize, mut draw: impl FnMut() -> ArcAugment) -> Vec<ArcAugment> {
    let mut versions = vec![ArcAugment::IDENTITY];
    let mut seen = HashSet::from([puzzle_hash(pairs)]);
    for _ in 0..RETRIES_FACTOR * num_aug {
        if versions.len() > num_aug {
            break;
        }
        let augment = draw();
        let augmented: Vec<ArcPair> = pairs.iter().map(|p| augment.apply_pair(p)).collect();
        if seen.insert(puzzle_hash(&augmented)) {
            versions.push(augment);
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_round_trip_in_both_styles() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let augment = ArcAugment::random(&mut rng);
            for style in [NameStyle::Trm, NameStyle::Hrm] {
                let name = augment.version_name("task_a|b", style);
                assert_eq!(parse_version_name(&name).unwrap(), ("task_a|b".to_string(), augment), "{name}");
            }
        }
        assert_eq!(parse_version_name("Copy1").unwrap(), ("Copy1".to_string(), ArcAugment::IDENTITY));
        assert_eq!(parse_version_name("a_b_c").unwrap().0, "a_b_c");
        let err = format!("{:#}", parse_version_name("x|||t8|||0123456789").unwrap_err());
        assert!(err.contains("transform id \"8\""), "{err}");
        let err = format!("{:#}", parse_version_name("x|||t1|||1023456789").unwrap_err());
        assert!(err.contains("moves black"), "{err}");
    }
}
