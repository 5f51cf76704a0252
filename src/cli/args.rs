//! The command line as clap sees it: plain data. The job commands take their job's spec
//! (`jobs::spec`) as their arguments, so a command line and a manifest entry are one
//! type; validation happens when the spec becomes a job (`KindSpec::into_job`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::jobs::spec::{
    defaults, AlignSpec, AnomalySpec, DecodeSpec, EditSpec, EncodeSpec, FaceOpts, FamilySpec,
    GenerateSpec, ImputeSpec, InterpolateSpec, InvertSpec, MapSpec, MetadataOpts, MorphSpec,
    PictureOpts, ReconstructSpec, SampleSpec, SourceOpts,
};
use crate::model::Device;

#[derive(Debug, Parser)]
#[command(
    name = "latentface",
    version,
    about = "Put faces into a generator's latent space (ONNX Runtime)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes; shown under their own heading in each `--help`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Model bundle folder [default: $LATENTFACE_BUNDLE, else onnx/default/ found next to
    /// the executable or the current folder, walking up]
    #[arg(long, global = true, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// ONNX Runtime shared library [default: $LATENTFACE_ORT_LIB, else
    /// .deps/onnxruntime/libonnxruntime.so.1.31.1 as installed by scripts/setup.sh]
    #[arg(long, global = true, value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// Execution provider: auto (CUDA if it loads, else CPU), cpu, or cuda (error if unavailable)
    #[arg(
        long,
        global = true,
        default_value = "auto",
        value_name = "auto|cpu|cuda"
    )]
    pub device: Device,
    /// Intra-op threads per ONNX Runtime session [default: ONNX Runtime's choice]
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Let ONNX Runtime's idle worker threads spin-wait (faster on an idle machine,
    /// much slower when the cores are shared)
    #[arg(long, global = true)]
    pub ort_spin: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a face from a seed (z ~ N(0,1), truncation psi) or from a latent file
    Generate(GenerateSpec),
    /// Invert photos into latent codes; writes latent, sidecar, reconstruction, comparison and report per photo
    Invert(InvertSpec),
    /// Show (and check) what a model bundle holds, its directions included; with FILE, the
    /// provenance metadata of a picture or video latentface wrote
    Info(InfoArgs),
    /// Time inversion steps at several batch sizes
    Bench(BenchArgs),
    /// Children of two parents (photos or latents, one or several each): blended genes, age/gender, siblings, a family sheet; or --predict-partner
    Family(FamilyArgs),
    /// Move faces (photos or latents) along the bundle's directions (age, gender, any named
    /// one); sweep one into a labelled sheet and a GIF/MP4; age, gender and identity per output
    Edit(EditSpec),
    /// A GIF, MP4 or PNG-frame morph through two or more faces (photos or latents)
    Morph(MorphSpec),
    /// Run a manifest of jobs of any kind (invert, family, morph, vae_encode, ...): concurrent, resumable, shardable
    Batch(BatchArgs),
    /// A family tree from a manifest of people (photos or latents) and unions over
    /// generations: each union a family folder, grandchildren from children's codes, one
    /// tree.png with faces and tree.json; resumable
    Tree(TreeArgs),
    /// The VAE: encode, decode, reconstruct, interpolate, sample, anomaly, impute, map
    Vae(VaeArgs),
    /// Find the face in photos and cut crops aligned to the model's template (+ the transform as JSON)
    Align(AlignSpec),
    /// Judge the model on a folder of real faces it never saw: inversion, samples, edits, families (identity, age, gender)
    Eval(EvalArgs),
    /// The family, edit and morph studio in the browser, and its HTTP API (loopback by default)
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    pub addr: std::net::SocketAddr,
    /// Allow an address that is not loopback (there is no login: anyone who can reach it can use it)
    #[arg(long)]
    pub allow_remote: bool,
    /// Inversions, morphs and family sheets that run at once
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers: usize,
    /// Such jobs that may wait for a worker; more get 503 with Retry-After
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub queue: usize,
    /// Longest one of those jobs may run, in seconds
    #[arg(long, default_value_t = 300, value_name = "S")]
    pub job_timeout: u64,
    /// Inversion steps per photo when a request does not say (60: a photo pair in about
    /// 2 s on a 2-core CPU, ~28 dB; the page also offers 150 and 300)
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub steps: usize,
}

#[derive(Debug, Args)]
#[command(
    about = "The VAE: encode, decode, reconstruct, interpolate, sample, anomaly scores, fill missing pixels, latent map",
    long_about = "The bundle's VAE (graphs vae_encoder, vae_decoder, vae_decoder_grad): a second latent \
space that is instant where GAN inversion is slow, gives each image a likelihood score, and can fill in \
missing pixels. Photos of another size are centre-cropped and resized to the model's resolution."
)]
pub struct VaeArgs {
    #[command(subcommand)]
    pub command: VaeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VaeCommand {
    /// Photos -> posterior mean and log-variance: DIR/NAME_mu.npy, NAME_logvar.npy ([1, vae_z_dim]) + NAME_vae.json
    Encode(EncodeSpec),
    /// A latent .npy ([vae_z_dim] or [1, vae_z_dim], e.g. NAME_mu.npy) -> a PNG
    Decode(DecodeSpec),
    /// Photos -> reconstructions: NAME_recon.png, NAME_compare.png (photo | recon), report.json (PSNR, SSIM, neg-ELBO)
    Reconstruct(ReconstructSpec),
    /// Frames between two photos or latents -> .gif, .mp4, a folder of PNG frames, or a .png contact sheet
    Interpolate(InterpolateSpec),
    /// Random faces from the prior: sample_NNNN.png + .npy, and grid.png
    Sample(SampleSpec),
    /// Anomaly scores (negative ELBO, Monte-Carlo reconstruction probability) with percentile and verdict per image
    Anomaly(AnomalyArgs),
    /// Fill a hole in a photo: the face is aligned, z optimised on the visible pixels of the crop, and the fill pasted back into the photo (only the hole changes)
    Impute(ImputeSpec),
    /// A 2-D PCA map of a folder's latents with thumbnails (coloured by age for UTKFace names), and a decoded grid
    Map(MapSpec),
}

/// `family`: the job, and the two positional parents of the classic form
/// `family A B -o DIR` (they add to `--a` and `--b`).
#[derive(Debug, Args)]
pub struct FamilyArgs {
    /// Parent A then parent B: photos (inverted first) or latents (.npy/.npz); more
    /// sources per parent with --a / --b
    #[arg(value_name = "PARENT", num_args = 0..=2)]
    pub parents: Vec<PathBuf>,
    #[command(flatten)]
    pub spec: FamilySpec,
}

impl FamilyArgs {
    /// The spec, with the positional parents first in parent A's and B's sources.
    pub fn spec(&self) -> FamilySpec {
        let mut s = self.spec.clone();
        let mut pos = self.parents.iter();
        if let Some(a) = pos.next() {
            s.parent_a.insert(0, a.clone());
        }
        if let Some(b) = pos.next() {
            s.parent_b.insert(0, b.clone());
        }
        s
    }
}

/// `vae anomaly`: the job, and how much to print.
#[derive(Debug, Args)]
pub struct AnomalyArgs {
    #[command(flatten)]
    pub spec: AnomalySpec,
    /// Print one line per image (default: only when there are at most 50)
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every job is done (or skipped as already done); \
1 when a job failed or the run could not start; 130 when interrupted (Ctrl-C, SIGTERM): \
run the same command again to resume."
)]
pub struct BatchArgs {
    /// Manifest listing the jobs: TOML (.toml) or JSON; see docs/batch.md
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Jobs run at the same time
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_name = "N")]
    pub jobs: usize,
    /// Redo jobs that are already done (by default a job whose .done marker matches
    /// and whose outputs all exist is skipped)
    #[arg(long)]
    pub force: bool,
    /// Run only shard I of N (0 <= I < N): the jobs whose id hashes to I; N machines
    /// with I = 0..N-1 split the manifest exactly
    #[arg(long, value_name = "I/N", value_parser = crate::jobs::batch::parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// Folder of the per-job .done markers [default: MANIFEST_STEM.state/ next to the manifest]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Summary JSON [default: STATE_DIR/summary.json, or summary-shard-I-of-N.json]
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Latent cache folder for photo inputs, unless a job names its own
    /// [default: ~/.cache/latentface/latents]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Do not read or write the latent cache (unless a job names its own)
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the tree is done (steps already done are skipped); 1 on \
an error (it names the manifest entry); 130 when interrupted (Ctrl-C, SIGTERM): run the same \
command again to resume. Manifest format and outputs: docs/tree.md."
)]
pub struct TreeArgs {
    /// Tree manifest, TOML (.toml) or JSON: [[people]] (name, photo or latent) and
    /// [[unions]] (a, b, names or children, and family options: mix, coarse, middle, fine,
    /// crossover, age, gender, mutation, diversity, seed, traits); see docs/tree.md
    #[arg(value_name = "TREE")]
    pub manifest: PathBuf,
    /// Output folder: unions/ID/ (each union's family folder, as `family` writes it),
    /// people/ (the photo people's codes), tree.png, tree.json, state/ (resume markers)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Redo every step, even those whose markers say they are done
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub sources: SourceOpts,
    /// Pictures of the tree sheet and of every union's family (a union's own `size` /
    /// `native` is used when this is not given)
    #[command(flatten)]
    pub picture: PictureOpts,
    #[command(flatten)]
    pub meta: MetadataOpts,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A PNG, GIF or MP4: print its provenance metadata (synthetic, program, bundle, job
    /// parameters) instead of describing the bundle
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of real face photos the model never trained on (e.g. the toolchain's
    /// `export_heldout --resolution 200 --n 500` output)
    #[arg(value_name = "FOLDER")]
    pub folder: PathBuf,
    /// Write the figures as JSON here too
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Use at most this many photos (in name order)
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub limit: usize,
    /// Generated faces of the samples block (compared with half of the real faces)
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub samples: usize,
    /// Truncation of the samples: w = w_avg + psi (w - w_avg), in [-3, 3]
    #[arg(long, default_value_t = 1.0)]
    pub psi: f32,
    /// Inversion steps per photo
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Inversion: first steps in W before W+ (as `invert --w-steps`)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub w_steps: usize,
    /// Inversion: penalty on the W+ rows' spread (as `invert --spread-weight`)
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    pub spread_weight: f32,
    /// Inversion: the optimiser (as `invert --optimizer`)
    #[arg(long, default_value_t = crate::invert::Optimizer::Lbfgs, value_enum, value_name = "adam|lbfgs")]
    pub optimizer: crate::invert::Optimizer,
    /// Photos per graph call while inverting
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch_size: usize,
    /// Inverted faces moved along each direction in the edits block
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub edit_faces: usize,
    /// Random parent pairs in the families block
    #[arg(long, default_value_t = 25, value_name = "N")]
    pub pairs: usize,
    /// Children per pair
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub children: usize,
    /// The families' sibling diversity (as `family --diversity`)
    #[arg(long, default_value_t = defaults::diversity(), value_name = "D")]
    pub diversity: f32,
    /// The families' mutation strength (as `family --mutation`)
    #[arg(long, default_value_t = defaults::mutation(), value_name = "S")]
    pub mutation: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub faces: FaceOpts,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed steps per batch size
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps per batch size
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Batch sizes to time
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch_sizes: Vec<usize>,
    /// Steps of a full inversion, to state seconds per image
    #[arg(long, default_value_t = 300)]
    pub inversion_steps: usize,
    /// Reference figures printed next to ours as ratios: our --json format, or the
    /// report.json of onnx/latentface_train/project_reference.py (PyTorch); repeatable
    #[arg(long, value_name = "FILE")]
    pub reference_json: Vec<PathBuf>,
    /// Write our figures as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// What to time: invert (optimisation steps), morph (frames/s rendering a morph at
    /// each --batch-sizes), family (a batch of --family-jobs family jobs end to end),
    /// quality (LPIPS and identity against seconds per image on --faces, per --budgets)
    #[arg(long, value_delimiter = ',', default_value = "invert", value_parser = ["invert", "morph", "family", "quality"])]
    pub suite: Vec<String>,
    /// FLOP count of one gradient step (JSON of `python -m latentface_train.flops`): also
    /// measure the CPU's peak (ONNX Runtime MatMul) and print GFLOP/s and % of peak
    #[arg(long, value_name = "FILE")]
    pub flops: Option<PathBuf>,
    /// MatMul sizes n (n x n times n x n) of the peak measurement; the best counts
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,512,1024",
        value_name = "N,..."
    )]
    pub peak_sizes: Vec<usize>,
    /// quality: folder of aligned face crops at the bundle's resolution (export_heldout)
    #[arg(long, value_name = "DIR")]
    pub faces: Option<PathBuf>,
    /// quality: use the first N faces of --faces (0 = all)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub faces_limit: usize,
    /// quality: step budgets, each a full inversion with --steps = budget
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "20,40,60,100,150,300",
        value_name = "K,..."
    )]
    pub budgets: Vec<usize>,
    /// quality: reference projector report with a curve (project_reference.py --curve); repeatable
    #[arg(long, value_name = "FILE")]
    pub reference_curve: Vec<PathBuf>,
    /// quality: name of our curves in the table (e.g. a schedule variant)
    #[arg(long, default_value = "latentface")]
    pub label: String,
    /// quality: the optimiser (as invert --optimizer)
    #[arg(long, default_value_t = crate::invert::Optimizer::Lbfgs, value_enum, value_name = "adam|lbfgs")]
    pub optimizer: crate::invert::Optimizer,
    /// quality: peak learning rate (as invert --lr)
    #[arg(long, default_value_t = defaults::lr())]
    pub lr: f64,
    /// quality: plateau patience in steps, 0 = never stop early (as invert --patience)
    #[arg(long, default_value_t = defaults::patience())]
    pub patience: usize,
    /// quality: initial latent-noise strength (as invert --noise-strength)
    #[arg(long, default_value_t = defaults::noise_strength())]
    pub noise_strength: f64,
    /// quality: fraction of the steps of the learning rate's cosine ramp-down
    #[arg(long, default_value_t = crate::invert::Schedule::default().rampdown)]
    pub rampdown: f64,
    /// quality: the start (as invert --init)
    #[arg(long, default_value_t = crate::invert::InitStrategy::Auto, value_name = "auto|mean|encoder")]
    pub init: crate::invert::InitStrategy,
    /// Frames of the benchmark morph
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub morph_frames: usize,
    /// Family jobs in the family benchmark (4 children each, 2 at a time)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub family_jobs: usize,
}

impl Command {
    /// The job spec of a job command (`None` for info, bench, batch, tree, eval and serve;
    /// a tree's steps carry their own provenance).
    pub fn job_spec(&self) -> Option<crate::jobs::spec::JobSpec> {
        use crate::jobs::spec::JobSpec as J;
        Some(match self {
            Command::Generate(s) => J::Generate(s.clone()),
            Command::Invert(s) => J::Invert(s.clone()),
            Command::Family(a) => J::Family(a.spec()),
            Command::Morph(s) => J::Morph(s.clone()),
            Command::Edit(s) => J::Edit(s.clone()),
            Command::Align(s) => J::Align(s.clone()),
            Command::Vae(v) => match &v.command {
                VaeCommand::Encode(s) => J::VaeEncode(s.clone()),
                VaeCommand::Decode(s) => J::VaeDecode(s.clone()),
                VaeCommand::Reconstruct(s) => J::VaeReconstruct(s.clone()),
                VaeCommand::Interpolate(s) => J::VaeInterpolate(s.clone()),
                VaeCommand::Sample(s) => J::VaeSample(s.clone()),
                VaeCommand::Anomaly(a) => J::VaeAnomaly(a.spec.clone()),
                VaeCommand::Impute(s) => J::VaeImpute(s.clone()),
                VaeCommand::Map(s) => J::VaeMap(s.clone()),
            },
            Command::Info(_)
            | Command::Bench(_)
            | Command::Batch(_)
            | Command::Tree(_)
            | Command::Eval(_)
            | Command::Serve(_) => return None,
        })
    }
}
