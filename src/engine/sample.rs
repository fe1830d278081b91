//! Choosing the next token from logits: greedy, or seeded sampling with temperature, top-k, top-p and a
//! repetition penalty, applied in transformers' order (penalty, temperature, top-k, top-p).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How one request is generated. Temperature 0 is greedy; `top_k` 0 and `top_p` 1 turn those filters off;
/// `repetition_penalty` 1 is none. The same seed gives the same tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub repetition_penalty: f64,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature must be >= 0, got {}",
            self.temperature
        );
        anyhow::ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "top_p must be in (0, 1], got {}", self.top_p);
        anyhow::ensure!(
            self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
            "repetition_penalty must be > 0, got {}",
            self.repetition_penalty
        );
        Ok(())
    }
}

/// One request's token chooser: its parameters, its random stream, and the ids the penalty looks at.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    history: Vec<u32>,
    generated: usize,
}

impl Sampler {
    /// `history`: the prompt's text ids, which the repetition penalty counts as already used (as transformers
    /// does with its input ids).
    pub fn new(params: SamplingParams, history: Vec<u32>) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self { params, rng, history, generated: 0 }
    }

    pub fn greedy(max_new_tokens: usize) -> Self {
        Self::new(SamplingParams { max_new_tokens, ..SamplingParams::default() }, Vec::new())
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Whether this request has all the tokens it may have.
    pub fn exhausted(&self) -> bool {
        self.generated >= self.params.max_new_tokens
    }

    /// Chooses the next token from one position's logits and remembers it.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        let mut logits = logits.to_vec();
        if self.params.repetition_penalty != 1.0 {
            let penalty = self.params.repetition_penalty as f32;
            let mut seen = self.history.clone();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(v) = logits.get_mut(id as usize) {
                    *v = if *v < 0.0 { *v * penalty } else { *v / penalty };
                }
            }
        }
        let token = if self.params.temperature == 0.0 { argmax(&logits) } else { self.sample(&logits) };
        self.history.push(token);
        self.generated += 1;
        token
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        let t = self.params.temperature;
        // Candidates by falling logit (ties: lower id first), so the draw below is deterministic.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k);
        }
        let top = f64::from(logits[order[0]]);
        let mut probs: Vec<f64> = order.iter().map(|&i| ((f64::from(logits[i]) - top) / t).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (always at least one token).
            let mut mass = 0.0;
            let keep = probs.iter().take_while(|&&p| {
                let before = mass;
                mass += p;
                before < self.params.top_p
            });
            let keep = keep.count().max(1);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let draw: f64 = self.rng.random();
        let mut cumulative = 0.0;
        for (&i, &p) in order.iter().zip(&probs) {
            cumulative += p;
            if draw < cumulative {
                return i as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// The index of the largest logit (the first on ties, as torch's argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> SamplingParams {
        SamplingParams { max_new_tokens: 100, temperature, top_k, top_p, repetition_penalty: 1.0, seed }
    }

    fn draws(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p, Vec::new());
        (0..n).map(|_| s.next(logits)).collect()
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        assert_eq!(draws(params(0.0, 0, 1.0, 0), &[0.1, 2.0, 2.0, -1.0], 3), [1, 1, 1]);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = draws(params(1.0, 0, 1.0, 7), &logits, 40);
        assert_eq!(a, draws(params(1.0, 0, 1.0, 7), &logits, 40));
        assert_ne!(a, draws(params(1.0, 0, 1.0, 8), &logits, 40));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [3.0, 2.9, 2.8, 0.0, -1.0];
        let k2 = draws(params(5.0, 2, 1.0, 1), &logits, 200);
        assert!(k2.iter().all(|&t| t < 2) && k2.contains(&0) && k2.contains(&1));
        // Probabilities at T=1: ~0.35, 0.32, 0.29, 0.02, 0.01: top_p 0.5 keeps the first two.
        let p = draws(params(1.0, 0, 0.5, 2), &logits, 200);
        assert!(p.iter().all(|&t| t < 2) && p.contains(&1));
        // A tiny top_p keeps only the most likely token.
        assert!(draws(params(1.0, 0, 1e-9, 3), &logits, 50).iter().all(|&t| t == 0));
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0, 0.0];
        let count0 = |t: f64| draws(params(t, 0, 1.0, 4), &logits, 2000).iter().filter(|&&x| x == 0).count();
        // P(0) = 1/(1+e^-1/T): 0.73 at T=1, ~1.0 at T=0.1, 0.52 at T=10.
        let (cold, warm, hot) = (count0(0.1), count0(1.0), count0(10.0));
        assert!(cold > 1990 && (1350..1570).contains(&warm) && (950..1150).contains(&hot), "{cold} {warm} {hot}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let p = SamplingParams { repetition_penalty: 2.0, ..params(0.0, 0, 1.0, 0) };
        // Token 0 (logit 3) was in the prompt: 3/2 = 1.5 < 2 so token 1 wins; then 1 is penalised too: 2/2 = 1 <
        // 1.5, token 0 again.
        let mut s = Sampler::new(p.clone(), vec![0]);
        assert_eq!([s.next(&[3.0, 2.0, -1.0]), s.next(&[3.0, 2.0, -1.0])], [1, 0]);
        // A negative logit gets more negative: -1 * 2 = -2 < -1.5.
        let mut s = Sampler::new(p, vec![0]);
        assert_eq!(s.next(&[-1.0, -1.5]), 1);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        let err = SamplingParams { top_p: 0.0, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("top_p"), "{err}");
    }
}
