//! Frame sequences -> animated GIF, H.264 MP4, or a folder of PNG frames.
//!
//! Every command that makes a sequence of pictures (`morph`, `vae interpolate`, ...) hands
//! its frames to a [`FrameWriter`]; the container is chosen by the output path:
//! `*.gif` (gif crate, one NeuQuant palette per frame, delays in 1/100 s), `*.mp4`
//! (H.264 from the OpenH264 encoder compiled from source, muxed by the mp4 crate), or a
//! path without extension, which becomes a folder `frame_00000.png, ...`.
//!
//! Writing is streaming (frames are encoded as they arrive, so a long morph never holds
//! all its frames) and atomic: everything goes into a temporary sibling
//! (`.NAME.tmp-PID-N`) that is renamed over the final name only by [`FrameWriter::finish`].
//! An error, a panic or a kill leaves at most that hidden temporary, never a truncated
//! video under the real name; a writer dropped without `finish` removes its temporary.
//!
//! Frame-rate notes: GIF delays are whole centiseconds, so the GIF plays at
//! `100 / round(100 / fps)` frames per second (30 fps -> 33.3); MP4 timing is exact
//! (90 kHz timescale). H.264 4:2:0 needs even sizes: an odd width or height is padded by
//! repeating the last column or row.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;

use crate::fsutil;

/// The container an output path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Gif,
    Mp4,
    /// A folder of `frame_NNNNN.png`.
    PngDir,
}

impl MediaKind {
    /// `.gif` -> GIF, `.mp4` -> MP4, no extension (or an existing folder) -> PNG folder;
    /// any other extension is an error naming the path.
    pub fn from_path(path: &Path) -> Result<MediaKind> {
        if path.is_dir() {
            return Ok(MediaKind::PngDir);
        }
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("gif") => Ok(MediaKind::Gif),
            Some("mp4") => Ok(MediaKind::Mp4),
            None => Ok(MediaKind::PngDir),
            Some(other) => bail!(
                "output {}: unknown extension `.{other}` (use .gif, .mp4, or a folder name without extension for PNG frames)",
                path.display()
            ),
        }
    }
}

/// How the sequence is played back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaOptions {
    /// Frames per second (> 0).
    pub fps: f64,
    /// GIF: repeat forever (else play once). Ignored by MP4 and PNG folders.
    pub repeat: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            fps: 25.0,
            repeat: true,
        }
    }
}

/// What [`FrameWriter::finish`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MediaSummary {
    pub path: PathBuf,
    pub kind: MediaKind,
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    /// The frame rate the file really plays at (see module docs for GIF rounding).
    pub fps: f64,
}

/// Name of frame `i` inside a PNG folder.
pub fn png_frame_name(i: usize) -> String {
    format!("frame_{i:05}.png")
}

enum Sink {
    Gif {
        encoder: gif::Encoder<BufWriter<File>>,
        delay_cs: u16,
    },
    Mp4(Box<Mp4Sink>),
    PngDir,
}

/// A streaming, atomic writer of one frame sequence (see module docs).
pub struct FrameWriter {
    sink: Option<Sink>,
    kind: MediaKind,
    path: PathBuf,
    tmp: PathBuf,
    width: u32,
    height: u32,
    fps: f64,
    frames: usize,
    /// NeuQuant sampling (1 = every pixel, best palette; 30 = fastest).
    gif_speed: i32,
    /// The provenance record written into the file (taken at `create`).
    record: Option<std::sync::Arc<crate::provenance::Provenance>>,
}

impl FrameWriter {
    /// Starts a sequence of `width` x `height` frames at `path` (kind from the extension).
    pub fn create(path: &Path, width: u32, height: u32, opts: MediaOptions) -> Result<FrameWriter> {
        let kind = MediaKind::from_path(path)?;
        if width == 0 || height == 0 {
            bail!("output {}: frames must not be empty", path.display());
        }
        if !(opts.fps.is_finite() && opts.fps > 0.0 && opts.fps <= 1000.0) {
            bail!(
                "output {}: fps must be in (0, 1000], got {}",
                path.display(),
                opts.fps
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
        if kind != MediaKind::PngDir && path.is_dir() {
            bail!("output {} is a folder", path.display());
        }
        let tmp = fsutil::temp_sibling(path)?;
        let record = crate::provenance::current();
        let (sink, fps) = match kind {
            MediaKind::Gif => {
                if width > u16::MAX as u32 || height > u16::MAX as u32 {
                    bail!("output {}: GIF frames are at most 65535 px", path.display());
                }
                let file = File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let mut encoder =
                    gif::Encoder::new(BufWriter::new(file), width as u16, height as u16, &[])
                        .map_err(|e| anyhow!("GIF encoder for {}: {e}", path.display()))?;
                encoder
                    .set_repeat(if opts.repeat {
                        gif::Repeat::Infinite
                    } else {
                        gif::Repeat::Finite(0)
                    })
                    .map_err(|e| anyhow!("GIF encoder for {}: {e}", path.display()))?;
                if let Some(r) = &record {
                    crate::provenance::write_gif_comment(&mut encoder, r)?;
                }
                let delay_cs = (100.0 / opts.fps).round().clamp(1.0, u16::MAX as f64) as u16;
                (Sink::Gif { encoder, delay_cs }, 100.0 / delay_cs as f64)
            }
            MediaKind::Mp4 => {
                let file = File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let sink = Mp4Sink::new(BufWriter::new(file), width, height, opts.fps)
                    .with_context(|| format!("H.264 encoder for {}", path.display()))?;
                (Sink::Mp4(Box::new(sink)), opts.fps)
            }
            MediaKind::PngDir => {
                if path.exists() && !path.is_dir() {
                    bail!("output {} exists and is not a folder", path.display());
                }
                check_frame_dir(path)?;
                fs::create_dir(&tmp)
                    .with_context(|| format!("cannot create folder {}", tmp.display()))?;
                (Sink::PngDir, opts.fps)
            }
        };
        Ok(FrameWriter {
            sink: Some(sink),
            kind,
            path: path.to_path_buf(),
            tmp,
            width,
            height,
            fps,
            frames: 0,
            // Full-quality palettes for the small frames these models make; sample
            // pixels on big frames, where quantisation time would dominate.
            gif_speed: ((width as u64 * height as u64) / (128 * 128)).clamp(1, 10) as i32,
            record,
        })
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Appends one frame (must have the size given to [`FrameWriter::create`]).
    pub fn push(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.width() != self.width || frame.height() != self.height {
            bail!(
                "output {}: frame {} is {}x{}, the sequence is {}x{}",
                self.path.display(),
                self.frames,
                frame.width(),
                frame.height(),
                self.width,
                self.height
            );
        }
        let i = self.frames;
        let path = self.path.clone();
        match self.sink.as_mut().expect("sink present until finish") {
            Sink::Gif { encoder, delay_cs } => {
                let mut f = gif::Frame::from_rgb_speed(
                    self.width as u16,
                    self.height as u16,
                    frame.as_raw(),
                    self.gif_speed,
                );
                f.delay = *delay_cs;
                encoder
                    .write_frame(&f)
                    .map_err(|e| anyhow!("writing GIF frame {i} of {}: {e}", path.display()))?;
            }
            Sink::Mp4(m) => m
                .push(frame)
                .with_context(|| format!("encoding MP4 frame {i} of {}", path.display()))?,
            Sink::PngDir => {
                let png = crate::provenance::encode_png(frame, self.record.as_deref())?;
                fsutil::write_bytes_atomic(&self.tmp.join(png_frame_name(i)), &png)?;
            }
        }
        self.frames += 1;
        Ok(())
    }

    /// Finishes the file and moves it under its final name (replacing an older one).
    pub fn finish(mut self) -> Result<MediaSummary> {
        if self.frames == 0 {
            bail!("output {}: no frames to write", self.path.display());
        }
        let sink = self.sink.take().expect("sink present until finish");
        let path = self.path.clone();
        match sink {
            Sink::Gif { encoder, .. } => {
                let mut w = encoder
                    .into_inner()
                    .map_err(|e| anyhow!("finishing GIF {}: {e}", path.display()))?;
                w.flush()?;
                sync_and_rename(w, &self.tmp, &path)?;
            }
            Sink::Mp4(m) => {
                let w = m
                    .finish()
                    .with_context(|| format!("finishing MP4 {}", path.display()))?;
                let file = w.into_inner().map_err(|e| e.into_error())?;
                if let Some(r) = &self.record {
                    crate::provenance::append_mp4_record(&self.tmp, r)
                        .with_context(|| format!("writing the metadata of {}", path.display()))?;
                }
                sync_and_rename(BufWriter::new(file), &self.tmp, &path)?;
            }
            Sink::PngDir => replace_frame_dir(&self.tmp, &path)?,
        }
        Ok(MediaSummary {
            path,
            kind: self.kind,
            frames: self.frames,
            width: self.width,
            height: self.height,
            fps: self.fps,
        })
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            // Not finished: drop the encoder (closing the file) and remove the temporary.
            if self.tmp.is_dir() {
                let _ = fs::remove_dir_all(&self.tmp);
            } else {
                let _ = fs::remove_file(&self.tmp);
            }
        }
    }
}

fn sync_and_rename(w: BufWriter<File>, tmp: &Path, path: &Path) -> Result<()> {
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Puts the finished frame folder `tmp` at `path`. An existing `path` is replaced only
/// when it holds nothing but frames (an earlier run's output), never a folder of other files.
/// Fails when `path` is a folder holding anything but frames (checked before rendering
/// and again before replacing).
fn check_frame_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        return Ok(());
    }
    let foreign = fs::read_dir(path)
        .with_context(|| format!("cannot read folder {}", path.display()))?
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !(n.starts_with("frame_") && n.ends_with(".png"))
        });
    if let Some(e) = foreign {
        bail!(
            "output folder {} already holds {} (not a frame): not replacing it; choose another output",
            path.display(),
            e.file_name().to_string_lossy()
        );
    }
    Ok(())
}

fn replace_frame_dir(tmp: &Path, path: &Path) -> Result<()> {
    if path.exists() {
        if let Err(e) = check_frame_dir(path) {
            let _ = fs::remove_dir_all(tmp);
            return Err(e);
        }
        let old = fsutil::temp_sibling(path)?;
        fs::rename(path, &old)
            .with_context(|| format!("cannot move the old {} aside", path.display()))?;
        if let Err(e) = fs::rename(tmp, path) {
            let _ = fs::rename(&old, path);
            return Err(e).with_context(|| format!("cannot move frames to {}", path.display()));
        }
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    }
    Ok(())
}

/// Writes a whole sequence at once (see [`FrameWriter`]).
pub fn write_frames(path: &Path, frames: &[RgbImage], opts: MediaOptions) -> Result<MediaSummary> {
    let first = frames
        .first()
        .ok_or_else(|| anyhow!("output {}: no frames to write", path.display()))?;
    let mut w = FrameWriter::create(path, first.width(), first.height(), opts)?;
    for f in frames {
        w.push(f)?;
    }
    w.finish()
}

// ---------------------------------------------------------------- H.264 / MP4

/// MP4 timescale (ticks per second): 90 kHz, the video convention.
const MP4_TIMESCALE: u32 = 90_000;

struct Mp4Sink {
    encoder: openh264::encoder::Encoder,
    yuv: openh264::formats::YUVBuffer,
    width: u32,
    height: u32,
    /// Even-sized RGB scratch (odd sizes are padded).
    rgb: Vec<u8>,
    out: Option<BufWriter<File>>,
    writer: Option<mp4::Mp4Writer<BufWriter<File>>>,
    fps: f64,
    frame_index: u64,
    /// The last encoded frame, written when the next arrives (its duration may grow when
    /// the encoder skips a frame).
    pending: Option<mp4::Mp4Sample>,
}

/// Splits an Annex B byte stream (start codes `00 00 01` / `00 00 00 01`) into NAL units
/// without start codes or trailing zero bytes.
pub fn annexb_nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = if k + 1 < starts.len() {
            starts[k + 1] - 3
        } else {
            stream.len()
        };
        while end > s && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            nals.push(&stream[s..end]);
        }
    }
    nals
}

impl Mp4Sink {
    fn new(out: BufWriter<File>, width: u32, height: u32, fps: f64) -> Result<Mp4Sink> {
        use openh264::encoder::{
            BitRate, Complexity, EncoderConfig, FrameRate, IntraFramePeriod, QpRange,
            RateControlMode,
        };
        let (ew, eh) = (width.div_ceil(2) * 2, height.div_ceil(2) * 2);
        // Generous bit rate: these are short clips of small frames; quality matters more.
        let bps = ((ew as f64 * eh as f64 * fps * 0.5) as u32).clamp(200_000, 20_000_000);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(false)
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(14, 26))
            .complexity(Complexity::High)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                (fps * 2.0).round().max(1.0) as u32,
            ));
        let encoder = openh264::encoder::Encoder::with_api_config(
            openh264::OpenH264API::from_source(),
            config,
        )
        .map_err(|e| anyhow!("cannot start the OpenH264 encoder: {e}"))?;
        Ok(Mp4Sink {
            encoder,
            yuv: openh264::formats::YUVBuffer::new(ew as usize, eh as usize),
            width,
            height,
            rgb: vec![0; (ew * eh * 3) as usize],
            out: Some(out),
            writer: None,
            fps,
            frame_index: 0,
            pending: None,
        })
    }

    fn tick(&self, frame: u64) -> u64 {
        (frame as f64 * MP4_TIMESCALE as f64 / self.fps).round() as u64
    }

    fn push(&mut self, frame: &RgbImage) -> Result<()> {
        let (ew, eh) = (self.width.div_ceil(2) * 2, self.height.div_ceil(2) * 2);
        for y in 0..eh {
            for x in 0..ew {
                let p = frame.get_pixel(x.min(self.width - 1), y.min(self.height - 1));
                let o = ((y * ew + x) * 3) as usize;
                self.rgb[o..o + 3].copy_from_slice(&p.0);
            }
        }
        self.yuv.read_rgb8(openh264::formats::RgbSliceU8::new(
            &self.rgb,
            (ew as usize, eh as usize),
        ));
        let bitstream = self
            .encoder
            .encode(&self.yuv)
            .map_err(|e| anyhow!("OpenH264: {e}"))?;
        let annexb = bitstream.to_vec();
        let index = self.frame_index;
        self.frame_index += 1;
        let start = self.tick(index);
        let end = self.tick(index + 1);
        let nals = annexb_nal_units(&annexb);
        if nals.is_empty() {
            // Skipped frame: the previous picture stays on screen longer.
            if let Some(p) = &mut self.pending {
                p.duration += (end - start) as u32;
            }
            return Ok(());
        }
        let mut sps = None;
        let mut pps = None;
        let mut sample = Vec::with_capacity(annexb.len() + 16);
        let mut is_sync = false;
        for nal in nals {
            match nal[0] & 0x1f {
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                t => {
                    if t == 5 {
                        is_sync = true;
                    }
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        if self.writer.is_none() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                bail!("the encoder's first frame carries no SPS/PPS parameter sets");
            };
            let out = self
                .out
                .take()
                .expect("output present until the track starts");
            let config = mp4::Mp4Config {
                major_brand: str::parse("isom").map_err(|e| anyhow!("{e:?}"))?,
                minor_version: 512,
                compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                    .iter()
                    .map(|b| str::parse(b).map_err(|e| anyhow!("{e:?}")))
                    .collect::<Result<_>>()?,
                timescale: 1000,
            };
            let mut writer =
                mp4::Mp4Writer::write_start(out, &config).map_err(|e| anyhow!("MP4: {e}"))?;
            writer
                .add_track(&mp4::TrackConfig {
                    track_type: mp4::TrackType::Video,
                    timescale: MP4_TIMESCALE,
                    language: "und".into(),
                    media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                        width: u16::try_from(self.width)
                            .map_err(|_| anyhow!("MP4 frames are at most 65535 px wide"))?,
                        height: u16::try_from(self.height)
                            .map_err(|_| anyhow!("MP4 frames are at most 65535 px high"))?,
                        seq_param_set: sps,
                        pic_param_set: pps,
                    }),
                })
                .map_err(|e| anyhow!("MP4: {e}"))?;
            self.writer = Some(writer);
        }
        if sample.is_empty() {
            return Ok(()); // parameter sets only
        }
        self.flush_pending()?;
        self.pending = Some(mp4::Mp4Sample {
            start_time: start,
            duration: (end - start) as u32,
            rendering_offset: 0,
            is_sync,
            bytes: mp4::Bytes::from(sample),
        });
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if let Some(s) = self.pending.take() {
            self.writer
                .as_mut()
                .expect("track started before the first sample")
                .write_sample(1, &s)
                .map_err(|e| anyhow!("MP4: {e}"))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BufWriter<File>> {
        self.flush_pending()?;
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| anyhow!("the encoder produced no picture"))?;
        writer.write_end().map_err(|e| anyhow!("MP4: {e}"))?;
        let mut w = writer.into_writer();
        w.flush()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, w: u32, h: u32) -> Vec<RgbImage> {
        (0..n)
            .map(|i| {
                RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([(x * 8 + i as u32 * 20) as u8, (y * 8) as u8, 128])
                })
            })
            .collect()
    }

    #[test]
    fn kind_from_extension() {
        assert_eq!(
            MediaKind::from_path(Path::new("a.GIF")).unwrap(),
            MediaKind::Gif
        );
        assert_eq!(
            MediaKind::from_path(Path::new("a.mp4")).unwrap(),
            MediaKind::Mp4
        );
        assert_eq!(
            MediaKind::from_path(Path::new("frames")).unwrap(),
            MediaKind::PngDir
        );
        let e = format!(
            "{:#}",
            MediaKind::from_path(Path::new("x.avi")).unwrap_err()
        );
        assert!(e.contains("x.avi") && e.contains(".avi"), "{e}");
    }

    #[test]
    fn annexb_split_strips_start_codes_and_padding() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 9, 9,
        ];
        let n = annexb_nal_units(&s);
        assert_eq!(
            n,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9, 9][..]]
        );
    }

    #[test]
    fn png_dir_replaces_only_frame_folders_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seq");
        let s = write_frames(&out, &frames(3, 8, 6), MediaOptions::default()).unwrap();
        assert_eq!((s.frames, s.kind), (3, MediaKind::PngDir));
        write_frames(&out, &frames(2, 8, 6), MediaOptions::default()).unwrap();
        assert_eq!(fs::read_dir(&out).unwrap().count(), 2);
        fs::write(out.join("notes.txt"), b"mine").unwrap();
        let e = format!(
            "{:#}",
            write_frames(&out, &frames(2, 8, 6), MediaOptions::default()).unwrap_err()
        );
        assert!(e.contains("notes.txt"), "{e}");
        assert!(out.join("notes.txt").is_file());
        // Only `seq` remains in the parent: no temporaries.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unfinished_writer_removes_its_temporary_and_sizes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.gif");
        {
            let mut w = FrameWriter::create(&out, 8, 6, MediaOptions::default()).unwrap();
            w.push(&frames(1, 8, 6)[0]).unwrap();
            assert!(w.push(&frames(1, 6, 6)[0]).is_err());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn gif_and_mp4_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let g = write_frames(
            &dir.path().join("a.gif"),
            &frames(4, 16, 16),
            MediaOptions {
                fps: 20.0,
                repeat: true,
            },
        )
        .unwrap();
        assert_eq!(g.frames, 4);
        assert!((g.fps - 20.0).abs() < 1e-9);
        // Odd size: padded internally for H.264, the track keeps the real size.
        let m = write_frames(
            &dir.path().join("a.mp4"),
            &frames(5, 17, 15),
            MediaOptions::default(),
        )
        .unwrap();
        assert_eq!(m.frames, 5);
        let bytes = fs::read(dir.path().join("a.mp4")).unwrap();
        let r =
            mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
        let t = r.tracks().values().next().unwrap();
        assert_eq!((t.width(), t.height(), t.sample_count()), (17, 15, 5));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
