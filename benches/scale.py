#!/usr/bin/env python3
"""Whole-process figures for the performance section of README.md; not part of `cargo test`.

    python3 benches/scale.py [--sizes 1000,10000,100000,1000000] [--runs 5] [--large-runs 1]
                             [--bin target/release/wecom-allowlist] [--no-build] [--no-nft-load]

For each size N, gen_inputs.py (same folder) writes N distinct IPv4 addresses (80% random hosts,
20% in adjacent runs; TCP 80,443) as a response body and as plain text. The script then times,
as separate processes, each run on its own:
  - `build` of every target from the body into a fresh folder (release binary, --allow-nonpublic:
    the random addresses fall in private ranges too);
  - `iprange` aggregating the same addresses (the reference: Debian package iprange);
and once per size, outside the timing, loads the built nftables.nft with `nft -f` in a throw-away
network namespace: inside a user namespace too (`unshare -rn`), and when that fails, as root
(`unshare -n`). nft sends a file's whole transaction in one netlink message, and only root of the
initial namespace may enlarge the socket buffer for it (SO_SNDBUFFORCE): in a user namespace the
transaction must fit the default buffer (net.core.wmem_default, 208 KiB), however it is split.
It also times `render nftables` of tests/fixtures/seed.json (the seed example), `targets` (the
start-up cost) and /bin/true (what starting any process costs on this machine): median wall
time, median CPU time (user + system, from wait4) and median page faults over --seed-runs runs,
the three taking turns, after the large sizes' files are deleted and synced, and each wall time
against /bin/true's.
On a busy machine the wall time also counts waiting for a core; the CPU time doesn't.
Every run is of an installed copy of the binary (see install_copy), not of the file the linker
wrote. Each time is the median wall time over the runs, each process spawned directly; the peak RSS
comes from one more run under /usr/bin/time. Sizes of a million or more take --large-runs runs.
`--sizes ""` gives the seed figures alone.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wall(argv):
    """Wall seconds of one process, spawned directly (no wrapper whose own start-up would
    count); exits on a non-zero status."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        res = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n"
                         f"{res.stderr.decode(errors='replace')}")
    return took


def startup(runs, argvs):
    """For each of `argvs`: median wall ms, CPU ms (user + system) and minor page faults of
    `runs` direct runs, each measured by wait4 on the process itself; exits on a non-zero
    status. The commands take turns, so that a change in the machine's pace over the runs
    weighs on each alike."""
    walls, cpus, faults = ([[] for _ in argvs] for _ in range(3))
    with open(os.devnull, "wb") as null:
        for _ in range(runs):
            for i, argv in enumerate(argvs):
                start = time.perf_counter()
                pid = os.posix_spawn(argv[0], argv, os.environ,
                                     file_actions=[(os.POSIX_SPAWN_DUP2, null.fileno(), 1)])
                _, status, usage = os.wait4(pid, 0)
                walls[i].append((time.perf_counter() - start) * 1e3)
                if os.waitstatus_to_exitcode(status) != 0:
                    raise SystemExit(f"{' '.join(argv)} exited "
                                     f"{os.waitstatus_to_exitcode(status)}")
                cpus[i].append((usage.ru_utime + usage.ru_stime) * 1e3)
                faults[i].append(usage.ru_minflt)
    return [(statistics.median(w), statistics.median(c), statistics.median(f))
            for w, c, f in zip(walls, cpus, faults)]


def install_copy(binary, folder):
    """A copy of `binary` in `folder`, written 128 KiB at a time as `cp` writes it. The page
    cache keeps a file in pieces as large as the writes that made it, and the linker writes its
    output in small ones: run straight from target/release, the same bytes cost about 30 more
    page faults and about 1 ms more CPU a process on the 2-core machine than a copy does."""
    path = os.path.join(folder, os.path.basename(binary))
    with open(binary, "rb") as src, open(path, "wb") as dst:
        while chunk := src.read(128 * 1024):
            dst.write(chunk)
    shutil.copymode(binary, path)
    return path


def peak_rss(argv):
    """Peak RSS (KiB) of one process, from /usr/bin/time (a small C program), not from this
    Python process's fork, whose pages would count towards the child's peak before it execs."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wall(["/usr/bin/time", "-f", "%M", "-o", rss.name] + argv)
        return int(rss.read().split()[-1])


def repeat(runs, make_argv, before=None):
    """Median wall time over `runs` direct runs, and the peak RSS of one more run."""
    walls = []
    for _ in range(runs):
        if before:
            before()
        walls.append(wall(make_argv()))
    if before:
        before()
    return statistics.median(walls), peak_rss(make_argv())


def nft_load(path):
    """Whether `nft -f` takes the file in a throw-away network namespace: first inside a user
    namespace too (`unshare -rn`), then, if that fails, as root (`unshare -n`)."""
    verdicts = []
    for flags in ("-rn", "-n"):
        start = time.perf_counter()
        res = subprocess.run(["unshare", flags, "nft", "-f", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
        if res.returncode == 0:
            verdicts.append(f"`unshare {flags}`: loads in {fmt_time(took)}")
            break
        lines = res.stderr.decode(errors="replace").strip().splitlines()
        why = lines[0].replace("netlink: Error: ", "") if lines else f"exit {res.returncode}"
        verdicts.append(f"`unshare {flags}`: {why}")
    return "; ".join(verdicts)


def fmt_time(s):
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} x {model}{mem}, Linux {platform.release()}, "
            f"load average {load:.1f} at start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--large-runs", type=int, default=1)
    ap.add_argument("--seed-runs", type=int, default=50)
    ap.add_argument("--bin", default=None)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-nft-load", action="store_true")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    target_dir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = args.bin or os.path.join(target_dir, "release", "wecom-allowlist")
    iprange = shutil.which("iprange")
    if not iprange:
        raise SystemExit("iprange is not installed (Debian package iprange)")
    print(f"machine: {machine()}", flush=True)

    work = tempfile.mkdtemp(prefix="wecom-bench-")
    try:
        binary = install_copy(binary, work)
        sizes = [int(s) for s in args.sizes.split(",") if s]
        subprocess.run([sys.executable, os.path.join(HERE, "gen_inputs.py"), work]
                       + [str(n) for n in sizes], check=True, stdout=subprocess.DEVNULL)
        rows = []
        out = os.path.join(work, "out")
        for n in sizes:
            runs = args.large_runs if n >= 1_000_000 else args.runs
            body = os.path.join(work, f"ips_{n}.json")
            text = os.path.join(work, f"ips_{n}.txt")
            build = repeat(runs,
                           lambda: [binary, "build", "-q", "--allow-nonpublic", "--input", body,
                                    "--out-dir", out],
                           before=lambda: shutil.rmtree(out, ignore_errors=True))
            ref = repeat(runs, lambda: [iprange, text])
            loads = "not tried"
            if not args.no_nft_load:
                loads = nft_load(os.path.join(out, "nftables.nft"))
            rows.append((n, runs, build, ref, loads))
            print(f"{n}: build {fmt_time(build[0])} {build[1] // 1024} MiB, iprange "
                  f"{fmt_time(ref[0])} {ref[1] // 1024} MiB, nft -f: {loads}", flush=True)
        # The large builds' files are deleted and on disk first: their writeback and freeing
        # would otherwise run beside the first small processes.
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        seed = os.path.join(ROOT, "tests", "fixtures", "seed.json")
        names, argvs = zip(*(
            ("`render nftables --input tests/fixtures/seed.json`",
             [binary, "render", "nftables", "--input", seed]),
            ("`targets`", [binary, "targets"]),
            ("`/bin/true` (any process)", ["/bin/true"]),
        ))
        starts = list(zip(names, startup(args.seed_runs, argvs)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| entries | runs | `build` (every target) | peak RSS | iprange | iprange RSS | build / iprange | `nft -f nftables.nft` |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, runs, (bt, brss), (it, irss), loads in rows:
        print(f"| {n:,} | {runs} | {fmt_time(bt)} | {brss / 1024:.0f} MiB | {fmt_time(it)} | "
              f"{irss / 1024:.1f} MiB | {bt / it:.0f}x | {loads} |")
    print()
    print(f"seed example and start-up, median of {args.seed_runs} runs:")
    print()
    # The machine's pace changes from minute to minute; a process's wall time against
    # /bin/true's in the same turns changes much less.
    true_ms = starts[-1][1][0]
    print("| process | wall | wall / `/bin/true` | CPU (user + system) | page faults |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall_ms, cpu_ms, faults) in starts:
        print(f"| {name} | {wall_ms:.2f} ms | {wall_ms / true_ms:.1f}x | {cpu_ms:.2f} ms | "
              f"{faults:.0f} |")


if __name__ == "__main__":
    main()
