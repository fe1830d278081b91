//! One SAM (ViTDet) transformer block: pre-norm attention with decomposed relative positions, over windows or the
//! whole grid, then a GELU MLP.

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, VarBuilder};

use super::softmax;
use super::SamConfig;
use crate::engine::linear::Linear;
use crate::engine::norm::LayerNorm;
use crate::engine::vision::resize;

/// Elements of one chunk of attention scores (8 MB in f32).
const SCORE_CHUNK: usize = 1 << 21;

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    /// [2·size - 1, head_dim] per axis, size being the window (windowed blocks) or the stored grid (global ones).
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    heads: usize,
}

impl Attention {
    fn new(cfg: &SamConfig, size: usize, vb: VarBuilder) -> Result<Self> {
        let (width, head_dim) = (cfg.width, cfg.head_dim());
        // Zeros, as the reference initialises them.
        let rel = |name| vb.get_with_hints((2 * size - 1, head_dim), name, init::Init::Const(0.0));
        Ok(Self {
            qkv: Linear::load(vb.pp("qkv"), width, 3 * width, cfg.qkv_bias)?,
            proj: Linear::load(vb.pp("proj"), width, width, true)?,
            rel_pos_h: rel("rel_pos_h")?,
            rel_pos_w: rel("rel_pos_w")?,
            heads: cfg.heads,
        })
    }

    /// x [N, h, w, C] (N windows or images) -> [N, h, w, C]: every position attends to every position of its map.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (heads, len) = (self.heads, h * w);
        let head_dim = c / heads;
        // [N, h, w, 3C] -> 3 x [N·heads, h·w, head_dim].
        let qkv = self.qkv.forward_t(x, train)?.reshape((n, len, 3, heads, head_dim))?.permute((2, 0, 3, 1, 4))?;
        let part = |i: usize| qkv.get(i)?.reshape((n * heads, len, head_dim));
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        // Decomposed relative positions (MViTv2): score[(y,x), (ky,kx)] += q·Rh[y,ky] + q·Rw[x,kx], from the
        // unscaled queries.
        let (rel_h, rel_w) =
            decomposed_rel_pos(&q.reshape((n * heads, h, w, head_dim))?, &self.rel_pos_h, &self.rel_pos_w)?;
        let rel_h = rel_h.reshape((n * heads, len, h))?;
        let rel_w = rel_w.reshape((n * heads, len, w))?;
        let q = (q * (head_dim as f64).powf(-0.5))?;
        let out = attend(&q, &k, &v, &rel_h, &rel_w, SCORE_CHUNK)?;
        let out = out.reshape((n, heads, h, w, head_dim))?.permute((0, 2, 3, 1, 4))?.reshape((n, h, w, c))?;
        self.proj.forward_t(&out, train)
    }
}

/// softmax(q·kᵀ + rel) · v for q, k, v [B, len, d] and rel_h [B, len, kh], rel_w [B, len, kw] (kh · kw = len),
/// q already scaled. The score matrices ([B, len, len]: 800 MB for a global block at 1024 px) are made in chunks
/// of at most `chunk` elements (groups of heads, or query rows of long maps): the allocator then reuses their
/// memory, where whole ones would be fresh pages every time.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, rel_h: &Tensor, rel_w: &Tensor, chunk: usize) -> Result<Tensor> {
    let (batch, len, _) = q.dims3()?;
    let group = (chunk / (len * len)).clamp(1, batch);
    let rows = (chunk / len).clamp(1, len);
    let mut out = Vec::new();
    for first in (0..batch).step_by(group) {
        let g = group.min(batch - first);
        let (k, v) = (k.narrow(0, first, g)?, v.narrow(0, first, g)?);
        let mut parts = Vec::new();
        for row in (0..len).step_by(rows) {
            let r = rows.min(len - row);
            let part = |t: &Tensor| t.narrow(0, first, g)?.narrow(1, row, r);
            let scores = part(q)?.matmul(&k.t()?)?;
            parts.push(softmax::biased_softmax(&scores, &part(rel_h)?, &part(rel_w)?)?.matmul(&v)?);
        }
        out.push(Tensor::cat(&parts, 1)?);
    }
    Tensor::cat(&out, 0)
}

/// For queries q [B, h, w, d]: rel_h [B, h, w, h] = q[b,y,x]·Rh[y,ky] and rel_w [B, h, w, w] = q[b,y,x]·Rw[x,kx],
/// each as one matmul batched over the query's row (resp. column).
fn decomposed_rel_pos(q: &Tensor, table_h: &Tensor, table_w: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, h, w, d) = q.dims4()?;
    let r_h = relative_table(table_h, h)?; // [h, kh, d]
    let r_w = relative_table(table_w, w)?; // [w, kw, d]
    let rel_h = q.permute((1, 0, 2, 3))?.reshape((h, b * w, d))?.matmul(&r_h.transpose(1, 2)?)?;
    let rel_h = rel_h.reshape((h, b, w, h))?.permute((1, 0, 2, 3))?;
    let rel_w = q.permute((2, 0, 1, 3))?.reshape((w, b * h, d))?.matmul(&r_w.transpose(1, 2)?)?;
    let rel_w = rel_w.reshape((w, b, h, w))?.permute((1, 2, 0, 3))?;
    Ok((rel_h, rel_w))
}

/// R [size, size, d] with R[i, j] = table[i - j + size - 1]; a table of another length than 2·size - 1 is first
/// resized linearly (as the reference does for global blocks at other image sizes).
fn relative_table(table: &Tensor, size: usize) -> Result<Tensor> {
    let (rows, d) = table.dims2()?;
    let table = if rows == 2 * size - 1 { table.clone() } else { resize::linear_rows(table, 2 * size - 1)? };
    let index: Vec<u32> = (0..size).flat_map(|i| (0..size).map(move |j| (i + size - 1 - j) as u32)).collect();
    let index = Tensor::from_vec(index, size * size, table.device())?;
    table.index_select(&index, 0)?.reshape((size, size, d))
}

/// lin2(gelu(lin1(x))), GELU the exact (erf) one.
#[derive(Debug, Clone)]
struct Mlp {
    lin1: Linear,
    lin2: Linear,
}

#[derive(Debug, Clone)]
pub(super) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    /// `None`: global attention.
    window: Option<usize>,
}

impl Block {
    pub fn new(cfg: &SamConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let window = cfg.window(index);
        let (width, mlp_dim) = (cfg.width, cfg.mlp_dim());
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), width, cfg.layer_norm_eps)?,
            attn: Attention::new(cfg, window.unwrap_or(cfg.grid()), vb.pp("attn"))?,
            norm2: LayerNorm::load(vb.pp("norm2"), width, cfg.layer_norm_eps)?,
            mlp: Mlp {
                lin1: Linear::load(vb.pp("mlp").pp("lin1"), width, mlp_dim, true)?,
                lin2: Linear::load(vb.pp("mlp").pp("lin2"), mlp_dim, width, true)?,
            },
            window,
        })
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [&mut self.attn.qkv, &mut self.attn.proj, &mut self.mlp.lin1, &mut self.mlp.lin2]
    }

    /// x [B, H, W, C] -> [B, H, W, C].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let normed = self.norm1.forward(x)?;
        let attended = match self.window {
            Some(size) => {
                let (_, h, w, _) = x.dims4()?;
                let windows = window_partition(&normed, size)?;
                window_unpartition(&self.attn.forward_t(&windows, train)?, size, h, w)?
            }
            None => self.attn.forward_t(&normed, train)?,
        };
        let x = (x + attended)?;
        let hidden = self.mlp.lin1.forward_t(&self.norm2.forward(&x)?, train)?.gelu_erf()?;
        x + self.mlp.lin2.forward_t(&hidden, train)?
    }
}

/// [B, H, W, C] -> [B · nh · nw, size, size, C]: zero-padded at the bottom/right to whole windows, windows in
/// row-major order per image (the padding positions take part in attention, as in the reference).
fn window_partition(x: &Tensor, size: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (nh, nw) = (h.div_ceil(size), w.div_ceil(size));
    let x = x.pad_with_zeros(1, 0, nh * size - h)?.pad_with_zeros(2, 0, nw * size - w)?;
    x.reshape((b, nh, size, nw, size, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((b * nh * nw, size, size, c))
}

/// The inverse of [`window_partition`] for an [B, h, w, C] map, padding dropped.
fn window_unpartition(windows: &Tensor, size: usize, h: usize, w: usize) -> Result<Tensor> {
    let (nh, nw) = (h.div_ceil(size), w.div_ceil(size));
    let c = windows.dim(3)?;
    let b = windows.dim(0)? / (nh * nw);
    let x = windows.reshape((b, nh, nw, size, size, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((
        b,
        nh * size,
        nw * size,
        c,
    ))?;
    if nh * size == h && nw * size == w {
        Ok(x)
    } else {
        x.narrow(1, 0, h)?.narrow(2, 0, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn windows_round_trip_with_padding() {
        let x = Tensor::arange(0f32, (2 * 5 * 7 * 3) as f32, &Device::Cpu).unwrap().reshape((2, 5, 7, 3)).unwrap();
        let windows = window_partition(&x, 3).unwrap();
        // 2 rows x 3 columns of windows per image; window 1 of image 0 starts at column 3.
        assert_eq!(windows.dims(), [12, 3, 3, 3]);
        assert_eq!(
            windows.get(1).unwrap().get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap(),
            [9.0, 10.0, 11.0]
        );
        // The last window of image 0 holds row 3, columns 6..9 (one real position, then padding).
        let last = windows.get(5).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!((last[0][0][0], last[0][1][0], last[2][2][0]), ((3 * 7 + 6) as f32 * 3.0, 0.0, 0.0));
        let back = window_unpartition(&windows, 3, 5, 7).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn chunked_attention_equals_whole() {
        // 5 maps of 4x6 positions: chunks of 2 maps, or of 7 query rows (a partial last chunk), as one pass.
        let (b, len, d, kh, kw) = (5, 24, 8, 4, 6);
        let t = |shape: &[usize], seed: f64| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| ((i as f64 * 0.37 + seed).sin()) as f32).collect();
            Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
        };
        let (q, k, v) = (t(&[b, len, d], 1.0), t(&[b, len, d], 2.0), t(&[b, len, d], 3.0));
        let (rel_h, rel_w) = (t(&[b, len, kh], 4.0), t(&[b, len, kw], 5.0));
        let whole = attend(&q, &k, &v, &rel_h, &rel_w, usize::MAX).unwrap();
        for chunk in [2 * len * len, 7 * len] {
            let chunked = attend(&q, &k, &v, &rel_h, &rel_w, chunk).unwrap();
            let diff: f32 =
                (&chunked - &whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert!(diff < 1e-6, "chunk {chunk}: {diff}");
        }
    }

    #[test]
    fn relative_table_indexes_by_offset() {
        let table = Tensor::arange(0f32, 5.0, &Device::Cpu).unwrap().reshape((5, 1)).unwrap();
        let r = relative_table(&table, 3).unwrap().squeeze(2).unwrap().to_vec2::<f32>().unwrap();
        // R[i][j] = table[i - j + 2].
        assert_eq!(r, [[2.0, 1.0, 0.0], [3.0, 2.0, 1.0], [4.0, 3.0, 2.0]]);
    }
}
