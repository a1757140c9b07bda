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

use super::base::{ActConfig, CoreConfig};
pub use super::{AnyModel, ModelConfig};
use super::{Depth, LossSpec};

/// What the trainer, evaluator and CLI ask of a family's config section. A family gives its shared parts and its
/// own checks; depth, halting budget and validation of the shared parts follow from them.
pub trait FamilyConfig {
    /// The shared core keys (sizes, depth, prefix, positions).
    fn core(&self) -> &CoreConfig;
    fn core_mut(&mut self) -> &mut CoreConfig;
    /// The ACT halting budget, for families with a halting head.
    fn act(&self) -> Option<&ActConfig>;
    /// The family's own checks (the shared parts are checked by [`FamilyConfig::validate`]).
    fn validate_family(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Checks the combinations the family's reference would reject or silently mis-handle.
    fn validate(&self) -> anyhow::Result<()> {
        self.core().validate()?;
        if let Some(act) = self.act() {
            act.validate()?;
        }
        self.validate_family()
    }
    /// The configured recursion depth (where a curriculum starts).
    fn depth(&self) -> Depth {
        Depth { h: self.core().h_cycles, l: self.core().l_cycles }
    }
    fn set_depth(&mut self, depth: Depth) {
        let core = self.core_mut();
        (core.h_cycles, core.l_cycles) = (depth.h, depth.l);
    }
    /// Supervision steps a training slot stays in the carry (1 without ACT: every step takes a fresh batch).
    fn halt_max_steps(&self) -> usize {
        self.act().map_or(1, |a| a.halt_max_steps)
    }
    /// The training carry's halting exploration probability.
    fn halt_exploration_prob(&self) -> f64 {
        self.act().map_or(0.0, |a| a.halt_exploration_prob)
    }
    /// What the family's training objective is made of.
    fn loss_spec(&self) -> LossSpec {
        LossSpec::reference()
    }
}

/// A family's config type, found in a [`ModelConfig`] ([`ModelConfig::get`]).
pub trait FamilyOf: Sized {
    /// `Some` when `cfg` is this family's.
    fn of(cfg: &ModelConfig) -> Option<&Self>;
}

/// The shared parts of a family model's [`super::RecursiveModel`] impl, for a model that keeps them where every
/// family does: its I/O half in `self.io` and its config (whose loss spec the model's is) in `self.cfg`.
macro_rules! shared_parts {
    () => {
        fn io(&self) -> &crate::model::base::Io<B> {
            &self.io
        }

        fn io_mut(&mut self) -> &mut crate::model::base::Io<B> {
            &mut self.io
        }

        fn core(&self) -> &crate::model::base::CoreConfig {
            &self.cfg.core
        }

        fn core_mut(&mut self) -> &mut crate::model::base::CoreConfig {
            &mut self.cfg.core
        }

        fn loss_spec(&self) -> crate::model::LossSpec {
            crate::model::registry::FamilyConfig::loss_spec(&self.cfg)
        }
    };
}

/// The shared parts of a family config's [`FamilyConfig`] impl, for a config that keeps them where every family
/// does: the shared keys in `self.core` and, with `act`, the ACT keys in `self.act` (`no_act`: a family that keeps
/// no carry, so every training step takes a fresh batch).
macro_rules! config_parts {
    (act) => {
        config_parts!(core);

        fn act(&self) -> Option<&crate::model::base::ActConfig> {
            Some(&self.act)
        }
    };
    (no_act) => {
        config_parts!(core);

        fn act(&self) -> Option<&crate::model::base::ActConfig> {
            None
        }
    };
    (core) => {
        fn core(&self) -> &crate::model::base::CoreConfig {
            &self.core
        }

        fn core_mut(&mut self) -> &mut crate::model::base::CoreConfig {
            &mut self.core
        }
    };
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

    /// The shared core keys of whichever family this is.
    pub fn core(&self) -> &CoreConfig {
        self.family_config().core()
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
        let core = self.core();
        let mixer = if core.mlp_t { "MLP-T" } else { "attention" };
        format!(
            "{} {mixer}, hidden {}, H{} L{}",
            self.family().to_uppercase(),
            core.hidden_size,
            core.h_cycles,
            core.l_cycles
        )
    }
}
