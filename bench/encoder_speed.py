"""Forward-pass time of the pSp / e4e encoders and the IR-SE50 identity net (random weights, float32).

    python bench/encoder_speed.py [--batch 1] [--repeats 5] [--threads N]

Prints the first call (includes oneDNN's one-off set-up) and the fastest of the following calls (robust to a
busy machine), for the default (contiguous) and channels_last memory formats.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # script entry point only

from inversion.encoders import E4EEncoder, PSPEncoder  # noqa: E402
from inversion.identity import IRSE50  # noqa: E402


def timed(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for name, model, size in (("pSp", PSPEncoder(), 256), ("e4e", E4EEncoder(), 256), ("IR-SE50", IRSE50(), 112)):
        model.eval()
        x = torch.rand(args.batch, 3, size, size) * 2 - 1
        first, median = timed(model, x, args.repeats)
        model_cl = model.to(memory_format=torch.channels_last)
        first_cl, median_cl = timed(model_cl, x.contiguous(memory_format=torch.channels_last), args.repeats)
        print(f"{name:8s} contiguous: first {first:.2f} s, then {median:.3f} s | "
              f"channels_last: first {first_cl:.2f} s, then {median_cl:.3f} s")


if __name__ == "__main__":
    main()
