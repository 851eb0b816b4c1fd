//! The sentence-transformers modules after the transformer, as `modules.json`
//! lists them: Pooling (one mode or several concatenated), then Dense and
//! Normalize modules in order, then the Matryoshka truncation of a model
//! table's smaller `dimension`. Built once at load ([`Chain::build`]) and
//! applied to every forward pass's token vectors ([`Chain::apply`]), by the
//! CPU and the candle engine alike.

use std::path::{Path, PathBuf};

use gemm::Parallelism;
use papersys_backend_core::{EmbedError, Pooling};
use serde::Deserialize;

use crate::config::{SentenceConfig, read_json};
use crate::kernels;
use crate::models::layers::{Linear, Staging};
use crate::weights::WeightsFile;

/// One pooling mode of sentence-transformers' `Pooling` module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// The first token's vector.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
    /// The average of the tokens.
    Mean,
    /// The sum of the tokens over the square root of their count.
    MeanSqrtLen,
    /// The average weighted by position: 1 for the first token, 2, ...
    WeightedMean,
    /// The last token's vector.
    LastToken,
}

impl PoolMode {
    /// The mode names of `pooling_mode`, in sentence-transformers' order.
    pub const NAMES: [&'static str; 6] = [
        "cls",
        "max",
        "mean",
        "mean_sqrt_len_tokens",
        "weightedmean",
        "lasttoken",
    ];

    /// The mode a `pooling_mode` name means.
    pub fn parse(name: &str) -> Option<PoolMode> {
        Some(match name {
            "cls" => PoolMode::Cls,
            "max" => PoolMode::Max,
            "mean" => PoolMode::Mean,
            "mean_sqrt_len_tokens" => PoolMode::MeanSqrtLen,
            "weightedmean" => PoolMode::WeightedMean,
            "lasttoken" => PoolMode::LastToken,
            _ => return None,
        })
    }

    /// How the recorded model identity names this mode.
    pub fn identity(self) -> Pooling {
        match self {
            PoolMode::Cls => Pooling::Cls,
            PoolMode::Max => Pooling::Max,
            PoolMode::Mean => Pooling::Mean,
            PoolMode::MeanSqrtLen => Pooling::MeanSqrtLen,
            PoolMode::WeightedMean => Pooling::WeightedMean,
            PoolMode::LastToken => Pooling::LastToken,
        }
    }
}

/// The activation after a Dense module's linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (sentence-transformers' default).
    Tanh,
    /// `torch.nn.GELU` (exact, erf-based).
    Gelu,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
}

impl Activation {
    /// The activation a config's `activation_function` class path names
    /// (`torch.nn.modules.activation.Tanh`, ...).
    fn parse(path: &str) -> Option<Activation> {
        Some(match path.rsplit('.').next().unwrap_or(path) {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "GELU" => Activation::Gelu,
            "ReLU" => Activation::Relu,
            "Sigmoid" => Activation::Sigmoid,
            _ => return None,
        })
    }

    fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Gelu => x.iter_mut().for_each(|v| *v = kernels::gelu_scalar(*v)),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Sigmoid => x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
    }
}

/// A Dense module as its directory describes it (weights not yet read).
#[derive(Clone, Debug, PartialEq)]
pub struct DenseSpec {
    /// The module's directory.
    pub dir: PathBuf,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Whether the linear layer has a bias.
    pub bias: bool,
    /// Applied after the linear layer.
    pub activation: Activation,
    /// Adds the input (projected when the widths differ) to the output.
    pub use_residual: bool,
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
    #[serde(default)]
    use_residual: bool,
    #[serde(default)]
    module_input_name: Option<String>,
    #[serde(default)]
    module_output_name: Option<String>,
}

fn yes() -> bool {
    true
}

impl DenseSpec {
    /// Reads `dir/config.json` of a Dense module.
    pub fn read(dir: &Path) -> Result<DenseSpec, EmbedError> {
        let path = dir.join("config.json");
        let file: DenseFile =
            read_json(&path)?.ok_or_else(|| EmbedError::Load(format!("{} is missing", path.display())))?;
        for name in [&file.module_input_name, &file.module_output_name]
            .into_iter()
            .flatten()
        {
            if name != "sentence_embedding" {
                return Err(EmbedError::Unsupported(format!(
                    "{}: a Dense module on {name:?} is not supported (only on \"sentence_embedding\")",
                    path.display()
                )));
            }
        }
        let activation = match &file.activation_function {
            None => Activation::Tanh,
            Some(name) => Activation::parse(name).ok_or_else(|| {
                EmbedError::Unsupported(format!(
                    "{}: activation_function {name:?} is not supported (supported: Identity, Tanh, GELU, ReLU, Sigmoid)",
                    path.display()
                ))
            })?,
        };
        Ok(DenseSpec {
            dir: dir.to_path_buf(),
            in_features: file.in_features,
            out_features: file.out_features,
            bias: file.bias,
            activation,
            use_residual: file.use_residual,
        })
    }
}

/// A module after Pooling, in `modules.json` order.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainModule {
    /// A projection with its activation.
    Dense(DenseSpec),
    /// L2 normalisation.
    Normalize,
}

struct Dense {
    linear: Linear,
    activation: Activation,
    /// The residual's projection (`None` when the widths agree).
    residual: Option<Linear>,
    use_residual: bool,
}

impl Dense {
    fn load(spec: &DenseSpec) -> Result<Dense, EmbedError> {
        let path = spec.dir.join("model.safetensors");
        if !path.is_file() {
            return Err(EmbedError::Load(format!(
                "{} is missing{}; only safetensors weights are read (convert the Dense module with \
                 sentence-transformers: `model.save(dir, safe_serialization=True)`)",
                path.display(),
                if spec.dir.join("pytorch_model.bin").is_file() {
                    " (the Dense module has pytorch_model.bin)"
                } else {
                    ""
                }
            )));
        }
        let file = WeightsFile::open(&path)?;
        let tensors = file.tensors()?;
        let (i, o) = (spec.in_features, spec.out_features);
        let linear = Linear::load(&tensors, "linear", i, o, spec.bias)?;
        let residual = if spec.use_residual && i != o {
            Some(Linear::load(&tensors, "residual", i, o, false)?)
        } else {
            None
        };
        Ok(Dense {
            linear,
            activation: spec.activation,
            residual,
            use_residual: spec.use_residual,
        })
    }

    /// `rows` ([n, in]) through the layer into `out` ([n, out]).
    fn forward(&self, rows: &[f32], out: &mut Vec<f32>) {
        let n = rows.len() / self.linear.inputs;
        out.clear();
        out.resize(n * self.linear.outputs, 0.0);
        // The module chain's Dense layers stay f32: nothing to stage.
        let mut staged = Staging::default();
        self.linear
            .matmul(rows, out, false, Parallelism::None, &mut staged);
        for row in out.chunks_exact_mut(self.linear.outputs) {
            if !self.linear.b.is_empty() {
                row.iter_mut().zip(&self.linear.b).for_each(|(r, b)| *r += b);
            }
            self.activation.apply(row);
        }
        if self.use_residual {
            match &self.residual {
                Some(projection) => projection.matmul(rows, out, true, Parallelism::None, &mut staged),
                None => out.iter_mut().zip(rows).for_each(|(o, x)| *o += x),
            }
        }
    }
}

enum Step {
    Dense(Box<Dense>),
    Normalize,
}

/// What turns one forward pass's token vectors into the stored vectors.
pub struct Chain {
    hidden: usize,
    modes: Vec<PoolMode>,
    /// Tokens at the start of each sequence left out of pooling (the
    /// prompt, with `include_prompt = false`).
    skip: usize,
    steps: Vec<Step>,
    /// Width kept (the Matryoshka dimension; `width` when not truncated).
    dimension: usize,
    /// Whether the vectors end normalised, so that truncated ones are
    /// normalised again.
    normalize: bool,
}

impl Chain {
    /// Builds the chain of `sentence` over token vectors of `hidden` values,
    /// reading Dense weights. `dimension` is the model table's: smaller than
    /// the chain's output it truncates (Matryoshka), larger it is an error.
    /// `prompt_tokens` is how many leading tokens the prompt takes (left
    /// out of pooling when the Pooling module says `include_prompt = false`).
    pub fn build(
        sentence: &SentenceConfig,
        hidden: usize,
        dimension: Option<usize>,
        prompt_tokens: usize,
        model: &str,
    ) -> Result<Chain, EmbedError> {
        let mut width = sentence.pool_modes.len() * hidden;
        let mut steps = Vec::with_capacity(sentence.after_pooling.len());
        for module in &sentence.after_pooling {
            match module {
                ChainModule::Normalize => steps.push(Step::Normalize),
                ChainModule::Dense(spec) => {
                    if spec.in_features != width {
                        return Err(EmbedError::Load(format!(
                            "{}: in_features {} does not match the {width} values the modules before it make",
                            spec.dir.join("config.json").display(),
                            spec.in_features
                        )));
                    }
                    steps.push(Step::Dense(Box::new(Dense::load(spec)?)));
                    width = spec.out_features;
                }
            }
        }
        let dimension = match dimension {
            None => width,
            Some(d) if d >= 1 && d <= width => d,
            Some(d) => {
                return Err(EmbedError::Load(format!(
                    "model {model} makes vectors of dimension {width}, but the model table's `dimension` says {d}; \
                     set dimension = {width} or less (a smaller one keeps the first values, as \
                     sentence-transformers' truncate_dim does for Matryoshka models)"
                )));
            }
        };
        Ok(Chain {
            hidden,
            modes: sentence.pool_modes.clone(),
            skip: if sentence.include_prompt { 0 } else { prompt_tokens },
            steps,
            dimension,
            normalize: sentence.normalize,
        })
    }

    /// Length of the stored vectors.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Pools `hidden` ([tokens, hidden], packed by `cu`), runs the modules
    /// and appends one `dimension()`-wide row per sequence to `out`.
    pub fn apply(&self, hidden: &[f32], cu: &[u32], out: &mut Vec<f32>) {
        let h = self.hidden;
        let n = cu.len().saturating_sub(1);
        let mut rows = vec![0.0; n * self.modes.len() * h];
        for (s, w) in cu.windows(2).enumerate() {
            let (start, end) = (w[0] as usize, w[1] as usize);
            let row = &mut rows[s * self.modes.len() * h..(s + 1) * self.modes.len() * h];
            for (m, mode) in self.modes.iter().enumerate() {
                pool_one(
                    hidden,
                    h,
                    start,
                    end,
                    self.skip,
                    *mode,
                    &mut row[m * h..(m + 1) * h],
                );
            }
        }
        let mut width = self.modes.len() * h;
        let mut next = Vec::new();
        for step in &self.steps {
            match step {
                Step::Normalize => rows.chunks_exact_mut(width).for_each(normalize),
                Step::Dense(dense) => {
                    dense.forward(&rows, &mut next);
                    std::mem::swap(&mut rows, &mut next);
                    width = dense.linear.outputs;
                }
            }
        }
        for row in rows.chunks_exact(width) {
            let base = out.len();
            out.extend_from_slice(&row[..self.dimension]);
            if self.dimension < width && self.normalize {
                normalize(&mut out[base..]);
            }
        }
    }
}

/// torch.nn.functional.normalize: v / max(‖v‖, 1e-12).
pub(crate) fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|r| *r /= norm);
}

/// One mode over the tokens `start..end` into `row`, the first `skip`
/// tokens left out as sentence-transformers leaves out an excluded prompt
/// (CLS then takes the first token after it; the last token stays the last;
/// weighted mean keeps each token's weight by its position).
pub(crate) fn pool_one(
    hidden: &[f32],
    h: usize,
    start: usize,
    end: usize,
    skip: usize,
    mode: PoolMode,
    row: &mut [f32],
) {
    let token = |t: usize| &hidden[t * h..(t + 1) * h];
    row.fill(0.0);
    if end == start {
        return;
    }
    let first = (start + skip).min(end);
    match mode {
        PoolMode::Cls => {
            let t = if end - start > skip { first } else { start };
            row.copy_from_slice(token(t));
        }
        PoolMode::LastToken => row.copy_from_slice(token(end - 1)),
        PoolMode::Max => {
            if first < end {
                row.fill(f32::NEG_INFINITY);
            }
            for t in first..end {
                row.iter_mut().zip(token(t)).for_each(|(r, v)| *r = r.max(*v));
            }
        }
        PoolMode::Mean | PoolMode::MeanSqrtLen | PoolMode::WeightedMean => {
            let mut total = 0.0f32;
            for t in first..end {
                let weight = match mode {
                    PoolMode::WeightedMean => (t - start + 1) as f32,
                    _ => 1.0,
                };
                total += weight;
                row.iter_mut().zip(token(t)).for_each(|(r, v)| *r += weight * v);
            }
            let total = total.max(1e-9);
            let divisor = if mode == PoolMode::MeanSqrtLen {
                total.sqrt()
            } else {
                total
            };
            row.iter_mut().for_each(|r| *r /= divisor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(modes: Vec<PoolMode>, after: Vec<ChainModule>) -> SentenceConfig {
        SentenceConfig {
            pooling: Pooling::Mean,
            normalize: matches!(after.last(), Some(ChainModule::Normalize)),
            max_seq_length: None,
            lowercase: false,
            document_prompt: None,
            query_prompt: None,
            transformer_path: String::new(),
            pool_modes: modes,
            include_prompt: true,
            after_pooling: after,
        }
    }

    /// Two sequences of width 2: three tokens, then one.
    const HIDDEN: [f32; 8] = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0, 10.0, 0.0];
    const CU: [u32; 3] = [0, 3, 4];

    fn run(chain: &Chain) -> Vec<f32> {
        let mut out = Vec::new();
        chain.apply(&HIDDEN, &CU, &mut out);
        out
    }

    #[test]
    fn each_mode_and_their_concatenation() {
        let cases = [
            (PoolMode::Cls, [1.0, 2.0, 10.0, 0.0]),
            (PoolMode::LastToken, [5.0, 6.0, 10.0, 0.0]),
            (PoolMode::Max, [5.0, 6.0, 10.0, 0.0]),
            (PoolMode::Mean, [3.0, 4.0 / 3.0, 10.0, 0.0]),
            (
                PoolMode::MeanSqrtLen,
                [9.0 / 3f32.sqrt(), 4.0 / 3f32.sqrt(), 10.0, 0.0],
            ),
            // Weights 1, 2, 3: (1 + 6 + 15) / 6, (2 - 8 + 18) / 6.
            (PoolMode::WeightedMean, [22.0 / 6.0, 2.0, 10.0, 0.0]),
        ];
        for (mode, want) in cases {
            let chain = Chain::build(&sentence(vec![mode], vec![]), 2, None, 0, "m").unwrap();
            let got = run(&chain);
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{mode:?}: {got:?} vs {want:?}");
            }
        }
        let both = Chain::build(
            &sentence(vec![PoolMode::Cls, PoolMode::Max], vec![]),
            2,
            None,
            0,
            "m",
        )
        .unwrap();
        assert_eq!(both.dimension(), 4);
        assert_eq!(run(&both), [1.0, 2.0, 5.0, 6.0, 10.0, 0.0, 10.0, 0.0]);
    }

    #[test]
    fn an_excluded_prompt_is_left_out_of_pooling() {
        let mut s = sentence(
            vec![PoolMode::Mean, PoolMode::Cls, PoolMode::WeightedMean],
            vec![],
        );
        s.include_prompt = false;
        let chain = Chain::build(&s, 2, None, 1, "m").unwrap();
        let got = run(&chain);
        // Tokens 2 and 3 (weights 2, 3); the one-token sequence keeps its
        // CLS, and its mean has nothing left: zeros, as the torch code's
        // clamp gives.
        let want = [
            4.0,
            1.0,
            3.0,
            -4.0,
            21.0 / 5.0,
            10.0 / 5.0,
            0.0,
            0.0,
            10.0,
            0.0,
            0.0,
            0.0,
        ];
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn matryoshka_truncates_and_renormalises_only_a_normalised_chain() {
        let plain = Chain::build(&sentence(vec![PoolMode::Cls], vec![]), 2, Some(1), 0, "m").unwrap();
        assert_eq!(run(&plain), [1.0, 10.0]);
        let unit = Chain::build(
            &sentence(vec![PoolMode::Cls], vec![ChainModule::Normalize]),
            2,
            Some(1),
            0,
            "m",
        )
        .unwrap();
        assert_eq!(unit.dimension(), 1);
        assert_eq!(run(&unit), [1.0, 1.0]);
        let e = Chain::build(&sentence(vec![PoolMode::Cls], vec![]), 2, Some(3), 0, "m")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dimension 2") && e.contains("says 3"), "{e}");
    }

    #[test]
    fn activations_follow_torch() {
        let mut x = [-1.0, 0.0, 2.0];
        Activation::Relu.apply(&mut x);
        assert_eq!(x, [0.0, 0.0, 2.0]);
        let mut x = [1.0f32];
        Activation::Gelu.apply(&mut x);
        assert!((x[0] - 0.841_344_7).abs() < 1e-6, "{}", x[0]);
        assert_eq!(
            Activation::parse("torch.nn.modules.linear.Identity"),
            Some(Activation::Identity)
        );
        assert_eq!(Activation::parse("my.Swish"), None);
    }
}
