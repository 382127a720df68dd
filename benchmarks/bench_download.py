"""Downloading a 1 GB output through /view: ``hook.download`` vs ``curl`` on the same URL, alternating.

Targets: RSS growth of this process during ``hook.download`` ≤ 50 MB; speed ≥ 0.7 times curl's.
The file (random bytes, so nothing compresses) is written into the stand-in's output folder, or into
``COMFYUI_OUTPUT_DIR`` when measuring a real server at ``COMFYUI_URL`` (its ``output/`` folder on this
machine; without it the real server is skipped). Downloads go to /dev/shm (tmpfs) so that disk
write-back does not blur the comparison (``--on-disk`` for /tmp). Every file written is deleted.

    .venv/bin/python benchmarks/bench_download.py [--size-mb 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from common import (
    alternate,
    header,
    quiet_airflow_home,
    quiet_logs,
    real_url,
    rss_bytes,
    scratch_dir,
    server_under_test,
    verdict,
)

quiet_airflow_home()

from airflow_comfy.hooks.comfyui import ComfyUIHook  # noqa: E402
from airflow_comfy.hooks.connection import ComfyUISettings  # noqa: E402
from airflow_comfy.protocol.outputs import OutputRef  # noqa: E402

quiet_logs()
MB = 2**20
NAME = "airflow_comfy_bench_download.bin"


def write_file(path: Path, size: int) -> None:
    chunk = os.urandom(16 * MB)
    with path.open("wb") as handle:
        for offset in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - offset)])


class PeakRss:
    """Samples this process's RSS every 5 ms in a thread while active (joined on exit)."""

    def __init__(self) -> None:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (default 3)")
    parser.add_argument("--on-disk", action="store_true", help="download to /tmp, not /dev/shm (noisier)")
    args = parser.parse_args()
    size = args.size_mb * MB
    with (
        server_under_test() as (url, standin),
        scratch_dir("comfy-bench-download-", memory=not args.on_disk) as dest,
    ):
        output = standin.output_dir if standin else Path(os.environ.get("COMFYUI_OUTPUT_DIR", ""))
        if not standin and not os.environ.get("COMFYUI_OUTPUT_DIR"):
            print("set COMFYUI_OUTPUT_DIR to the real server's output folder to measure it; skipped")
            return
        header(f"download of {args.size_mb} MiB through /view", url)
        source = output / NAME
        hook = ComfyUIHook(settings=ComfyUISettings(conn_id="bench", base_url=url))
        growth: list[float] = []
        try:
            write_file(source, size)
            ref = OutputRef(node_id="1", kind="images", filename=NAME, subfolder="", type="output")
            view_url = hook.view_url(ref)

            def by_curl(_i: int) -> float:
                target = dest / "curl.bin"
                started = time.perf_counter()
                subprocess.run(["curl", "-sS", "-f", "-o", str(target), view_url], check=True, timeout=600)
                elapsed = time.perf_counter() - started
                assert target.stat().st_size == size
                target.unlink()
                return elapsed

            def by_hook(_i: int) -> float:
                with PeakRss() as rss:
                    started = time.perf_counter()
                    path = hook.download(ref, dest / "hook")
                    elapsed = time.perf_counter() - started
                growth.append((rss.peak - rss.base) / MB)
                assert path.stat().st_size == size
                path.unlink()
                return elapsed

            hook_s, curl_s = alternate([("hook.download", by_hook), ("curl", by_curl)], args.runs, warmup=1)
        finally:
            hook.close()
            source.unlink(missing_ok=True)
            shutil.rmtree(dest / "hook", ignore_errors=True)
        for samples in (hook_s, curl_s):
            print(samples.line(unit=1.0, suffix="s ") + f"   = {size / MB / samples.median:.0f} MiB/s")
        speed = curl_s.median / hook_s.median
        worst = max(growth)
        print(f"speed hook/curl (median): {speed:.2f}  target ≥ 0.7  {verdict(speed >= 0.7)}")
        print(f"RSS growth during hook.download: max {worst:.1f} MB  target ≤ 50 MB  {verdict(worst <= 50)}")
        if real_url() is None:
            print(
                "(the stand-in serves /view with aiohttp's FileResponse, sendfile: the client is the limit)"
            )


if __name__ == "__main__":
    main()
