//! CLIP-style ViT over the SAM features, and the projector (being built).
