//! The media engine's typed errors: what went wrong with an input, a range or a pipeline.

use std::path::PathBuf;

/// Everything `src/media` can fail with. Messages are lowercase and say what a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("input not found: {0}")]
    NotFound(PathBuf),
    #[error("input is not a media file gstreamer can read: {0}")]
    UnknownFormat(String),
    #[error("input is unreadable or truncated: {0}")]
    Unreadable(String),
    /// This machine's GStreamer has no decoder for a stream of the input.
    #[error("no decoder for {0} is installed (a gstreamer plugin is missing)")]
    NoDecoder(String),
    #[error("input has no video stream")]
    NoVideo,
    #[error("input has no audio stream")]
    NoAudio,
    /// More streams than any real source carries: decoding them all would tie up the machine.
    #[error("input has {0} streams; at most {max} are accepted", max = super::probe::MAX_STREAMS)]
    TooManyStreams(usize),
    #[error("input frames are {0}x{1}; at most {max} pixels a side are accepted", max = super::probe::MAX_FRAME_SIDE)]
    FrameTooLarge(u32, u32),
    #[error("input declares {declared:.0} s; the limit is {limit:.0} s")]
    TooLong { declared: f64, limit: f64 },
    /// The data stopped before the range's end: a file cut short whose header promises more.
    #[error("input data ends at or before {at:.3} s, short of the range's end at {end:.3} s (the file is cut short)")]
    DataEndsEarly { at: f64, end: f64 },
    #[error("invalid range {start:.3}..{end:.3} s: {reason}")]
    InvalidRange { start: f64, end: f64, reason: String },
    #[error("stream copy is not possible for these codecs: {0}")]
    CopyUnsupported(String),
    #[error("no usable {0} encoder is installed")]
    NoEncoder(&'static str),
    #[error("encoder {0:?} was requested but is not available")]
    EncoderUnavailable(String),
    #[error("pipeline could not be built: {0}")]
    Build(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("pipeline stalled: no progress for {0} s")]
    Stalled(u64),
    #[error("cancelled")]
    Cancelled,
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl MediaError {
    /// A stable, machine-readable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "input_not_found",
            Self::UnknownFormat(_) => "unknown_format",
            Self::Unreadable(_) => "unreadable_input",
            Self::NoDecoder(_) => "codec_unsupported",
            Self::NoVideo => "no_video_stream",
            Self::NoAudio => "no_audio_stream",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::FrameTooLarge(..) => "frame_too_large",
            Self::TooLong { .. } => "source_too_long",
            Self::DataEndsEarly { .. } => "input_cut_short",
            Self::InvalidRange { .. } => "invalid_range",
            Self::CopyUnsupported(_) => "copy_unsupported",
            Self::NoEncoder(_) | Self::EncoderUnavailable(_) => "encoder_unavailable",
            Self::Build(_) => "pipeline_build",
            Self::Decode(_) => "decode_failed",
            Self::Encode(_) => "encode_failed",
            Self::Stalled(_) => "stalled",
            Self::Cancelled => "cancelled",
            Self::Io { .. } => "io",
        }
    }

    /// Whether running the same step again may succeed. Bad input never does.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Stalled(_) | Self::Io { .. } | Self::Encode(_))
    }

    /// Whether the input itself is at fault (as opposed to the machine or the request).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_)
                | Self::UnknownFormat(_)
                | Self::Unreadable(_)
                | Self::NoDecoder(_)
                | Self::NoVideo
                | Self::NoAudio
                | Self::TooManyStreams(_)
                | Self::FrameTooLarge(..)
                | Self::TooLong { .. }
                | Self::DataEndsEarly { .. }
                | Self::Decode(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

impl From<gstreamer::glib::BoolError> for MediaError {
    fn from(e: gstreamer::glib::BoolError) -> Self {
        Self::Build(e.to_string())
    }
}
