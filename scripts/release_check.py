"""Build the release and prove a user can install and start it (`make release-check`, run by CI).

1. `python -m build`: a wheel and an sdist in a temporary directory;
2. the wheel carries what the installed package needs at run time (migrations, the examples the
   demo publishes, the console's templates and static files), and the sdist the LICENSE;
3. a fresh virtualenv, `pip install <wheel>` (plain pip: dependencies from the package index);
4. in an empty directory: `grantflow demo`, then `grantflow serve` answering /healthz and the
   OpenAPI document.

This is a CI step rather than a test: installing the wheel's dependencies reaches the package
index, and tests talk to 127.0.0.1 only. Prints a JSON summary; exits 1 on the first failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "grantflow"


def _source_files() -> list[str]:
    """Every file of the source package (modules and data: migrations, examples, templates,
    static assets), as the wheel names it."""
    return sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(
            f"release check failed: {' '.join(map(str, args))} exited {result.returncode}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_contents(wheel: Path, sdist: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in _source_files() if name not in names]
    if missing:
        raise SystemExit(
            f"release check failed: the wheel lacks {', '.join(missing)} "
            "(add them to [tool.setuptools.package-data] in pyproject.toml)"
        )
    with tarfile.open(sdist) as tar:
        if not any(n.endswith("/LICENSE") for n in tar.getnames()):
            raise SystemExit("release check failed: the sdist lacks LICENSE")


def _serve(grantflow: Path, env: dict[str, str], cwd: Path) -> dict[str, object]:
    port = _free_port()
    process = subprocess.Popen(
        [grantflow, "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"release check failed: serve exited\n{process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("release check failed: /healthz never answered")
            time.sleep(0.2)
        spec = httpx.get(f"{url}/api/v1/openapi.json", timeout=10).json()
        return {"healthz": 200, "api_version": spec["info"]["version"]}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="grantflow-release-") as tmp:
        work = Path(tmp)
        dist = work / "dist"
        _run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
        wheel = next(dist.glob("grantflow-*.whl"))
        sdist = next(dist.glob("grantflow-*.tar.gz"))
        _check_contents(wheel, sdist)
        venv = work / "venv"
        _run(sys.executable, "-m", "venv", venv)
        _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
        grantflow = venv / "bin" / "grantflow"
        home = work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
        env |= {"GRANTFLOW_DATABASE_URL": f"sqlite:///{home}/grantflow.db", "HOME": str(home)}
        version = _run(
            venv / "bin" / "python",
            "-c",
            "import grantflow; print(grantflow.__version__)",
            cwd=home,
        ).stdout.strip()
        _run(grantflow, "demo", env=env, cwd=home)
        served = _serve(grantflow, env, home)
        print(
            json.dumps(
                {
                    "wheel": wheel.name,
                    "sdist": sdist.name,
                    "wheel_kb": round(wheel.stat().st_size / 1024),
                    "version": version,
                    **served,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
