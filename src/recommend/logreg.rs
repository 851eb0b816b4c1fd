//! L2-regularised logistic regression with balanced class weights: the
//! objective scikit-learn's `LogisticRegression(C, class_weight="balanced")`
//! minimises with its default `lbfgs` solver, minimised by argmin's L-BFGS
//! (More-Thuente line search, 10 correction pairs as scipy's L-BFGS-B).
//!
//! With labels `y_i` in {-1, 1}, sample weights `s_i = n / (2 n_class(i))`,
//! weights `w` and intercept `b` (not penalised):
//!
//! `f(w, b) = (sum_i s_i log(1 + exp(-y_i (x_i.w + b))) + |w|^2 / (2C)) / sum_i s_i`
//!
//! (scikit-learn >= 1.2 divides by the weight sum the same way; the minimiser
//! does not depend on it.) The problem is strictly convex, so a converged
//! solution is the same one scikit-learn finds.

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// A fitted model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// L-BFGS iterations taken.
    pub iterations: u64,
    /// False when `max_iter` ran out before convergence.
    pub converged: bool,
}

impl Model {
    /// The probability of the positive class for one feature row.
    pub fn probability(&self, x: &[f32]) -> f64 {
        let z: f64 = self.intercept
            + x.iter()
                .zip(&self.weights)
                .map(|(a, w)| f64::from(*a) * w)
                .sum::<f64>();
        sigmoid(z)
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(-m))`, stable for any margin.
fn log_loss(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

/// Why no model could be fitted.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Only one class in the labels.
    #[error("the training set holds only one class")]
    SingleClass,
    /// The solver failed.
    #[error("the L-BFGS solver failed: {0}")]
    Solver(String),
}

struct Problem<'a> {
    /// Row-major, `dim` columns.
    x: &'a [f32],
    dim: usize,
    /// +1 / -1.
    y: Vec<f64>,
    /// Class weights per sample, divided by their sum.
    s: Vec<f64>,
    /// 1 / (C * sum of weights).
    l2: f64,
}

impl Problem<'_> {
    fn margins<'a>(&'a self, p: &'a [f64]) -> impl Iterator<Item = (usize, f64)> + 'a {
        let (w, b) = p.split_at(self.dim);
        let b = b[0];
        self.x.chunks_exact(self.dim).enumerate().map(move |(i, row)| {
            let z: f64 = b + row.iter().zip(w).map(|(a, w)| f64::from(*a) * w).sum::<f64>();
            (i, self.y[i] * z)
        })
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let data: f64 = self.margins(p).map(|(i, m)| self.s[i] * log_loss(m)).sum();
        let norm: f64 = p[..self.dim].iter().map(|w| w * w).sum();
        Ok(data + 0.5 * self.l2 * norm)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let mut g = vec![0.0; self.dim + 1];
        let coefficients: Vec<(usize, f64)> = self
            .margins(p)
            .map(|(i, m)| (i, -self.s[i] * self.y[i] * sigmoid(-m)))
            .collect();
        for (i, c) in coefficients {
            let row = &self.x[i * self.dim..(i + 1) * self.dim];
            for (gj, a) in g.iter_mut().zip(row) {
                *gj += c * f64::from(*a);
            }
            g[self.dim] += c;
        }
        for (gj, w) in g.iter_mut().zip(&p[..self.dim]) {
            *gj += self.l2 * w;
        }
        Ok(g)
    }
}

/// Fits on `x` (row-major, `dim` columns, one row per label) with labels
/// true = positive. `tolerance` bounds the gradient norm at convergence.
pub fn fit(
    x: &[f32],
    dim: usize,
    labels: &[bool],
    c: f64,
    max_iter: u64,
    tolerance: f64,
) -> Result<Model, FitError> {
    let n = labels.len();
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == n {
        return Err(FitError::SingleClass);
    }
    // class_weight="balanced": n_samples / (n_classes * count of the class).
    let weight = |count: usize| n as f64 / (2.0 * count as f64);
    let (w_pos, w_neg) = (weight(positives), weight(n - positives));
    let raw: Vec<f64> = labels.iter().map(|l| if *l { w_pos } else { w_neg }).collect();
    let sum: f64 = raw.iter().sum();
    let problem = Problem {
        x,
        dim,
        y: labels.iter().map(|l| if *l { 1.0 } else { -1.0 }).collect(),
        s: raw.iter().map(|s| s / sum).collect(),
        l2: 1.0 / (c * sum),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(tolerance)
        .map_err(|e| FitError::Solver(e.to_string()))?;
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(vec![0.0; dim + 1]).max_iters(max_iter))
        .run()
        .map_err(|e| FitError::Solver(e.to_string()))?;
    let state = result.state();
    let converged = !matches!(
        state.get_termination_status(),
        TerminationStatus::Terminated(TerminationReason::MaxItersReached)
    );
    let best = state
        .get_best_param()
        .or(state.get_param())
        .cloned()
        .ok_or_else(|| FitError::Solver("no solution".into()))?;
    Ok(Model {
        intercept: best[dim],
        weights: best[..dim].to_vec(),
        iterations: state.get_iter(),
        converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_clusters_and_weights_classes() {
        // Two positives near (1, 0), eight negatives near (-1, 0).
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..10 {
            let sign = if i < 2 { 1.0 } else { -1.0 };
            x.extend([sign + 0.1 * i as f32, 0.05 * i as f32]);
            y.push(i < 2);
        }
        let model = fit(&x, 2, &y, 1.0, 1000, 1e-10).unwrap();
        assert!(model.converged);
        assert!(model.probability(&[1.0, 0.0]) > 0.5);
        assert!(model.probability(&[-1.0, 0.0]) < 0.5);
        // At the optimum the gradient vanishes: balanced weights make the
        // weighted residuals of both classes sum to zero (intercept condition).
        let sum: f64 = (0..10)
            .map(|i| {
                let p = model.probability(&x[2 * i..2 * i + 2]);
                let w = if y[i] { 10.0 / 4.0 } else { 10.0 / 16.0 };
                w * (p - if y[i] { 1.0 } else { 0.0 })
            })
            .sum();
        assert!(sum.abs() < 1e-6, "{sum}");
    }

    #[test]
    fn one_class_is_refused() {
        assert!(matches!(
            fit(&[1.0, 2.0], 1, &[true, true], 1.0, 10, 1e-8),
            Err(FitError::SingleClass)
        ));
    }
}
