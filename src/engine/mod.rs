//! The model: building blocks shared by its parts (`linear`, `norm`, `rope`) and the language `decoder`.
//!
//! Module trees mirror checkpoint tensor names, so a tensor's code is found by its name. Every op on a training
//! path has a backward pass: candle's fused softmax / RMSNorm / RoPE kernels record none (DESIGN.md section 3).

pub mod decoder;
pub mod linear;
pub mod norm;
pub mod rope;
pub mod vision;
