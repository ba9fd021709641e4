//! SO(8) rotation gates: generators, rotations, blending, application and the gates file.

pub mod composed;
pub mod expm;
mod gate;

pub use gate::{
    apply_blocks, blend, fold_into_weight, rotations, GateDiagnostics, GateMatrices,
    LayerSelection, RotationMethod, So8Gates,
};
