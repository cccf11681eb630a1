//! Decoding an input's audio to 16 kHz mono 16-bit PCM WAV, the format the ASR worker reads.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{Control, Position, drive, make};
use super::source::{self, Branch, Seek as SeekMode, SourceSpec};
use super::{MediaError, PartFile, TimeRange, probe};

pub const ASR_SAMPLE_RATE: u32 = 16_000;

/// The WAV that was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AudioWav {
    pub sample_rate: u32,
    pub samples: u64,
    pub duration: f64,
}

pub(crate) fn extract_blocking(input: &Path, out: &Path, ctl: &Control) -> Result<AudioWav, MediaError> {
    let info = probe::probe_blocking(input)?;
    if info.audio.is_none() {
        return Err(MediaError::NoAudio);
    }
    let range = TimeRange::new(0.0, info.duration);
    let part = PartFile::new(out);
    let writer = Arc::new(Mutex::new(WavWriter::create(part.path())?));

    let convert = make("audioconvert")?;
    // Dither adds random noise where the samples lose bits; speech for the ASR needs none, and
    // the same input must give the same WAV (the same transcript, the same clips) every run.
    convert.set_property_from_str("dithering", "none");
    let resample = make("audioresample")?;
    let caps = make("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", ASR_SAMPLE_RATE as i32)
            .field("channels", 1)
            .field("layout", "interleaved")
            .build(),
    );
    let sink_writer = writer.clone();
    let mut first = true;
    let branch = Branch {
        elements: vec![convert, resample, caps],
        on_sample: Box::new(move |sample| {
            let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            let mut wav = sink_writer.lock().expect("wav lock");
            // The WAV's zero is the input's zero: sound that starts later (MPEG-TS, where the
            // picture leads) is preceded by silence, so word times match the picture's.
            if std::mem::take(&mut first)
                && let Some(lead) = buffer.pts().map(|p| p.nseconds() as f64 / 1e9 - range.start)
                && lead > 0.001
            {
                let silence = vec![0u8; (lead * ASR_SAMPLE_RATE as f64).round() as usize * 2];
                wav.write(&silence).map_err(|e| {
                    tracing::error!(error = %e, "cannot write wav");
                    gst::FlowError::Error
                })?;
            }
            wav.write(map.as_slice()).map_err(|e| {
                tracing::error!(error = %e, "cannot write wav");
                gst::FlowError::Error
            })?;
            Ok(gst::FlowSuccess::Ok)
        }),
        on_eos: Box::new(|| {}),
    };
    let position = Position::default();
    let spec = SourceSpec { path: input, range, seek: SeekMode::Whole, parse_only: false, sparse: false, video: None, audio: Some(branch) };
    let pipeline = source::start(spec, ctl, &position)?;
    drive(&[&pipeline], ctl, &position, range.span_ns())?;
    drop(pipeline);

    let samples = writer.lock().expect("wav lock").finish().map_err(|e| MediaError::io(part.path(), e))?;
    part.commit(out).map_err(|e| MediaError::io(out, e))?;
    Ok(AudioWav { sample_rate: ASR_SAMPLE_RATE, samples, duration: samples as f64 / ASR_SAMPLE_RATE as f64 })
}

/// Writes a WAV of no samples: the audio stage's output for a source without an audio track, so
/// the stages after it see that there is nothing to hear.
pub fn write_empty_wav(out: &Path) -> Result<AudioWav, MediaError> {
    let part = PartFile::new(out);
    WavWriter::create(part.path())?.finish().map_err(|e| MediaError::io(part.path(), e))?;
    part.commit(out).map_err(|e| MediaError::io(out, e))?;
    Ok(AudioWav { sample_rate: ASR_SAMPLE_RATE, samples: 0, duration: 0.0 })
}

/// A minimal mono 16-bit PCM WAV writer: header written up front, sizes patched on finish.
struct WavWriter {
    file: BufWriter<File>,
    data_bytes: u64,
}

impl WavWriter {
    fn create(path: &Path) -> Result<Self, MediaError> {
        let file = File::create(path).map_err(|e| MediaError::io(path, e))?;
        let mut w = Self { file: BufWriter::new(file), data_bytes: 0 };
        w.header(0).map_err(|e| MediaError::io(path, e))?;
        Ok(w)
    }

    fn header(&mut self, data_bytes: u32) -> std::io::Result<()> {
        let byte_rate = ASR_SAMPLE_RATE * 2;
        let f = &mut self.file;
        f.write_all(b"RIFF")?;
        f.write_all(&(36 + data_bytes).to_le_bytes())?;
        f.write_all(b"WAVEfmt ")?;
        f.write_all(&16u32.to_le_bytes())?;
        f.write_all(&1u16.to_le_bytes())?; // PCM
        f.write_all(&1u16.to_le_bytes())?; // mono
        f.write_all(&ASR_SAMPLE_RATE.to_le_bytes())?;
        f.write_all(&byte_rate.to_le_bytes())?;
        f.write_all(&2u16.to_le_bytes())?; // block align
        f.write_all(&16u16.to_le_bytes())?; // bits per sample
        f.write_all(b"data")?;
        f.write_all(&data_bytes.to_le_bytes())
    }

    fn write(&mut self, pcm: &[u8]) -> std::io::Result<()> {
        self.data_bytes += pcm.len() as u64;
        self.file.write_all(pcm)
    }

    /// Patches the sizes into the header and returns the sample count.
    fn finish(&mut self) -> std::io::Result<u64> {
        let data = u32::try_from(self.data_bytes).map_err(|_| std::io::Error::other("audio longer than a wav holds"))?;
        self.file.seek(SeekFrom::Start(0))?;
        self.header(data)?;
        self.file.flush()?;
        Ok(self.data_bytes / 2)
    }
}
