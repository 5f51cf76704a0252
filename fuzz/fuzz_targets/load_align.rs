//! Fuzz target: arbitrary bytes through photo decoding and face alignment.
//!
//! The bytes are decoded as a photo (`imageio::decode_photo`, with limits scaled down so
//! one input stays fast), and whatever decodes is run through the detector, the fit, the
//! warp and paste-back. Errors are fine; a panic, an abort or running out of memory is a
//! finding. Needs the detector from `scripts/setup.sh` (found from the repository root).
#![no_main]

use std::sync::OnceLock;

use latentface::align::{AlignSettings, Aligner, FaceChoice, Template};
use latentface::imageio::{decode_photo, PhotoLimits};
use latentface::model::{Device, RuntimeOptions};
use libfuzzer_sys::fuzz_target;

fn aligner() -> &'static Aligner {
    static A: OnceLock<Aligner> = OnceLock::new();
    A.get_or_init(|| {
        let settings = AlignSettings {
            choice: FaceChoice::All,
            ..AlignSettings::default()
        };
        let runtime = RuntimeOptions {
            device: Device::Cpu,
            threads: Some(1),
            ..RuntimeOptions::default()
        };
        Aligner::new(&settings, Template::UTKFACE, &runtime)
            .expect("face detector (run scripts/setup.sh; run the fuzzer from fuzz/)")
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = PhotoLimits {
        max_file_bytes: 4 << 20,
        max_side: 4096,
        max_pixels: 4_000_000,
        max_alloc: 64 << 20,
    };
    let Ok(photo) = decode_photo(data, "fuzz-input", &limits) else {
        return;
    };
    let mut warnings = Vec::new();
    if let Ok(faces) = aligner().align(&photo.image, "fuzz-input", 32, &mut warnings) {
        for f in faces {
            let _ = latentface::align::paste_into(&photo.image, &f.crop, &f.record);
        }
    }
});
