//! The family registry: the one place that lists the model families. [`families!`] turns one line per family into
//! the `[model]` config section ([`ModelConfig`], tagged by `family = "..."`), a model of any family on any backend
//! ([`AnyModel`]) and the two dispatch macros everything else uses ([`for_family!`] on a config, [`for_model!`] on a
//! model), so no other file matches on the families. The one invocation is in `model/mod.rs`, where each line also
//! declares the family's module. (The generated macros are textually scoped: `model` is declared `#[macro_use]`
//! and first in the crate, so every later module sees them.)
//!
//! What a family *means* is asked of it through traits, never read off a config flag: [`FamilyConfig`] (its
//! config: depth, halting budget, loss specification) and [`super::RecursiveModel`] (its model: halting rule, loss,
//! checkpoint keys, depth semantics). Adding a family is its file (config + model + those impls) and one line in
//! the [`families!`] call in `model/mod.rs`.

pub use super::{AnyModel, ModelConfig};
use super::{Depth, LossSpec};

/// What the trainer, evaluator and CLI ask of a family's config section.
pub trait FamilyConfig {
    /// Checks the combinations the family's reference would reject or silently mis-handle.
    fn validate(&self) -> anyhow::Result<()>;
    /// The configured recursion depth (where a curriculum starts).
    fn depth(&self) -> Depth;
    fn set_depth(&mut self, depth: Depth);
    /// Supervision steps a training slot stays in the carry (1: no carry, every step takes a fresh batch).
    fn halt_max_steps(&self) -> usize;
    /// The training carry's halting exploration probability.
    fn halt_exploration_prob(&self) -> f64;
    /// What the family's training objective is made of.
    fn loss_spec(&self) -> LossSpec {
        LossSpec::reference()
    }
    /// Width and token mixer, for one-line summaries.
    fn hidden_size(&self) -> usize;
    fn mlp_t(&self) -> bool;
}

/// A family's config type, found in a [`ModelConfig`] ([`ModelConfig::get`]).
pub trait FamilyOf: Sized {
    /// `Some` when `cfg` is this family's.
    fn of(cfg: &ModelConfig) -> Option<&Self>;
}

/// Lists the families: `Variant = "name" => module::{Config, Model}` each. Generates [`ModelConfig`],
/// [`AnyModel`], [`for_family!`], [`for_model!`] and [`map_model!`]. (`$d` is a literal `$`, so that the generated
/// macros can have metavariables of their own.)
macro_rules! families {
    ($d:tt $($variant:ident = $name:literal => $module:ident :: { $config:ident, $model:ident }),+ $(,)?) => {
        $(pub mod $module;)+

        /// The `[model]` section: the family (`family = "trm"`, ...) and its architecture.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "family")]
        pub enum ModelConfig {
            $(#[serde(rename = $name)] $variant($module::$config),)+
        }

        /// A model of any family on backend `B` (e.g. weights loaded for evaluation).
        #[derive(Clone, Debug)]
        pub enum AnyModel<B: crate::kernels::FusedOps> {
            $($variant($module::$model<B>),)+
        }

        #[macro_export]
        /// `for_family!(config, c => expr)`: `expr` with `c` bound to the family's own config, whichever it is.
        macro_rules! for_family {
            ($d cfg:expr, $d c:ident => $d body:expr) => {
                match $d cfg {
                    $($d crate::model::ModelConfig::$variant($d c) => $d body,)+
                }
            };
        }

        #[macro_export]
        /// `for_model!(model, m => expr)`: `expr` with `m` bound to the concrete model in an [`AnyModel`].
        macro_rules! for_model {
            ($d any:expr, $d m:ident => $d body:expr) => {
                match $d any {
                    $($d crate::model::AnyModel::$variant($d m) => $d body,)+
                }
            };
        }

        #[macro_export]
        /// `map_model!(model, m => expr)`: like [`for_model!`], where `expr` is a model of the same family, wrapped
        /// back into an [`AnyModel`] (e.g. the same weights at another depth).
        macro_rules! map_model {
            ($d any:expr, $d m:ident => $d body:expr) => {
                match $d any {
                    $($d crate::model::AnyModel::$variant($d m) => $d crate::model::AnyModel::$variant($d body),)+
                }
            };
        }

        $(
            impl From<$module::$config> for ModelConfig {
                fn from(c: $module::$config) -> Self {
                    ModelConfig::$variant(c)
                }
            }

            impl crate::model::registry::FamilyOf for $module::$config {
                fn of(cfg: &ModelConfig) -> Option<&Self> {
                    match cfg {
                        ModelConfig::$variant(c) => Some(c),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )+

        impl<B: crate::kernels::FusedOps> AnyModel<B> {
            /// The family's name as a config writes it.
            pub fn family(&self) -> &'static str {
                match self {
                    $(AnyModel::$variant(_) => $name,)+
                }
            }
        }

        impl ModelConfig {
            /// The family's own config behind the [`FamilyConfig`] questions.
            pub fn family_config(&self) -> &dyn crate::model::registry::FamilyConfig {
                match self {
                    $(ModelConfig::$variant(c) => c,)+
                }
            }

            fn family_config_mut(&mut self) -> &mut dyn crate::model::registry::FamilyConfig {
                match self {
                    $(ModelConfig::$variant(c) => c,)+
                }
            }

            /// The family's name as the config writes it.
            pub fn family(&self) -> &'static str {
                match self {
                    $(ModelConfig::$variant(_) => $name,)+
                }
            }

            /// Fresh weights of this family on `B`, as an [`AnyModel`].
            pub fn init<B: crate::kernels::FusedOps>(&self, seed: u64, device: &B::Device) -> AnyModel<B> {
                match self {
                    $(ModelConfig::$variant(c) => AnyModel::$variant(c.init::<B>(seed, device)),)+
                }
            }
        }
    };
}

impl ModelConfig {
    /// This config as family `C`'s, if it is one (`cfg.model.get::<TrmConfig>()`).
    pub fn get<C: FamilyOf>(&self) -> Option<&C> {
        C::of(self)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.family_config().validate()
    }

    pub fn halt_max_steps(&self) -> usize {
        self.family_config().halt_max_steps()
    }

    pub fn halt_exploration_prob(&self) -> f64 {
        self.family_config().halt_exploration_prob()
    }

    pub fn loss_spec(&self) -> LossSpec {
        self.family_config().loss_spec()
    }

    /// HRM's Q-learning: the `q_continue` target is recomputed every this many steps. `None` for the others.
    pub fn q_learning(&self) -> Option<u64> {
        self.loss_spec().q_target_every
    }

    /// The configured depth (where a curriculum starts).
    pub fn depth(&self) -> Depth {
        self.family_config().depth()
    }

    /// The same architecture at another depth.
    pub fn with_depth(&self, depth: Depth) -> ModelConfig {
        let mut c = self.clone();
        c.family_config_mut().set_depth(depth);
        c
    }

    /// One line for progress output: family, mixer, width, depth.
    pub fn summary(&self) -> String {
        let f = self.family_config();
        let d = f.depth();
        let mixer = if f.mlp_t() { "MLP-T" } else { "attention" };
        format!("{} {mixer}, hidden {}, H{} L{}", self.family().to_uppercase(), f.hidden_size(), d.h, d.l)
    }
}
