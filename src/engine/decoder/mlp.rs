//! The feed-forward blocks: a SiLU-gated MLP (dense layers, each expert, the shared experts) and the MoE block.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

use super::DecoderConfig;
use crate::engine::linear::Linear;

/// down(silu(gate(x)) · up(x)).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn new(vb: VarBuilder, hidden: usize, intermediate: usize) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::load(vb.pp("gate_proj"), hidden, intermediate, false)?,
            up_proj: Linear::load(vb.pp("up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::load(vb.pp("down_proj"), intermediate, hidden, false)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let gated = (self.gate_proj.forward_t(x, train)?.silu()? * self.up_proj.forward_t(x, train)?)?;
        self.down_proj.forward_t(&gated, train)
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }
}

/// DeepSeek-V2's MoE: a softmax router picks `top_k` routed experts per token, whose outputs are summed with the
/// routing probabilities as weights (renormalised only with `norm_topk_prob`, times `routed_scaling_factor`);
/// the shared experts see every token.
#[derive(Debug, Clone)]
pub(super) struct Moe {
    /// The router `mlp.gate.weight` [experts, hidden]; kept out of LoRA, as PEFT's usual targets do.
    router: Tensor,
    experts: Vec<Mlp>,
    shared_experts: Option<Mlp>,
    top_k: usize,
    norm_topk_prob: bool,
    routed_scaling_factor: f64,
}

impl Moe {
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, width) = (cfg.hidden_size, cfg.moe_intermediate_size);
        let router =
            vb.pp("gate").get_with_hints((cfg.n_routed_experts, hidden), "weight", init::DEFAULT_KAIMING_UNIFORM)?;
        let experts = (0..cfg.n_routed_experts)
            .map(|e| Mlp::new(vb.pp("experts").pp(e), hidden, width))
            .collect::<Result<_>>()?;
        let shared_experts = match cfg.n_shared_experts {
            0 => None,
            n => Some(Mlp::new(vb.pp("shared_experts"), hidden, width * n)?),
        };
        Ok(Self {
            router,
            experts,
            shared_experts,
            top_k: cfg.num_experts_per_tok,
            norm_topk_prob: cfg.norm_topk_prob,
            routed_scaling_factor: cfg.routed_scaling_factor,
        })
    }

    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.experts.iter_mut().chain(self.shared_experts.as_mut()).flat_map(Mlp::linears_mut)
    }

    /// x [batch, len, hidden]. Each expert runs only on its own tokens: gathered with index_select, its weighted
    /// outputs scattered back with one index_add (both have backward passes).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let tokens = x.reshape((batch * len, hidden))?;
        let Routing { per_expert, weights } = self.route(&tokens)?;

        let mut rows = Vec::new();
        let mut outputs = Vec::new();
        for (expert, routed) in self.experts.iter().zip(per_expert) {
            if routed.is_empty() {
                continue;
            }
            let (token_ids, slots): (Vec<u32>, Vec<u32>) = routed.into_iter().unzip();
            let token_ids = Tensor::new(token_ids, x.device())?;
            let weight = weights.index_select(&Tensor::new(slots, x.device())?, 0)?.unsqueeze(1)?;
            let y = expert.forward_t(&tokens.index_select(&token_ids, 0)?, train)?;
            outputs.push(y.broadcast_mul(&weight)?);
            rows.push(token_ids);
        }
        let mut out = tokens.zeros_like()?.index_add(&Tensor::cat(&rows, 0)?, &Tensor::cat(&outputs, 0)?, 0)?;
        if let Some(shared) = &self.shared_experts {
            out = (out + shared.forward_t(&tokens, train)?)?;
        }
        out.reshape((batch, len, hidden))
    }

    /// Routes tokens [n, hidden]; router scores are computed in f32, as the reference does.
    fn route(&self, tokens: &Tensor) -> Result<Routing> {
        let logits = tokens.to_dtype(DType::F32)?.matmul(&self.router.to_dtype(DType::F32)?.t()?)?;
        let scores = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let mut picks = vec![Vec::new(); self.experts.len()];
        let mut chosen = Vec::new();
        for (token, row) in scores.to_vec2::<f32>()?.iter().enumerate() {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            for (rank, &expert) in order[..self.top_k].iter().enumerate() {
                picks[expert].push((token as u32, (token * self.top_k + rank) as u32));
                chosen.push(expert as u32);
            }
        }
        let n = chosen.len() / self.top_k;
        let chosen = Tensor::from_vec(chosen, (n, self.top_k), tokens.device())?;
        let mut weights = scores.gather(&chosen, 1)?;
        if self.norm_topk_prob {
            weights = weights.broadcast_div(&(weights.sum_keepdim(1)? + 1e-20)?)?;
        }
        let weights = (weights * self.routed_scaling_factor)?.to_dtype(tokens.dtype())?.flatten_all()?;
        Ok(Routing { per_expert: picks, weights })
    }
}

/// Which tokens go to which expert, with what weight.
struct Routing {
    /// Per expert, its (token, slot) pairs; slot = token · top_k + rank indexes `weights`.
    per_expert: Vec<Vec<(u32, u32)>>,
    /// The routing weights [n · top_k], in the tokens' dtype.
    weights: Tensor,
}
