//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW`), the learning-rate schedules, and gradient
//! clipping by global norm. candle-nn's AdamW keeps its moments private; ours are saved in checkpoints so that a
//! resumed run continues exactly.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{Tensor, Var};

use super::config::Schedule;

/// A trainable parameter: its checkpoint name and variable.
pub type Params = Vec<(String, Var)>;

pub struct AdamW {
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Steps taken.
    pub step: usize,
    /// First and second moments per parameter name.
    moments: HashMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(lr: f64, (beta1, beta2): (f64, f64), eps: f64, weight_decay: f64) -> Self {
        Self { lr, beta1, beta2, eps, weight_decay, step: 0, moments: HashMap::new() }
    }

    /// One update of every parameter that has a gradient in `grads` (by name).
    pub fn step(&mut self, params: &Params, grads: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let (m, v) = match self.moments.remove(name) {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            var.set(&(decayed - (update * self.lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// Moments as `<name>.exp_avg` / `<name>.exp_avg_sq` tensors (PyTorch's names), for a checkpoint.
    pub fn state_tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, (m, v)) in &self.moments {
            out.insert(format!("{name}.exp_avg"), m.to_device(&candle_core::Device::Cpu)?);
            out.insert(format!("{name}.exp_avg_sq"), v.to_device(&candle_core::Device::Cpu)?);
        }
        Ok(out)
    }

    /// Restores the moments and step from a checkpoint's optimizer file.
    pub fn load_state(&mut self, path: &Path, step: usize, params: &Params) -> anyhow::Result<()> {
        let device = params.first().map(|(_, v)| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let mut tensors =
            candle_core::safetensors::load(path, &device).with_context(|| format!("reading {}", path.display()))?;
        self.moments.clear();
        for (name, _) in params {
            let m = tensors.remove(&format!("{name}.exp_avg"));
            let v = tensors.remove(&format!("{name}.exp_avg_sq"));
            if let (Some(m), Some(v)) = (m, v) {
                self.moments.insert(name.clone(), (m, v));
            }
        }
        anyhow::ensure!(
            tensors.is_empty(),
            "{}: optimizer state for parameters this run does not train (e.g. {}): the config changed",
            path.display(),
            tensors.keys().min().map(String::as_str).unwrap_or("")
        );
        self.step = step;
        Ok(())
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up, then constant, linear or cosine decay to 0
/// (HF's `get_*_schedule_with_warmup`).
pub fn learning_rate(schedule: Schedule, peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak * (1.0 - progress).max(0.0),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm` (0: no clipping); returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> candle_core::Result<f64> {
    let mut total = 0.0f64;
    for g in grads.values() {
        total += f64::from(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_matches_pytorch_first_steps() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) with p = [1, -2], grads [0.5, 0.25] then [-1, 2]:
        // step 1 (the bias-corrected update is sign(g)): p = [1, -2] * (1 - 0.001) - 0.1 = [0.899, -2.098].
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let params = vec![("p".to_string(), var.clone())];
        let mut opt = AdamW::new(0.1, (0.9, 0.999), 1e-8, 0.01);
        let grads = |g: [f32; 2]| HashMap::from([("p".to_string(), Tensor::new(&g, &Device::Cpu).unwrap())]);
        opt.step(&params, &grads([0.5, 0.25])).unwrap();
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p[0] - 0.899).abs() < 1e-6 && (p[1] + 2.098).abs() < 1e-6, "{p:?}");
        opt.step(&params, &grads([-1.0, 2.0])).unwrap();
        // m = [0.05*0.9 - 0.1, 0.025*0.9 + 0.2] = [-0.055, 0.2225]; v = [0.00025*0.999 + 0.001, 0.0000625*0.999 + 0.004]
        let (m, v) = ([-0.055f64, 0.2225], [0.00024975 + 0.001, 0.0000624375 + 0.004]);
        let (c1, c2) = (1.0 - 0.81, 1.0 - 0.999f64.powi(2));
        let want: Vec<f64> = [0.899f64, -2.098]
            .iter()
            .enumerate()
            .map(|(i, p)| p * (1.0 - 0.001) - 0.1 * (m[i] / c1) / ((v[i] / c2).sqrt() + 1e-8))
            .collect();
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((f64::from(p[0]) - want[0]).abs() < 1e-5 && (f64::from(p[1]) - want[1]).abs() < 1e-5, "{p:?} {want:?}");
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        assert_eq!(learning_rate(Schedule::Linear, 1.0, 0, 10, 110), 0.0);
        assert_eq!(learning_rate(Schedule::Linear, 1.0, 5, 10, 110), 0.5);
        assert_eq!(learning_rate(Schedule::Linear, 1.0, 60, 10, 110), 0.5);
        assert!((learning_rate(Schedule::Cosine, 1.0, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(Schedule::Cosine, 1.0, 110, 10, 110).abs() < 1e-12);
        assert_eq!(learning_rate(Schedule::Constant, 1.0, 100, 10, 110), 1.0);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut grads = HashMap::from([
            ("a".to_string(), Tensor::new(&[3.0f32], &Device::Cpu).unwrap()),
            ("b".to_string(), Tensor::new(&[4.0f32], &Device::Cpu).unwrap()),
        ]);
        assert!((clip_grad_norm(&mut grads, 1.0).unwrap() - 5.0).abs() < 1e-9);
        let a = grads["a"].to_vec1::<f32>().unwrap()[0];
        assert!((a - 0.6).abs() < 1e-5, "{a}");
        assert!((clip_grad_norm(&mut grads, 0.0).unwrap() - 1.0).abs() < 1e-5);
    }
}
