"""p99 of /healthz (OTLP receiver port) and of a proxied chat call while 4 concurrent 1 GiB gzip bombs are sent.

A fresh ``genops serve`` (store inline) against ``genops fake-upstream``; 15 s idle, then 15 s
with 4 loops (in another process) posting a gzip of 1 GiB of zeros (~1 MB) to ``/v1/traces``.
Prints (phase, probe) -> (samples, median ms, p99 ms, max ms) and the bombs' status codes.

usage: .venv/bin/python bench/otlp_bomb_p99.py OUT_DIR [PYTHONPATH]
       (PYTHONPATH: run another copy of genops, e.g. an older commit, for comparison)
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bomb(size: int = 1 << 30) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = bytes(1 << 20)
    return b"".join([c.compress(piece) for _ in range(size >> 20)] + [c.flush()])


def wait(url: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    if len(sys.argv) > 2:
        env["PYTHONPATH"] = sys.argv[2]
    up_port, port, otlp_port = free_port(), free_port(), free_port()
    up = subprocess.Popen([PY, "-m", "genops", "fake-upstream", "--port", str(up_port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    penv = {**env, "GENOPS_DATA_DIR": str(root / "data"), "GENOPS_PORT": str(port), "GENOPS_OTLP_PORT": str(otlp_port),
            "GENOPS_OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}", "GENOPS_LOG_LEVEL": "warning",
            "GENOPS_STORE_PROCESS": "inline"}
    proxy = subprocess.Popen([PY, "-m", "genops", "serve"], env=penv, stdout=open(root / "serve.log", "wb"),
                             stderr=subprocess.STDOUT, cwd=root)
    try:
        wait(f"http://127.0.0.1:{port}/readyz")
        wait(f"http://127.0.0.1:{otlp_port}/healthz")
        payload = bomb()
        chat_body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

        def chat() -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=chat_body, method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer sk-x"})
            urllib.request.urlopen(req, timeout=120).read()

        def health() -> None:
            urllib.request.urlopen(f"http://127.0.0.1:{otlp_port}/healthz", timeout=120).read()

        def send_bomb(codes: list[int]) -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{otlp_port}/v1/traces", data=payload, method="POST",
                                         headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
            try:
                urllib.request.urlopen(req, timeout=300).read()
                codes.append(200)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)

        for _ in range(20):  # warm up
            chat()
            health()
        results = {}
        for phase in ("idle", "bombs"):
            codes: list[int] = []
            if phase == "bombs":  # from another process, so the probes here do not share its GIL
                (root / "bomb.bin").write_bytes(payload)
                bomber = subprocess.Popen([PY, __file__, "--bombs", str(otlp_port), str(root / "bomb.bin"),
                                           str(root / "codes.txt")])
                time.sleep(1)
            samples: dict[str, list[float]] = {"healthz": [], "chat": []}

            def probe(into: list[float], fn) -> None:
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    into.append(timed(fn))
                    time.sleep(0.02)

            probes = [threading.Thread(target=probe, args=(samples[n], f)) for n, f in (("healthz", health), ("chat", chat))]
            for p in probes:
                p.start()
            for p in probes:
                p.join()
            if phase == "bombs":
                bomber.terminate()
                bomber.wait(60)
                codes = [int(c) for c in (root / "codes.txt").read_text().split()]
            for name, xs in samples.items():
                xs.sort()
                results[(phase, name)] = (len(xs), statistics.median(xs) * 1000, xs[int(len(xs) * 0.99) - 1] * 1000,
                                          xs[-1] * 1000)
            if phase == "bombs":
                results[("bombs", "codes")] = (len(codes), sorted(set(codes)))
        for key, value in results.items():
            print(key, value, flush=True)
    finally:
        proxy.terminate()
        up.terminate()
        proxy.wait(30)
        up.wait(10)


def bombs(port: str, path: str, out: str) -> None:
    """4 threads sending the bomb in a loop; each answer's status appended to ``out``."""
    payload = Path(path).read_bytes()
    sink = open(out, "a")

    def loop() -> None:
        while True:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=payload, method="POST",
                                         headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
            try:
                urllib.request.urlopen(req, timeout=300).read()
                code = 200
            except urllib.error.HTTPError as exc:
                code = exc.code
            sink.write(f"{code}\n")
            sink.flush()

    for _ in range(4):
        threading.Thread(target=loop, daemon=True).start()
    time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "--bombs":
        bombs(*sys.argv[2:5])
    else:
        main()
