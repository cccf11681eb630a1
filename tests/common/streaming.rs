//! YouTube-style presentations of `talk.mp4` for yt-dlp to read over loopback HTTP: the 1080p
//! video and the audio as SEPARATE fragmented-MP4 streams (an init segment, then one `moof`+`mdat`
//! pair per segment), listed by a DASH MPD and by an HLS master playlist with an
//! `#EXT-X-MEDIA:TYPE=AUDIO` rendition. Next to them a muxed 360p stream (like YouTube's format
//! 18), so a selector that settles for a single file picks visibly the wrong picture.
//!
//! Made with gst-launch-1.0 (stream copy for the 1080p video and the audio; one small x264 encode
//! for the 360p stream) and cached under `target/fixtures/streaming`, remade when talk.mp4 changes.
//!
//! Files: `talk.mpd` (1080p video + audio + muxed 360p), `audio-only.mpd` (the audio alone),
//! `talk.m3u8` (master: video variant + audio group) with `video.m3u8` and `audio.m3u8`, and the
//! segments `{video,audio,muxed}-init.mp4`, `{video,audio,muxed}-N.m4s`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::http::{reply, serve};
use super::fixture;

/// One stream cut into segments.
struct Stream {
    name: &'static str,
    segments: usize,
}

/// The presentation folder, made once per process (and once per talk.mp4 across runs).
pub fn presentations() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let talk = fixture("talk.mp4");
        let dir = talk.parent().unwrap().join("streaming");
        let stamp = stamp_of(&talk);
        if std::fs::read_to_string(dir.join("source.stamp")).ok().as_deref() == Some(stamp.as_str()) {
            return dir;
        }
        // Built aside and renamed, so a concurrent test process never sees half a presentation.
        let tmp = dir.with_file_name(format!("streaming.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        build(&talk, &tmp);
        std::fs::write(tmp.join("source.stamp"), &stamp).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process renamed its copy first; it is made from the same talk.mp4.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// Serves the presentation folder on a loopback port, with the content types real servers send.
pub async fn serve_presentations() -> SocketAddr {
    let dir = presentations().to_path_buf();
    serve(move |path, _| {
        let file = dir.join(path.trim_start_matches('/').split('?').next().unwrap_or_default());
        async move {
            let kind = match file.extension().and_then(|e| e.to_str()) {
                Some("mpd") => "application/dash+xml",
                Some("m3u8") => "application/vnd.apple.mpegurl",
                _ => "video/mp4",
            };
            // The folder holds only generated files; `..` cannot appear in a parsed URL path.
            match std::fs::read(&file) {
                Ok(bytes) => reply(200, kind, bytes),
                Err(_) => reply(404, "text/plain", "not found"),
            }
        }
    })
    .await
}

fn stamp_of(talk: &Path) -> String {
    let meta = std::fs::metadata(talk).expect("talk.mp4");
    format!("{} {:?} v1", meta.len(), meta.modified().unwrap())
}

fn build(talk: &Path, dir: &Path) {
    let src = format!("filesrc location={} ! qtdemux name=q", talk.display());
    let frag = "mp4mux fragment-duration=2000 streamable=true";
    gst_launch(&format!("{src} q.video_0 ! h264parse ! {frag} ! filesink location={}", dir.join("video.fmp4").display()));
    gst_launch(&format!("{src} q.audio_0 ! aacparse ! {frag} ! filesink location={}", dir.join("audio.fmp4").display()));
    gst_launch(&format!(
        "{src} {frag} name=m ! filesink location={} \
         q.video_0 ! queue ! decodebin ! videoscale ! video/x-raw,width=640,height=360 \
         ! x264enc speed-preset=ultrafast key-int-max=60 bitrate=300 ! video/x-h264,profile=constrained-baseline \
         ! h264parse ! queue ! m. q.audio_0 ! queue ! aacparse ! m.",
        dir.join("muxed.fmp4").display()
    ));
    let video = Stream { name: "video", segments: split(dir, "video") };
    let audio = Stream { name: "audio", segments: split(dir, "audio") };
    let muxed = Stream { name: "muxed", segments: split(dir, "muxed") };
    let duration = super::truth("talk.truth.json").duration;

    let video_rep = representation(&video, "v1080", r#"bandwidth="400000" width="1920" height="1080" frameRate="30" codecs="avc1.42c028""#);
    let audio_rep = representation(&audio, "a128", r#"bandwidth="128000" audioSamplingRate="48000" codecs="mp4a.40.2""#);
    let muxed_rep = representation(&muxed, "m360", r#"bandwidth="420000" width="640" height="360" frameRate="30" codecs="avc1.42c01e,mp4a.40.2""#);
    let video_set = format!(r#"<AdaptationSet contentType="video" mimeType="video/mp4">{video_rep}</AdaptationSet>"#);
    let audio_set = format!(r#"<AdaptationSet contentType="audio" mimeType="audio/mp4" lang="en">{audio_rep}</AdaptationSet>"#);
    let muxed_set = format!(r#"<AdaptationSet contentType="video" mimeType="video/mp4">{muxed_rep}</AdaptationSet>"#);
    std::fs::write(dir.join("talk.mpd"), mpd(duration, &[&muxed_set, &video_set, &audio_set])).unwrap();
    std::fs::write(dir.join("audio-only.mpd"), mpd(duration, &[&audio_set])).unwrap();

    std::fs::write(dir.join("video.m3u8"), media_playlist(&video, duration)).unwrap();
    std::fs::write(dir.join("audio.m3u8"), media_playlist(&audio, duration)).unwrap();
    let master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=528000,RESOLUTION=1920x1080,FRAME-RATE=30,CODECS=\"avc1.42c028,mp4a.40.2\",AUDIO=\"aud\"\n\
        video.m3u8\n";
    std::fs::write(dir.join("talk.m3u8"), master).unwrap();
}

fn gst_launch(pipeline: &str) {
    // `timeout`: a pipeline that never reaches EOS must fail the test, not hang it.
    let status = Command::new("timeout")
        .args(["120", "gst-launch-1.0", "-q"])
        .args(pipeline.split_whitespace())
        .status()
        .expect("run gst-launch-1.0");
    assert!(status.success(), "gst-launch-1.0 failed: {pipeline}");
}

/// Cuts `NAME.fmp4` into `NAME-init.mp4` (everything before the first `moof`) and one
/// `NAME-N.m4s` per `moof`+`mdat` pair (N from 1); returns the number of segments.
fn split(dir: &Path, name: &str) -> usize {
    let bytes = std::fs::read(dir.join(format!("{name}.fmp4"))).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let mut size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if size == 1 {
            size = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
        }
        assert!(size >= 8, "bad box in {name}.fmp4");
        boxes.push((bytes[at + 4..at + 8].to_vec(), at, size));
        at += size;
    }
    let first = boxes.iter().position(|b| b.0 == b"moof").expect("a fragmented file");
    std::fs::write(dir.join(format!("{name}-init.mp4")), &bytes[..boxes[first].1]).unwrap();
    let mut n = 0;
    for pair in boxes[first..].windows(2).filter(|w| w[0].0 == b"moof" && w[1].0 == b"mdat") {
        n += 1;
        let (start, end) = (pair[0].1, pair[1].1 + pair[1].2);
        std::fs::write(dir.join(format!("{name}-{n}.m4s")), &bytes[start..end]).unwrap();
    }
    std::fs::remove_file(dir.join(format!("{name}.fmp4"))).unwrap();
    n
}

/// A representation listing its segments one by one (exact, whatever their durations).
fn representation(stream: &Stream, id: &str, attributes: &str) -> String {
    let segments: String = (1..=stream.segments).map(|i| format!(r#"<SegmentURL media="{}-{i}.m4s"/>"#, stream.name)).collect();
    format!(
        r#"<Representation id="{id}" {attributes}><SegmentList timescale="1000" duration="2000"><Initialization sourceURL="{}-init.mp4"/>{segments}</SegmentList></Representation>"#,
        stream.name
    )
}

fn mpd(duration: f64, sets: &[&str]) -> String {
    format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT{duration}S" minBufferTime="PT2S">
<Period id="0">{}</Period>
</MPD>
"#,
        sets.concat()
    )
}

/// A VOD media playlist over fMP4 segments; EXTINF is the mean segment length (yt-dlp only sums it).
fn media_playlist(stream: &Stream, duration: f64) -> String {
    let each = duration / stream.segments as f64;
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"{}-init.mp4\"\n",
        stream.name
    );
    for i in 1..=stream.segments {
        text.push_str(&format!("#EXTINF:{each:.3},\n{}-{i}.m4s\n", stream.name));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}
