"""Input-kind fixtures for clipmill: the talk's first seconds in every common codec and container,
phone footage (rotated, portrait), a 4K 60 fps source, and YouTube-style separate streams.

Called from gen_media.py's generate() with its module (for make_clip, the encoders' fragments and
the talk's face path). Each file is a few seconds of the talk (same face path, speech and sync
mark at 2.5 s as talk.mp4 from t=0), mostly at 1280x720 so the slower encoders (x265, vp9enc,
libaom's av1enc) take seconds, not minutes.

Outputs (in DIR), each with a truth file `NAME.truth.json` in talk.truth.json's format, scaled to
the picture a viewer sees (so a rotated file's truth is the upright landscape talk):
  in_h264_aac.mov     4 s, 1280x720 H.264 + AAC in QuickTime (qtmux)
  in_h264_mp3.ts      4 s, 1280x720 H.264 + MP3 in MPEG-TS
  in_hevc_aac.mp4     4 s, 1280x720 HEVC + AAC in MP4
  in_hevc_ac3.mkv     4 s, 1280x720 HEVC + AC-3 in Matroska
  in_vp9_opus.webm    4 s, 1280x720 VP9 + Opus in WebM
  in_av1_opus.mkv     4 s, 1280x720 AV1 (libaom) + Opus in Matroska
  in_rotated.mp4      4 s, the 1280x720 talk stored rotated a quarter turn counter-clockwise
                      (coded 720x1280) with a tkhd rotation matrix of a quarter turn clockwise
                      (GStreamer's image-orientation=rotate-90), as a phone held sideways
                      records it; H.264 + AAC
  in_portrait.mp4     3 s, 608x1080 (9:16) window of the 1080p talk at x=400..1008; H.264 + AAC
  in_uhd60.mp4        3 s, 3840x2160 60 fps H.264 + AAC (the 1080p30 talk, each frame twice)
  in_dash_vp9.webm    the video of in_vp9_opus.webm alone (stream copy), as YouTube serves it
  in_dash_av1.mkv     the video of in_av1_opus.mkv alone (stream copy)
  in_dash_opus.webm   4 s of the talk's audio alone as Opus in WebM
  in_dash_vorbis.webm 4 s of the talk's audio alone as Vorbis in WebM
"""

import json
import os
from pathlib import Path

SECONDS = 4
HD = (1280, 720)

OUTPUTS = []
for _name in ["in_h264_aac.mov", "in_h264_mp3.ts", "in_hevc_aac.mp4", "in_hevc_ac3.mkv",
              "in_vp9_opus.webm", "in_av1_opus.mkv", "in_rotated.mp4", "in_portrait.mp4",
              "in_uhd60.mp4"]:
    OUTPUTS += [_name, _name.rsplit(".", 1)[0] + ".truth.json"]
OUTPUTS += ["in_dash_vp9.webm", "in_dash_av1.mkv", "in_dash_opus.webm", "in_dash_vorbis.webm"]


def scaled(size):
    return f"videoscale ! video/x-raw,width={size[0]},height={size[1]}".split()


# No B-frames: GStreamer 1.22's mp4mux writes no edit list for their delay, which would put
# the picture 2 frames behind the sound.
H265 = "x265enc speed-preset=ultrafast qp=28 key-int-max=60 option-string=bframes=0 ! h265parse".split()
VP9 = ("vp9enc deadline=1 cpu-used=8 end-usage=cq cq-level=30 target-bitrate=3000000 keyframe-max-dist=60 threads=2 "
       "row-mt=true").split()
AV1 = ("av1enc usage-profile=realtime cpu-used=9 end-usage=vbr target-bitrate=1500 "
       "keyframe-max-dist=60 threads=2 row-mt=true ! av1parse").split()
MP3 = "lamemp3enc target=bitrate bitrate=128 cbr=true ! mpegaudioparse".split()
AC3 = "avenc_ac3 bitrate=192000 ! ac3parse".split()
OPUS = "opusenc bitrate=96000".split()


def scale_truth(truth, sx, sy=None, offset=(0, 0), size=None):
    """The truth of a clip whose frames were scaled by (sx, sy) after shifting by -offset."""
    sy = sx if sy is None else sy
    out = dict(truth)
    w, h = size or (round(truth["width"] * sx), round(truth["height"] * sy))
    out.update(width=w, height=h)
    out["face_size"] = [round(truth["face_size"][0] * sx), round(truth["face_size"][1] * sy)]
    out["face_centers"] = [[round((x - offset[0]) * sx), round((y - offset[1]) * sy)]
                           for x, y in truth["face_centers"]]
    return out


def gst_copy(src, demux_pad, dest, mux):
    """Copies one stream of `src` into its own file (no re-encoding)."""
    partial = dest.with_name(f".{dest.name}.partial")
    return [["filesrc", f"location={src}", "!", "matroskademux", "name=d", f"d.{demux_pad}", "!",
             "queue", "!", mux, "!", "filesink", f"location={partial}"]], partial


def generate(out, tmp, g):
    bg, face, cache = g.make_background(), g.make_face(), {}
    sx = HD[0] / g.W

    def clip(name, video, audio, mux, seconds=SECONDS):
        truth = g.make_clip(out / name, seconds, tmp, cache, bg, face, video, audio, mux)
        return truth

    for name, video, audio, mux in [
        ("in_h264_aac.mov", g.H264, g.AAC, "qtmux"),
        ("in_h264_mp3.ts", g.H264, MP3, "mpegtsmux"),
        ("in_hevc_aac.mp4", H265, g.AAC, "mp4mux"),
        ("in_hevc_ac3.mkv", H265, AC3, "matroskamux"),
        ("in_vp9_opus.webm", VP9, OPUS, "webmmux"),
        ("in_av1_opus.mkv", AV1, OPUS, "matroskamux"),
    ]:
        truth = clip(name, [*scaled(HD), "!", *video], audio, mux)
        g.write_json(out / truth_name(name), scale_truth(truth, sx))

    # Phone held sideways: the sensor's rows run along the long side, the matrix says how to turn.
    rotated = [*scaled(HD), "!", "videoflip", "video-direction=90l", "!", *g.H264]
    truth = clip("in_rotated.mp4", rotated, g.AAC, "mp4mux")
    rotate_video_track(out / "in_rotated.mp4")
    g.write_json(out / "in_rotated.truth.json", scale_truth(truth, sx))

    left = 400
    portrait = (608, 1080)
    crop = ["videocrop", f"left={left}", f"right={g.W - left - portrait[0]}", "!", *g.H264]
    truth = clip("in_portrait.mp4", crop, g.AAC, "mp4mux", seconds=3)
    g.write_json(out / "in_portrait.truth.json", scale_truth(truth, 1.0, offset=(left, 0), size=portrait))

    uhd = [*scaled((3840, 2160)), "!", "videorate", "!", "video/x-raw,framerate=60/1", "!",
           *"x264enc speed-preset=ultrafast pass=quant quantizer=26 key-int-max=120 threads=2".split(),
           "!", "h264parse"]
    truth = clip("in_uhd60.mp4", uhd, g.AAC, "mp4mux", seconds=3)
    uhd_truth = scale_truth(truth, 2.0)
    uhd_truth["fps"] = 60
    # Each 30 fps frame is shown twice: index the face path at 60 fps.
    uhd_truth["face_centers"] = [c for c in uhd_truth["face_centers"] for _ in (0, 1)]
    g.write_json(out / "in_uhd60.truth.json", uhd_truth)

    # YouTube-style separate streams: stream copies of the files above, plus Vorbis audio.
    for src, pad, dest, mux in [("in_vp9_opus.webm", "video_0", "in_dash_vp9.webm", "webmmux"),
                                ("in_av1_opus.mkv", "video_0", "in_dash_av1.mkv", "matroskamux")]:
        branches, partial = gst_copy(out / src, pad, out / dest, mux)
        g.gst_launch(branches)
        os.replace(partial, out / dest)
    clip("in_dash_opus.webm", None, OPUS, "webmmux")
    clip("in_dash_vorbis.webm", None, g.VORBIS, "webmmux")


def rotate_video_track(path):
    """Writes a quarter turn clockwise into the video track's tkhd matrix, as phones do.
    GStreamer 1.22's mp4mux ignores the image-orientation tag, so the box is patched in place:
    the matrix [0 1 0; -1 0 0; 0 0 1] (16.16 fixed point, w 2.30) that qtdemux reads as
    rotate-90."""
    data = bytearray(path.read_bytes())
    at = 0
    while (at := data.find(b"tkhd", at + 1)) > 0:
        assert data[at + 4] == 0, "version 0 tkhd"
        width = int.from_bytes(data[at + 80:at + 84], "big")
        if width:   # the video track (audio tracks have no size)
            matrix = [0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000]
            data[at + 44:at + 80] = b"".join(v.to_bytes(4, "big") for v in matrix)
            g_write = path.with_name(f".{path.name}.partial")
            g_write.write_bytes(data)
            os.replace(g_write, path)
            return
    raise SystemExit(f"{path}: no video tkhd")


def truth_name(name):
    return name.rsplit(".", 1)[0] + ".truth.json"


if __name__ == "__main__":
    import sys
    import tempfile
    import time
    sys.path.insert(0, str(Path(__file__).parent))
    import gen_media
    dest = Path(sys.argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gen_inputs-") as tmp:
        generate(dest, tmp, gen_media)
    print(json.dumps({f: (dest / f).stat().st_size for f in OUTPUTS}))
    print(f"{time.monotonic() - started:.1f} s")
