//! The vision encoder (DeepEncoder): SAM-style ViT + compressor -> CLIP-style ViT -> projector -> visual tokens.

pub mod clip;
pub mod resize;
pub mod sam;
