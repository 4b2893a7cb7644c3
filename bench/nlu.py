"""How fast free text is understood: start-up, per-message latency and memory, per model.

    .venv/bin/python bench/nlu.py [--models use,e5,ngram] [--rounds 3]

Each model runs in a fresh process, twice: with an empty embedding cache (the first start
after the flows changed) and with the cache the first run wrote (every later start).
Start-up is from before `import bot.nlu.classifier` to a ready understander; latency is one
`understand(...)` call per message of tests/nlu/dev.yaml in its question, as the engine makes
it; memory is the process's peak RSS and what loading the model added to it. Prints figures;
asserts nothing. A model whose package is missing is reported as falling back to n-grams.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DEV: Final = ROOT / "tests" / "nlu" / "dev.yaml"


def child(model: str, cache_dir: str, rounds: int) -> dict[str, Any]:
    """Runs inside the fresh process: build, then time every dev message `rounds` times."""
    rss_before = _rss_mb()
    started = time.perf_counter()
    from bot.flows.loader import load_flows
    from bot.nlu.classifier import build_understander

    flows = load_flows(ROOT / "flows")
    understand = build_understander(flows.values(), model=model, cache_dir=Path(cache_dir))
    startup = time.perf_counter() - started
    rss_loaded = _rss_mb()

    from bot.nlu.eval import load_cases

    flow_id, cases = load_cases(DEV)
    flow = flows[flow_id]
    scores = understand.classifier.scores
    asked: list[int] = []

    def counted(texts: Any, keys: Any) -> Any:
        asked.append(len(texts))
        return scores(texts, keys)

    understand.classifier.scores = counted  # type: ignore[method-assign]
    every, encoded = [], []
    for _ in range(rounds):
        for case in cases:
            ask = flow.spec.states[case.state].ask
            assert ask is not None
            asked.clear()
            t = time.perf_counter()
            understand(case.text, choices=ask.choices, commands=flow.spec.commands, multi=ask.multi)
            elapsed = (time.perf_counter() - t) * 1000
            every.append(elapsed)
            if asked:  # the model ran: keywords did not settle it
                encoded.append(elapsed)
    return {
        "classifier": understand.classifier.name,
        "startup_s": startup,
        "all": _percentiles(every),
        "encoded": _percentiles(encoded),
        "encoded_share": len(encoded) / len(every),
        "rss_model_mb": rss_loaded - rss_before,
        "rss_peak_mb": _rss_mb(),
    }


def _percentiles(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings) or [0.0]
    return {
        "p50": statistics.median(timings),
        "p99": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        "max": timings[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="use,e5,ngram")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.rounds)))
        return

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"messages: tests/nlu/dev.yaml x {args.rounds} rounds")
    print("latency in ms: every message / only messages the model had to read (share)\n")
    print(
        f"{'model':<7}{'classifier':<11}{'start cold':>11}{'start warm':>11}"
        f"{'all p50':>9}{'p99':>7}{'model p50':>11}{'p99':>7}{'max':>7}{'share':>7}"
        f"{'model MB':>10}{'peak MB':>9}"
    )
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as cache:
            cold = _spawn(model, cache, 1)
            warm = _spawn(model, cache, args.rounds)
        every, encoded = warm["all"], warm["encoded"]
        print(
            f"{model:<7}{warm['classifier']:<11}{cold['startup_s']:>10.2f}s"
            f"{warm['startup_s']:>10.2f}s{every['p50']:>9.2f}{every['p99']:>7.1f}"
            f"{encoded['p50']:>11.2f}{encoded['p99']:>7.1f}{encoded['max']:>7.1f}"
            f"{warm['encoded_share']:>7.0%}{warm['rss_model_mb']:>10.0f}{warm['rss_peak_mb']:>9.0f}"
        )


def _spawn(model: str, cache: str, rounds: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", model, cache, "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS): the peak so far, which only grows.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


if __name__ == "__main__":
    main()
