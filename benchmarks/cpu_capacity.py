"""How much CPU this machine gives when every CPU is busy: the same pure-Python loop alone,
then in as many processes at once as there are CPUs; prints the combined rate as a multiple
of one process alone (N on a machine with N independent cores; less where virtual CPUs
share a core or a host).

    python benchmarks/cpu_capacity.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_SPIN = ("import time\nt = time.perf_counter() + {s}\nn = 0\n"
         "while time.perf_counter() < t: n += 1\nprint(n)")


def spins(processes: int, seconds: float) -> list[int]:
    code = _SPIN.format(s=seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    return [int(p.communicate(timeout=seconds + 60)[0]) for p in procs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    ns = p.parse_args(argv)
    cpus = os.cpu_count() or 1
    (alone,) = spins(1, ns.seconds)
    together = spins(cpus, ns.seconds)
    print(f"{cpus} CPUs: one process alone {alone:,} loops; {cpus} at once "
          f"{', '.join(f'{n:,}' for n in together)}; combined = {sum(together) / alone:.2f}x "
          "one alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
