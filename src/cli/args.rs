//! The flags, as clap sees them (the "low-level" form; see `cli::config`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::latent::LatentSpace;
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
    Generate(GenerateArgs),
    /// Invert photos into latent codes; writes latent, sidecar, reconstruction, comparison and report per photo
    Invert(InvertArgs),
    /// Show (and check) what a model bundle holds
    Info,
    /// Time inversion steps at several batch sizes
    Bench(BenchArgs),
    /// Children of two parents (photos or latents): blended genes, age/gender, siblings, a family sheet
    Family(super::latent_jobs::FamilyArgs),
    /// A GIF, MP4 or PNG-frame morph through two or more faces (photos or latents)
    Morph(super::latent_jobs::MorphArgs),
    /// Run a manifest of invert/family/morph jobs: concurrent, resumable, shardable
    Batch(super::latent_jobs::BatchArgs),
    /// The VAE: encode, decode, reconstruct, interpolate, sample, anomaly, impute, map
    Vae(super::vae::VaeArgs),
    /// Find the face in photos and cut crops aligned to the model's template (+ the transform as JSON)
    Align(AlignArgs),
    /// Judge the model on a folder of real faces it never saw: inversion, samples, edits, families (identity, age, gender)
    Eval(EvalArgs),
    /// The family and morph studio in the browser, and its HTTP API (loopback by default)
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
    #[arg(long, default_value_t = crate::jobs::spec::defaults::diversity(), value_name = "D")]
    pub diversity: f32,
    /// The families' mutation strength (as `family --mutation`)
    #[arg(long, default_value_t = crate::jobs::spec::defaults::mutation(), value_name = "S")]
    pub mutation: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub faces: FaceArgs,
}

/// How photos are aligned before the model sees them (invert, family, morph).
#[derive(Debug, Args, Clone, Default)]
pub struct FaceArgs {
    /// The photos are ready aligned face crops: centre-crop and resize only, no face detection
    #[arg(long)]
    pub no_align: bool,
    /// Use the N-th face counted from the left of the picture, from 1 [default: the largest]
    #[arg(long, value_name = "N", conflicts_with = "no_align")]
    pub face: Option<usize>,
    /// Face detector (RetinaFace ONNX) [default: $LATENTFACE_DETECTOR, else
    /// .deps/face_detector/retinaface_mnet025.onnx as installed by scripts/setup.sh]
    #[arg(long, value_name = "FILE", conflicts_with = "no_align")]
    pub detector: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AlignArgs {
    /// Photos (PNG or JPEG, any size and orientation)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder: NAME.png (the crop) and NAME.json (face, landmarks, transform) per photo
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Crop side in pixels [default: the bundle's resolution if a bundle is found, else 256]
    #[arg(long, value_name = "PX")]
    pub size: Option<u32>,
    /// Use the N-th face counted from the left of the picture, from 1 [default: the largest]
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub face: Option<usize>,
    /// Crop every face: NAME_face1.png, NAME_face2.png, ... (from the left)
    #[arg(long)]
    pub all: bool,
    /// Face detector (RetinaFace ONNX) [default: $LATENTFACE_DETECTOR, else
    /// .deps/face_detector/retinaface_mnet025.onnx as installed by scripts/setup.sh]
    #[arg(long, value_name = "FILE")]
    pub detector: Option<PathBuf>,
    /// Smallest detector confidence that counts as a face
    #[arg(long, default_value_t = 0.8, value_name = "0..1")]
    pub min_score: f32,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["seed", "latent"]))]
pub struct GenerateArgs {
    /// Seed of z ~ N(0, 1)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Truncation: w = w_avg + psi (w - w_avg), in [-3, 3] (only with --seed)
    #[arg(long, default_value_t = 0.7, requires = "seed")]
    pub psi: f32,
    /// Latent file (.npy [1,num_ws,w_dim] / [1,w_dim], or StyleGAN .npz with key `w`)
    #[arg(long, value_name = "FILE")]
    pub latent: Option<PathBuf>,
    /// Output PNG
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write the latent used (.npy + .json sidecar)
    #[arg(long, value_name = "FILE")]
    pub save_latent: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InvertArgs {
    /// Photos (PNG or JPEG): the face is found and aligned to the model's template
    /// (with --no-align, photos are centre-cropped and resized instead)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    #[command(flatten)]
    pub faces: FaceArgs,
    /// Invert every face of each photo (outputs NAME_face1..., from the left)
    #[arg(long, conflicts_with_all = ["face", "no_align"])]
    pub all: bool,
    /// Also write NAME_pasted.png: the reconstruction pasted back into the original photo
    #[arg(long, conflicts_with = "no_align")]
    pub paste_back: bool,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Optimisation steps
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Latent space optimised: w (one vector for all layers) or w+ (one per layer)
    #[arg(long, default_value = "w+", value_name = "w|w+")]
    pub space: LatentSpace,
    /// With --space w+: optimise in W for the first N steps, then in W+
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub w_steps: usize,
    /// Photos inverted together in one graph call per step
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Seed of the latent-noise streams (each photo's stream also depends on its content)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Peak learning rate
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Initial latent-noise strength (times w_std), decaying to 0 at 75% of the steps
    #[arg(long, default_value_t = 0.05)]
    pub noise_strength: f64,
    /// Weight of the pixel (masked MSE) loss
    #[arg(long, default_value_t = 1.0)]
    pub pixel_weight: f32,
    /// Weight of the LPIPS loss
    #[arg(long, default_value_t = 1.0)]
    pub lpips_weight: f32,
    /// W+ only: weight of a penalty on the rows' spread around their mean (keeps the code
    /// near W, where edits and blends behave; 0 = free W+)
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    pub spread_weight: f32,
    /// Start: auto (encoder graph if the bundle has one, else w_avg), mean, encoder
    #[arg(long, default_value = "auto", value_parser = ["auto", "mean", "encoder"])]
    pub init: String,
    /// Mask image (white = pixel counts): once for all photos, or once per photo
    #[arg(long, value_name = "FILE")]
    pub mask: Vec<PathBuf>,
    /// Stop a photo early when its loss has not improved for N steps (0 = never)
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub patience: usize,
    /// Relative loss improvement that counts as progress for --patience
    #[arg(long, default_value_t = 1e-3)]
    pub min_improvement: f64,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    pub fail_fast: bool,
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
    /// each --batch-sizes), family (a batch of --family-jobs family jobs end to end)
    #[arg(long, value_delimiter = ',', default_value = "invert", value_parser = ["invert", "morph", "family"])]
    pub suite: Vec<String>,
    /// Frames of the benchmark morph
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub morph_frames: usize,
    /// Family jobs in the family benchmark (4 children each, 2 at a time)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub family_jobs: usize,
}
