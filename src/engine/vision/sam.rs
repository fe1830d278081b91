//! SAM-style ViT with its neck and 16x compressor (being built).
