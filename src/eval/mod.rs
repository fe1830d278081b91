//! Evaluation metrics.

pub mod squad;
