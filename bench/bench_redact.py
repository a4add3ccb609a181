"""The redactor on a run's stored output: milliseconds per 64 KiB, by number of secrets.

    python bench/bench_redact.py            # 1, 20 and 100 secrets, best of 20
    python bench/bench_redact.py --quick    # 1 and 20 secrets, best of 3

Every run's output and error passes the redactor once before it is stored, so its cost is paid
per run. Each row redacts three 64 KiB texts that hold the secrets nowhere (the common case):
a build log, one long line of base64 (the worst case for the wrapped-base64 search and the
base64 cores), and a log cut by the output cap (the mark, then a wrapped base64 block). One
secret is an OpenSSH private key (the longest value a vault usually holds).
Target: under 20 ms per 64 KiB with 20 secrets; exit 1 if missed (not with --quick).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reconciler.core.output import MARK  # noqa: E402
from reconciler.core.redact import Redactor  # noqa: E402

SIZE = 64 * 1024
TARGET_MS = 20.0


def secrets(count: int) -> list[str]:
    key = base64.b64encode(os.urandom(2600)).decode()
    pem = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + "\n".join(key[i : i + 70] for i in range(0, len(key), 70))
        + "\n-----END OPENSSH PRIVATE KEY-----"
    )
    return [pem] + [f"s3cret-{n}-{os.urandom(12).hex()}" for n in range(count - 1)]


def texts() -> dict[str, str]:
    log = "".join(
        f"2026-12-06T11:{n % 60:02d}:00Z step {n}: compiling module_{n}.c ok\n"
        for n in range(SIZE // 50)
    )[:SIZE]
    blob = base64.b64encode(os.urandom(SIZE * 3 // 4)).decode()[:SIZE]
    wrapped = "\n".join(blob[i : i + 76] for i in range(0, len(blob), 76))
    return {"log": log, "base64 line": blob, "cut, wrapped": MARK.format(123456) + wrapped[:SIZE]}


def best_ms(redactor: Redactor, text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        redactor(text)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    counts, repeats = ((1, 20), 3) if args.quick else ((1, 20, 100), 20)
    samples = texts()
    print(f"{'secrets':>7}  " + "  ".join(f"{name:>14}" for name in samples) + "   (ms per 64 KiB)")
    worst_at_20 = 0.0
    for count in counts:
        redactor = Redactor(secrets(count))
        row = [best_ms(redactor, text, repeats) for text in samples.values()]
        if count == 20:
            worst_at_20 = max(row)
        print(f"{count:>7}  " + "  ".join(f"{ms:>14.2f}" for ms in row))
    print(f"worst with 20 secrets: {worst_at_20:.2f} ms (target < {TARGET_MS:g} ms)")
    return 0 if args.quick or worst_at_20 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
