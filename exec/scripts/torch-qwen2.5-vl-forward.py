#!/usr/bin/env python3
"""transformers' own Qwen2.5-VL forward, timed at the shapes `hetsim exec bench --model
qwen2.5-vl-7b` times, so that the bench can put the two side by side (`--against torch.json`,
issue 20's "not slower at any shape").

    python exec/scripts/torch-qwen2.5-vl-forward.py --out DIR [--gpu 0] [--iters 20] [--pass-iters 5]
    python exec/scripts/torch-qwen2.5-vl-forward.py --tiny --out DIR    # CPU, seconds

Builds Qwen2_5_VLForConditionalGeneration from the 7B config of
tests/fixtures/hf-configs/qwen2.5-vl-7b-instruct.json (random weights, bfloat16), once per
attention implementation ("eager", then "sdpa"; the first is freed before the second is built),
directly on the GPU. Per implementation it times, with CUDA events, the median of N passes after
a warm-up:

* decode: one step of batch 1 and of batch 64, 1,024 positions of context each in a DynamicCache
  (filled with random keys and values; cropped back to 1,024 after every step). The step is the
  one generate() runs: one new token per sequence, its text position given (a text-only prompt's
  three M-RoPE planes all equal the position, rope_deltas 0), logits of it and their argmax, as
  our decode includes the LM head and the argmax.
* prefill: one forward of 8 text-only prompts of 1,024 tokens ([8, 1024], cache on), logits of
  the last token only (logits_to_keep=1, as generate() asks and as ours computes), and argmax.
* encode: the vision tower and merger, model.model.visual(pixel_values, grid_thw=...), over 1 and
  16 images of 1280 × 720 (smart_resize: 1288 × 728, 52 × 92 patches, [4784·n, 1176] random
  pixel values, grid_thw [1, 52, 92] per image).

Writes DIR/torch.json: per pass and implementation the shape label (the same words as our
bench's rows), median seconds and iterations, or the error (out of memory, an implementation
this transformers does not have) instead of a time; plus the model name, decoder layers, device,
torch and transformers versions and the date. Progress goes to stderr.

--tiny runs the same passes on the CPU with the tiny config of `Qwen25VlConfig::tiny`
(exec/src/serve/model/qwen2_5_vl.rs) at small shapes, wall-clock timed: the test of this
script, and the source of exec/tests/fixtures/against_torch/torch-tiny.json.
"""

import argparse
import datetime
import gc
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import DynamicCache, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

REPO = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ("eager", "sdpa")

# Qwen25VlConfig::tiny (exec/src/serve/model/qwen2_5_vl.rs), in config.json's words.
TINY_CONFIG = {
    "model_type": "qwen2_5_vl",
    "hidden_act": "silu",
    "hidden_size": 256,
    "intermediate_size": 384,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1e6,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "vocab_size": 1000,
    # No generation here: the published ids (151643, 151645) lie outside this vocabulary.
    "bos_token_id": None,
    "eos_token_id": None,
    "vision_config": {
        "depth": 3,
        "hidden_act": "silu",
        "hidden_size": 160,
        "intermediate_size": 200,
        "num_heads": 2,
        "in_chans": 3,
        "out_hidden_size": 256,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    },
}
# Qwen25VlConfig::tiny's min_pixels and max_pixels.
TINY_PIXELS = (56 * 56, 28 * 28 * 256)


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def setup(tiny, gpu):
    """(model name, config dict, min/max pixels, device, the passes' shapes)."""
    if tiny:
        shapes = {
            "decode": [(1, 64), (4, 64)],
            "prefill": [(2, 64)],
            "encode": {"size": (224, 168), "images": [1, 2], "grid": (12, 16)},
        }
        return "qwen2.5-vl-tiny", TINY_CONFIG, TINY_PIXELS, torch.device("cpu"), shapes
    if not torch.cuda.is_available():
        # Exit code 2, as for bad input: the user must act.
        print("torch sees no CUDA device: the 7B passes need a GPU (--tiny runs on the CPU)", file=sys.stderr)
        sys.exit(2)
    fixtures = REPO / "tests/fixtures/hf-configs"
    config = json.loads((fixtures / "qwen2.5-vl-7b-instruct.json").read_text())
    pre = json.loads((fixtures / "preprocessor/qwen2.5-vl-7b-instruct.json").read_text())
    shapes = {
        # The points of exec/src/measure/bench_qwen.rs.
        "decode": [(1, 1024), (64, 1024)],
        "prefill": [(8, 1024)],
        "encode": {"size": (1280, 720), "images": [1, 16], "grid": (52, 92)},
    }
    device = torch.device("cuda", gpu)
    # CUDA events and the caching allocator act on the current device.
    torch.cuda.set_device(device)
    return "qwen2.5-vl-7b", config, (pre["min_pixels"], pre["max_pixels"]), device, shapes


class Timer:
    """Median seconds of `iters` calls of `run` after `warmup` calls: CUDA events on a GPU (the
    time the GPU stream takes, host launch gaps included), the wall clock on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def median(self, run, iters, warmup, after=None):
        for _ in range(warmup):
            run()
            if after:
                after()
        self.sync()
        times = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            else:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            # Outside the timed span: restores the state the next pass starts from.
            if after:
                after()
        return statistics.median(times)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def build(config_dict, impl, device):
    """The model on `device` in bfloat16 with random weights, built there (no copy of the
    weights through host memory)."""
    config = Qwen2_5_VLConfig.from_dict(json.loads(json.dumps(config_dict)))
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation=impl
        )
    return model.eval()


def cache_kwarg(model):
    """The forward's name for the KV cache: `cache` from transformers 5.2x (where
    `past_key_values` is its deprecated alias), `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def random_cache(model, batch, context, device):
    """A DynamicCache holding `context` positions per sequence in every decoder layer (random
    keys and values: their values do not change the time)."""
    t = model.config.text_config
    head_dim = t.hidden_size // t.num_attention_heads
    shape = (batch, t.num_key_value_heads, context, head_dim)
    data = [
        (torch.randn(shape, dtype=torch.bfloat16, device=device), torch.randn(shape, dtype=torch.bfloat16, device=device))
        for _ in range(t.num_hidden_layers)
    ]
    return DynamicCache(data, config=model.config)


def points(shapes):
    """(phase, shape label, the point's sizes) in the bench's order; the labels are the words of
    exec/src/measure/bench_qwen.rs's rows, by which `--against` joins them."""
    out = [("decode", f"batch {b}, context {c}", (b, c)) for b, c in shapes["decode"]]
    out += [("prefill", f"{s} × {t} tokens", (s, t)) for s, t in shapes["prefill"]]
    width, height = shapes["encode"]["size"]
    out += [("encode", f"{n} images of {width} × {height}", n) for n in shapes["encode"]["images"]]
    return out


def image_grid(model, shapes, pixels):
    """(patch rows, patch columns, values per patch) of the encode's images, through
    transformers' own smart_resize."""
    v = model.config.vision_config
    width, height = shapes["encode"]["size"]
    min_pixels, max_pixels = pixels
    factor = v.patch_size * v.spatial_merge_size
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
    rows, cols = h // v.patch_size, w // v.patch_size
    log(f"encode: {width} × {height} → {w} × {h}, {rows} × {cols} patches of {patch_dim} values")
    # The grid our bench encodes (Qwen25VlConfig::grid, hand-checked in its tests).
    if (rows, cols) != shapes["encode"]["grid"]:
        sys.exit(f"smart_resize gave {rows} × {cols} patches for {width} × {height}, the bench encodes {shapes['encode']['grid']}")
    return rows, cols, patch_dim


def time_point(model, phase, size, grid, device, timer, iters, pass_iters):
    """(median seconds, iterations) of one point; its inputs are made here and dropped after."""
    vocab = model.config.text_config.vocab_size
    kw = cache_kwarg(model)
    if phase == "decode":
        batch, context = size
        cache = random_cache(model, batch, context, device)
        tokens = torch.randint(0, vocab, (batch, 1), device=device)
        positions = torch.full((batch, 1), context, dtype=torch.long, device=device)

        def step():
            out = model(input_ids=tokens, position_ids=positions, use_cache=True, logits_to_keep=1, **{kw: cache})
            out.logits[:, -1].argmax(-1)

        t = timer.median(step, iters, warmup=3, after=lambda: cache.crop(-1))
        # Every timed step saw exactly `context` cached positions.
        assert cache.get_seq_length() == context, (cache.get_seq_length(), context)
        return t, iters
    if phase == "prefill":
        seqs, tokens = size
        ids = torch.randint(0, vocab, (seqs, tokens), device=device)

        def run():
            cache = DynamicCache(config=model.config)
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kw: cache})
            out.logits[:, -1].argmax(-1)

        return timer.median(run, pass_iters, warmup=1), pass_iters
    assert phase == "encode", phase
    rows, cols, patch_dim = grid
    pixel_values = torch.randn(size * rows * cols, patch_dim, dtype=torch.bfloat16, device=device)
    grid_thw = torch.tensor([[1, rows, cols]] * size, device=device)
    return timer.median(lambda: model.model.visual(pixel_values, grid_thw=grid_thw), pass_iters, warmup=1), pass_iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write torch.json into")
    ap.add_argument("--iters", type=int, default=20, help="timed decode steps per point")
    ap.add_argument("--pass-iters", type=int, default=5, help="timed prefill and encode passes per point")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA device index (as our bench's --gpu)")
    ap.add_argument("--tiny", action="store_true", help="the tiny config on the CPU, small shapes")
    a = ap.parse_args()
    if a.iters < 1 or a.pass_iters < 1:
        ap.error(f"--iters {a.iters} and --pass-iters {a.pass_iters} must each be at least 1")

    name, config, pixels, device, shapes = setup(a.tiny, a.gpu)
    timer = Timer(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.manual_seed(0)
    rows = []
    for impl in IMPLEMENTATIONS:
        log(f"{impl}: building {name} on {device_name}")
        try:
            model = build(config, impl, device)
        except (ValueError, ImportError) as e:
            # An implementation this transformers (or machine) does not offer: every point of
            # it is recorded as failed, with the reason.
            log(f"{impl}: cannot build: {e}")
            for phase, label, _ in points(shapes):
                rows.append({"phase": phase, "shape": label, "implementation": impl, "error": f"{type(e).__name__}: {e}"})
            continue
        grid = image_grid(model, shapes, pixels)
        with torch.inference_mode():
            for phase, label, size in points(shapes):
                row = {"phase": phase, "shape": label, "implementation": impl}
                try:
                    seconds, iters = time_point(model, phase, size, grid, device, timer, a.iters, a.pass_iters)
                    row.update(seconds=seconds, iterations=iters)
                    log(f"{impl}: {phase} {label}: {seconds * 1e3:.3f} ms (median of {iters})")
                except torch.cuda.OutOfMemoryError as e:
                    row["error"] = f"OutOfMemoryError: {str(e).splitlines()[0]}"
                    log(f"{impl}: {phase} {label}: {row['error']}")
                rows.append(row)
                # The point's inputs and activations are gone before the next point starts.
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        # Free this model before the next one is built: two 7B models and their activations
        # need not fit together.
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    record = {
        "what": "transformers Qwen2_5_VLForConditionalGeneration forward, random weights, bfloat16 "
        "(exec/scripts/torch-qwen2.5-vl-forward.py)",
        "model": name,
        "layers": config.get("num_hidden_layers"),
        "device": device_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "points": rows,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "torch.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
